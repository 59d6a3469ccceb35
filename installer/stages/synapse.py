"""Stages for Synapse in Docker: its configuration, the running container, the admin account.

Layout on the host (as the manual guide has it): /opt/matrix/synapse/docker-compose.yml and
data/ mounted at /data. The config is generated once by the image itself and then edited
(comments kept); the signing key is never regenerated.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _random
import shlex
import time
from dataclasses import dataclass
from datetime import datetime

from installer.engine import StageContext, StageError
from installer.events import Status
from installer.remote import CommandResult, RemoteCommandError

q = shlex.quote

BASE = "/opt/matrix/synapse"
DATA = f"{BASE}/data"
COMPOSE_FILE = f"{BASE}/docker-compose.yml"
CONFIG = f"{DATA}/homeserver.yaml"
CONTAINER = "synapse"
COMPOSE = f"docker compose -f {COMPOSE_FILE}"
SYNAPSE_URL = "http://127.0.0.1:8008"
HEALTH_TIMEOUT = 300.0
SECRET_SETTINGS = ("registration_shared_secret", "macaroon_secret_key", "form_secret")

# What the dry-run pretends the image generated, so the plan can show the edits it would make.
DRY_HOMESERVER = """# Configuration file for Synapse.
server_name: "{server_name}"
pid_file: /data/homeserver.pid
listeners:
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
  args:
    database: /data/homeserver.db
log_config: "/data/{server_name}.log.config"
media_store_path: /data/media_store
report_stats: false
macaroon_secret_key: "DRY-RUN"
form_secret: "DRY-RUN"
signing_key_path: "/data/{server_name}.signing.key"
trusted_key_servers:
  - server_name: "matrix.org"
"""


def generate_command(ctx: StageContext) -> str:
    """The image's own `generate`, as the manual guide runs it."""
    a = ctx.answers
    return (f"docker run --rm -e SYNAPSE_SERVER_NAME={q(a.domain.server_name)} "
            f"-e SYNAPSE_REPORT_STATS={'yes' if a.synapse.report_stats else 'no'} "
            f"-v {q(DATA)}:/data {q(a.synapse.image)} generate")


def register_secrets(ctx: StageContext, text: str) -> None:
    """Every secret in a homeserver.yaml is masked from here on, changed or not."""
    from installer.synapse_config import read_setting

    try:
        for key in SECRET_SETTINGS:
            value = read_setting(text, key)
            if isinstance(value, str):
                ctx.secret(value)
    except Exception:  # an unreadable file is reported by the edit below
        pass


async def configure(ctx: StageContext) -> Status:
    """docker-compose.yml from the template; homeserver.yaml generated once, then edited."""
    from installer.render import render_compose
    from installer.synapse_config import ConfigError, edit_homeserver_config

    a = ctx.answers
    changed = False
    if not await ctx.probe(f"test -d {q(DATA)}", sudo=True):
        await ctx.run(f"install -d -m 0755 {q(BASE)} {q(DATA)}", sudo=True)
        changed = True
    if await ctx.put_file(COMPOSE_FILE, render_compose(a).encode(), mode=0o644, owner="root:root"):
        changed = True

    raw = await ctx.read_file(CONFIG)
    if raw is None:
        if await ctx.probe(f"ls {q(DATA)}/*.signing.key >/dev/null 2>&1", sudo=True):
            ctx.log("a signing key is already in data/: the image's generate keeps it (it is never regenerated)")
        await ctx.run(generate_command(ctx), sudo=True, timeout=900)
        raw = await ctx.read_file(CONFIG)
        if raw is None:
            if not ctx.dry_run:
                raise StageError(f"the image's generate did not write {CONFIG}", "see its output above")
            raw = DRY_HOMESERVER.format(server_name=a.domain.server_name).encode()
        changed = True
    text = raw.decode("utf-8")
    register_secrets(ctx, text)
    try:
        edit = edit_homeserver_config(text, a, new_secret=lambda: ctx.secret(_random.token_urlsafe(36)))
    except ConfigError as exc:
        raise StageError(f"{CONFIG}: {exc}", "fix the file on the host (or move it aside to generate a new one), then rerun") from None
    if edit.changed:
        meta = await ctx.run(f"stat -c '%u:%g %a' {q(CONFIG)}", sudo=True, dry_output="991:991 644")
        owner, mode = meta.stdout.split()
        await ctx.put_file(CONFIG, edit.text.encode(), owner=owner, mode=int(mode, 8), secret=True)
        ctx.log(f"homeserver.yaml: set {', '.join(edit.changed)}")
        changed = True
    else:
        ctx.log("homeserver.yaml already has every setting the answers ask for")
    return Status.DONE if changed else Status.UNCHANGED


# --- the running container ----------------------------------------------------------------------

@dataclass(frozen=True)
class Container:
    id: str
    status: str
    started_at: float
    restarts: int


def _rfc3339(value: str) -> float:
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", value)
    if not m:
        return 0.0
    zone = m.group(3) or "Z"
    stamp = datetime.fromisoformat(m.group(1) + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + float(f"0.{m.group(2)}") if m.group(2) else stamp


async def container(ctx: StageContext, *, log: bool = True) -> Container | None:
    command = f"docker inspect -f '{{{{.Id}}}} {{{{.State.Status}}}} {{{{.State.StartedAt}}}} {{{{.RestartCount}}}}' {CONTAINER}"
    if log:
        result = await ctx.run(command, sudo=True, check=False, dry_output="")
    else:
        result = await ctx.remote.run(command, log=_quiet, sudo=True, check=False, timeout=60)
    words = result.stdout.split()
    if not result.ok or len(words) < 4:
        return None
    return Container(words[0], words[1], _rfc3339(words[2]), int(words[3]))


def _quiet(line: str, kind: str) -> None:
    """Repeated polls: the first is shown; the rest would only fill the log."""


async def wait_healthy(ctx: StageContext, *, timeout: float = HEALTH_TIMEOUT) -> None:
    """Until /health answers OK on the host; the container's logs are shown when it does not."""
    deadline = time.monotonic() + timeout
    first = True
    why = "no answer yet"
    while True:
        state = await container(ctx, log=first)
        if state is not None and state.status in ("exited", "dead"):
            why = f"the container {state.status}"
            break
        command = f"curl -fsS -m 5 {SYNAPSE_URL}/health"
        if first:
            ctx.log(f"$ {command}  (every 2 s until it answers OK, up to {timeout:.0f} s)", "command")
        health = await ctx.remote.run(command, log=_quiet, check=False, timeout=30, dry_output="OK")
        if health.ok and health.stdout.strip() == "OK":
            ctx.progress("Synapse answers /health", 1.0)
            ctx.log("Synapse is healthy")
            return
        why = (health.stderr.strip().splitlines() or ["no answer"])[-1]
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ctx.progress(f"waiting for Synapse to answer /health: {left:.0f} s left", 1 - left / timeout)
        first = False
        await ctx.sleep(2)
    await ctx.run(f"{COMPOSE} logs --no-color --tail 80 {CONTAINER}", sudo=True, check=False)
    raise StageError(f"Synapse did not become healthy ({why}); its last log lines are above",
                     f"on the host: sudo {COMPOSE} logs {CONTAINER}")


async def config_mtime(ctx: StageContext) -> float:
    result = await ctx.run(f"stat -c %Y {q(CONFIG)}", sudo=True, check=False, dry_output="0")
    return float(result.stdout.strip() or 0) if result.ok else 0.0


async def restart(ctx: StageContext) -> None:
    await ctx.run(f"{COMPOSE} restart {CONTAINER}", sudo=True, timeout=300)
    await wait_healthy(ctx)


async def start(ctx: StageContext) -> Status:
    """`docker compose up -d`; restarted when homeserver.yaml changed since it started; healthy."""
    before = await container(ctx)
    await ctx.run(f"{COMPOSE} up -d", sudo=True, timeout=900)
    after = await container(ctx)
    changed = before is None or after is None or (before.id, before.started_at) != (after.id, after.started_at)
    if not changed and after is not None and await config_mtime(ctx) > after.started_at:
        ctx.log("homeserver.yaml changed since Synapse started: restarting it")
        await ctx.run(f"{COMPOSE} restart {CONTAINER}", sudo=True, timeout=300)
        changed = True
    await wait_healthy(ctx)
    return Status.DONE if changed else Status.UNCHANGED


# --- HTTP to Synapse, from the host ----------------------------------------------------------------

@dataclass(frozen=True)
class Response:
    status: int
    body: str

    def json(self) -> dict:
        try:
            value = json.loads(self.body or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def _curl_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def curl_config(method: str, url: str, *, body: object | None = None, token: str | None = None) -> str:
    """A curl config (read from stdin with `curl -K -`): tokens and passwords stay off the command line."""
    lines = [f"url = {_curl_value(url)}", f"request = {_curl_value(method)}", "silent", "show-error",
             "max-time = 30", f"write-out = {_curl_value(chr(10) + '%{http_code}')}"]
    if token is not None:
        lines.append(f"header = {_curl_value('Authorization: Bearer ' + token)}")
    if body is not None:
        lines.append(f"header = {_curl_value('Content-Type: application/json')}")
        lines.append(f"data-binary = {_curl_value(json.dumps(body))}")
    return "\n".join(lines) + "\n"


async def api(ctx: StageContext, method: str, path: str, *, body: object | None = None, token: str | None = None,
              dry_output: str = "{}\n200") -> Response:
    """One request to Synapse on the host's loopback. The request is logged; bodies never are
    (responses can carry access tokens and registration tokens)."""
    ctx.log(f"{method} {SYNAPSE_URL}{path}" + (" (as the admin)" if token else ""), "command")

    def log(line: str, kind: str) -> None:
        if kind == "err":
            ctx.log(line, kind)

    try:
        result: CommandResult = await ctx.remote.run(
            "curl -K -", log=log, input=curl_config(method, SYNAPSE_URL + path, body=body, token=token),
            check=False, timeout=60, dry_output=dry_output,
        )
    except RemoteCommandError:  # a timeout: its output could hold a token, so it is not shown
        raise StageError(f"{method} {path} got no answer from Synapse on the host in time") from None
    text, _, code = result.stdout.rpartition("\n")
    if not result.ok or not code.strip().isdigit():
        raise StageError(f"{method} {path}: no HTTP answer from Synapse on the host (curl status {result.exit_status})",
                         "is the synapse container running? sudo docker ps")
    return Response(int(code), text)


async def user_exists(ctx: StageContext, user_id: str) -> bool:
    from urllib.parse import quote

    answer = await api(ctx, "GET", f"/_matrix/client/v3/profile/{quote(user_id, safe='@:')}", dry_output='{"errcode":"M_NOT_FOUND"}\n404')
    if answer.status not in (200, 404):
        raise StageError(f"looking up {user_id} failed: HTTP {answer.status} {answer.json().get('errcode', '')}")
    return answer.status == 200


def admin_user_id(ctx: StageContext) -> str:
    return f"@{ctx.answers.registration.admin_user}:{ctx.answers.domain.server_name}"


def admin_password_from_env(ctx: StageContext) -> str | None:
    value = os.environ.get(ctx.answers.registration.admin_password_env, "").strip()
    return ctx.secret(value) if value else None


async def create_admin(ctx: StageContext) -> Status:
    """The admin account through `register_new_matrix_user` and the shared secret (registration is
    never opened for it); the password from the environment or generated and shown once."""
    from installer.synapse_config import read_setting

    a = ctx.answers
    user_id = admin_user_id(ctx)
    raw = await ctx.read_file(CONFIG)
    if raw is not None:
        register_secrets(ctx, raw.decode("utf-8", "replace"))
        if not read_setting(raw.decode("utf-8", "replace"), "registration_shared_secret"):
            raise StageError(f"{CONFIG} has no registration_shared_secret", "rerun: synapse.config adds one")
    elif not ctx.dry_run:
        raise StageError(f"{CONFIG} is missing", "rerun: synapse.config writes it")
    password = admin_password_from_env(ctx)
    if await user_exists(ctx, user_id):
        ctx.log(f"{user_id} already exists")
        if password:
            ctx.session.shared["admin_credentials"] = (user_id, password)
        return Status.UNCHANGED
    generated = password is None
    if password is None:
        password = ctx.secret(_random.token_urlsafe(18))
    elif len(password) < 8:
        raise StageError(f"the admin password in ${a.registration.admin_password_env} is shorter than 8 characters",
                         "choose a longer one (or unset the variable: one is generated and shown once)")
    # The password travels on stdin; the shared secret is read from the config inside the container.
    await ctx.run(
        f"docker exec -i {CONTAINER} register_new_matrix_user -u {q(a.registration.admin_user)} -a "
        f"-c /data/homeserver.yaml --password-file /dev/stdin http://localhost:8008",
        sudo=True, input=password + "\n", timeout=120,
    )
    ctx.session.shared["admin_credentials"] = (user_id, password)
    if generated and not ctx.dry_run:
        ctx.reveal(f"Admin password for {user_id}", password)
    ctx.log(f"created the admin {user_id}" + (" (generated password: shown once at the end)" if generated else
                                               f" (password from ${a.registration.admin_password_env})"))
    return Status.DONE
