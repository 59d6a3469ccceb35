"""Fixed inputs for the guided setup's tests: what was "found", answers, and synthetic plans.

Nothing here depends on the real stage modules: plans are small async functions, one of which
fails once so Retry can be exercised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from installer import discovery
from installer.answers import Answers
from installer.engine import RunOptions, Stage, StageContext, StageError
from installer.events import Status
from screens.app import InstallerApp

HOME = Path("/home/ada")
KEY = discovery.SshKey(HOME / ".ssh" / "id_ed25519", "ssh-ed25519", "SHA256:q2bU1S3ZrZ8pPp5tNq0yJt0fYV3k6c8Yv1mW2xL9aBc", "ada@laptop")

FOUND = discovery.Found(
    oci_config=HOME / ".oci" / "config",
    oci_profiles=(
        discovery.OciProfile("DEFAULT", "eu-frankfurt-1", "ocid1.tenancy.oc1..aaaa", "~/.oci/oci_api_key.pem", True, HOME / ".oci" / "config"),
    ),
    ssh_keys=(KEY,),
    previous_runs=(
        discovery.PreviousRun("old.example.net", Path("/state/old.example.net"), 9, ("synapse.start",)),
    ),
)
NOTHING_FOUND = discovery.Found(oci_config=HOME / ".oci" / "config")

VALID = (
    Answers()
    .replace("domain", server_name="example.org", matrix_host="matrix.example.org", acme_email="admin@example.org")
    .replace("cloud", provider="oci")
)


class Plan:
    """A synthetic plan: (name, skippable) stages; `fail_once` names stages that fail on their first try."""

    def __init__(self, names: Sequence[str] = ("local.ssh_key", "cloud.instance", "host.caddy", "synapse.start", "federation.check"),
                 *, fail_once: Sequence[str] = (), lines: int = 5, federation: dict | None = None,
                 shown_once: Sequence[tuple[str, str]] = ()) -> None:
        self.names = list(names)
        self.fail_once = set(fail_once)
        self.lines = lines
        self.federation = federation
        self.shown_once = list(shown_once)
        self.attempts: dict[str, int] = {}

    def _body(self, name: str):
        async def run(ctx: StageContext) -> Status:
            self.attempts[name] = self.attempts.get(name, 0) + 1
            ctx.log(f"checking {name}")
            ctx.log(f"$ sudo systemctl status {name}", "command")  # as a remote logs a command
            for i in range(self.lines):
                ctx.log(f"{name}: output line {i}", "out")
            if name in self.fail_once and self.attempts[name] == 1:
                ctx.log("E: Unable to locate package caddy", "err")
                raise StageError(f"{name}: apt-get install caddy exited with status 100", "check the apt sources, then Retry")
            if name == "federation.check" and self.federation is not None:
                ctx.session.federation = self.federation
            if name == "synapse.start":
                for label, value in self.shown_once:
                    ctx.reveal(label, value)
            return Status.DONE

        return run

    def __call__(self, mode: str, answers: Answers, facts: dict | None = None) -> list[Stage]:
        stages = []
        previous: tuple[str, ...] = ()
        for name in self.names:
            stages.append(Stage(name, f"Stage {name}", self._body(name), previous, skippable=name.startswith("dns")))
            previous = (name,)
        return stages


FEDERATION = {
    "server_name": "example.org",
    "ok": False,
    "checks": [
        {"name": "dns", "ok": True, "detail": "matrix.example.org A 203.0.113.10", "fix": None},
        {"name": "well-known", "ok": True, "detail": "m.server = matrix.example.org:443", "fix": None},
        {"name": "tls", "ok": True, "detail": "certificate valid for matrix.example.org", "fix": None},
        {"name": "server-keys", "ok": False, "detail": "no signature by ed25519:a_abcd",
         "fix": "restart Synapse (docker compose restart synapse) and rerun matrix-installer --check example.org"},
        {"name": "federation-version", "ok": True, "detail": "Synapse 1.120.0", "fix": None},
        {"name": "client-well-known", "ok": True, "detail": "m.homeserver = https://matrix.example.org", "fix": None},
        {"name": "client-versions", "ok": True, "detail": "v1.1 ... v1.12", "fix": None},
        {"name": "registration", "ok": True, "detail": "registration is closed", "fix": None},
    ],
}


def make_app(answers: Answers | None = VALID, *, plan: Plan | None = None, dry_run: bool = True, mode: str = "install",
             found: discovery.Found = FOUND, state_dir: Path | None = None, answers_path: Path | None = None,
             env_set: bool = False, env: dict[str, str] | None = None, provider_check=None) -> InstallerApp:
    """An app with fixed discovery, a fixed clock and a synthetic plan: deterministic on screen
    (`env_set`: the admin password's variable holds a good password; `env`: these variables instead)."""
    environ = env if env is not None else {"MATRIX_ADMIN_PASSWORD": "correct-horse-battery"} if env_set else {}
    options = RunOptions(mode=mode, dry_run=dry_run, state_dir=state_dir or Path("/state"))
    return InstallerApp(
        answers,
        options,
        found=found,
        plan=plan or Plan(),
        clock=lambda: 0.0,
        home=HOME,
        env=environ.get,
        default_answers_path=answers_path or Path("/work/answers/matrix-answers.toml"),
        provider_check=provider_check or (lambda answers, options: []),
    )
