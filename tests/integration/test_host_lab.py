"""The host stages end to end on the lab host (a real systemd Debian trixie machine in Docker):
a headless install with provider "existing", packages "distro", tls "internal"; a second run
that changes nothing; a wrong pinned host key; and no secret in any log, report or state file.

The engine is driven directly with the install plan's host stages (the DNS and federation stages
need names that resolve to the lab, which other tests cover).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from installer.answers import parse_answers
from installer.engine import Engine, RunOptions, Session
from installer.events import RunResult, StageFinished, StageLog, Status
from installer.interaction import Headless
from installer.plan import install_plan
from installer.report import RunLog, write_report
from installer.state import RunState
from tests.lab import lab as _lab
from tests.lab.scenarios import existing_server_answers


pytestmark = pytest.mark.lab

HOST_STAGES = ("local.ssh_key", "host.ssh", "host.firewall", "host.caddy", "host.docker", "postgres.config",
               "synapse.config", "services.start", "caddy.config", "synapse.admin", "registration.policy", "postgres.check")
SERVER_NAME = "example.test"
UPLOAD_LIMIT = "2M"
"""Small, so that uploads just over and far over it take no time (the default is 50M)."""
MATRIX_HOST = "matrix.example.test"
CHECKSUMS = (
    "find /opt/matrix/synapse /etc/caddy /etc/iptables /etc/apt/sources.list.d -type f "
    "! -path '*/media_store/*' ! -path '/opt/matrix/synapse/postgres/*' ! -name 'homeserver.db*' ! -name '*.pid' "
    # The self-test's files: the engine-driven install here leaves that component out, the CLI's run adds it.
    "! -path '/opt/matrix/synapse/selftest/*' "
    "-print0 | sort -z | xargs -0 sha256sum"
)


@dataclass
class Run:
    result: RunResult
    log_lines: list[str] = field(default_factory=list)
    folder: Path | None = None
    report: Path | None = None

    def status(self) -> dict[str, str]:
        return {s.name: s.status.value for s in self.result.stages}

    def errors(self) -> dict[str, str | None]:
        return {s.name: s.error for s in self.result.stages if s.error}


def run_install(answers_toml: str, state_dir: Path, *, on_finished=None, stages=HOST_STAGES, interaction=None) -> Run:
    answers = parse_answers(answers_toml, "lab.toml")
    state = RunState.load(state_dir, answers.domain.server_name)
    session = Session(answers=answers, state=state, options=RunOptions(state_dir=state_dir))
    if interaction is not None:
        session.interaction = interaction
    lines: list[str] = []

    def listen(event) -> None:
        if isinstance(event, StageLog):
            lines.append(f"{event.stage} [{event.kind}] {event.line}")
        if isinstance(event, StageFinished):
            lines.append(f"{event.stage} {event.status.value} {event.error or ''}")
            if on_finished:
                on_finished(event)

    run_log = RunLog(state.folder / "last-run.log")
    session.listeners += [listen, run_log]
    plan = [s for s in install_plan(answers) if s.name in stages]

    async def go() -> RunResult:
        try:
            return await Engine(plan, session).run()
        finally:
            if session.remote is not None:
                await session.remote.close()

    try:
        result = asyncio.run(go())
    finally:
        run_log.close()
    report = state.folder / "report.json"
    write_report(result, report)
    return Run(result, lines, state.folder, report)


@pytest.fixture(scope="module")
def install(lab_host_image, lab_session_key, synapse_image, postgres_image, tmp_path_factory):
    """One lab host of this module's own (the session's lab_host stays fresh for other tests),
    installed once; yields (host, answers text, state dir, first run)."""
    host = _lab.LabHost.start(lab_host_image, lab_session_key)
    try:
        work = tmp_path_factory.mktemp("host-lab")
        key = work / "ssh" / "id_ed25519"  # missing: local.ssh_key creates it
        toml = existing_server_answers(host, key=key, registration='policy = "token"\ntokens = 2\n'
                                                                     'admin_password_env = "MI_LAB_TEST_UNSET_ADMIN_PASSWORD"',
                                       extra=f'[synapse]\nmax_upload_size = "{UPLOAD_LIMIT}"')
        state_dir = work / "state"

        class AddsTheKey(Headless):
            """The person at the guided setup: told how, adds the new key to the server, then goes on."""

            asks = True
            told = ""

            async def confirm(self, question: str, *, yes: str = "Yes", no: str = "No") -> bool | None:
                self.told = question
                host.authorize_key(Path(str(key) + ".pub").read_text())
                return True

        def after(event: StageFinished) -> None:
            # The lab has no registry: the stand-in images go into the host's Docker by hand.
            if event.stage == "host.docker" and event.status in (Status.DONE, Status.UNCHANGED):
                host.load_image(synapse_image, as_tag="matrixdotorg/synapse:latest")
                host.load_image(postgres_image, as_tag=_lab.POSTGRES_IMAGE)

        person = AddsTheKey()
        first = run_install(toml, state_dir, on_finished=after, interaction=person)
        assert f"ssh-copy-id -i {key}.pub -p {host.ssh_port} ubuntu@127.0.0.1" in person.told
        yield host, toml, state_dir, first
    finally:
        host.stop()


def test_first_install_finishes_with_every_stage_done(install):
    host, _, _, first = install
    assert first.status() == {name: "done" for name in HOST_STAGES}, (first.errors(), "\n".join(first.log_lines[-60:]))
    assert first.result.ok


def test_the_host_is_set_up_as_the_guide_does_it(install):
    host, _, _, first = install
    # Firewall: 80/443 above Oracle's REJECT, saved for the next boot; the REJECT still last.
    rules = host.exec("iptables -S INPUT", check=True).stdout.splitlines()
    reject = rules.index("-A INPUT -j REJECT --reject-with icmp-host-prohibited")
    assert reject == len(rules) - 1
    for port in (80, 443):
        rule = f"-A INPUT -p tcp -m state --state NEW -m tcp --dport {port} -j ACCEPT"
        assert rules.index(rule) < reject
        assert rule in host.exec("cat /etc/iptables/rules.v4", check=True).stdout
    # The saved file is Oracle's plus our rules: Docker's own (it makes them at each start) are not in it.
    saved = host.exec("cat /etc/iptables/rules.v4", check=True).stdout
    assert "icmp-host-prohibited" in saved and "DOCKER" not in saved and "*nat" not in saved
    assert host.exec("command -v ufw").returncode != 0
    # Caddy, Docker, the SSH user in the docker group.
    assert host.exec("systemctl is-active caddy docker").stdout.split() == ["active", "active"]
    assert "docker" in host.exec("id -nG ubuntu").stdout.split()
    # Synapse: compose file, generated and edited config, loopback-only port, healthy.
    assert "127.0.0.1:8008:8008" in host.exec("cat /opt/matrix/synapse/docker-compose.yml").stdout
    config = host.exec("cat /opt/matrix/synapse/data/homeserver.yaml", check=True).stdout
    assert f"public_baseurl: https://{MATRIX_HOST}/" in config and "registration_requires_token: true" in config
    assert "# Configuration file for Synapse." in config  # the generated comments are kept
    assert host.exec("curl -fsS http://127.0.0.1:8008/health").stdout == "OK"
    ports = host.exec("docker port synapse").stdout
    assert "127.0.0.1:8008" in ports and "0.0.0.0" not in ports
    # From outside (the runner): the firewall lets HTTP(S) in, Caddy proxies to Synapse.
    resolve = ["--resolve", f"{MATRIX_HOST}:{host.https_port}:127.0.0.1", "--resolve", f"{SERVER_NAME}:{host.https_port}:127.0.0.1"]
    versions = subprocess.run(["curl", "-fsSk", *resolve, f"https://{MATRIX_HOST}:{host.https_port}/_matrix/client/versions"],
                              capture_output=True, text=True, timeout=60)
    assert versions.returncode == 0 and "versions" in json.loads(versions.stdout), versions.stderr
    well_known = subprocess.run(["curl", "-fsSk", *resolve, f"https://{SERVER_NAME}:{host.https_port}/.well-known/matrix/server"],
                                capture_output=True, text=True, timeout=60)
    assert json.loads(well_known.stdout) == {"m.server": f"{MATRIX_HOST}:443"}, well_known.stderr
    # Synapse runs on Postgres: the admin's row is in its users table, the database is UTF8 with C
    # collation, and the server is on the compose network only (no host port).
    psql = "docker exec postgres psql -U synapse -d synapse -At -c "
    assert host.exec(psql + "'SELECT name FROM users'", check=True).stdout.split() == [f"@admin:{SERVER_NAME}"]
    assert host.exec(psql + "\"SELECT datcollate, datctype, pg_encoding_to_char(encoding) FROM pg_database "
                            "WHERE datname = 'synapse'\"", check=True).stdout.strip() == "C|C|UTF8"
    assert host.exec("docker port postgres").stdout.strip() == ""
    import yaml

    database = yaml.safe_load(config)["database"]
    assert database["name"] == "psycopg2" and database["args"]["host"] == "postgres" and "password" not in database["args"]
    # The files holding secrets are private: homeserver.yaml to Synapse's user, the password file to root.
    assert host.exec("stat -c '%u %a' /opt/matrix/synapse/data/homeserver.yaml").stdout.split() == ["991", "600"]
    assert host.exec("stat -c '%U %a' /opt/matrix/synapse/postgres.env").stdout.split() == ["root", "600"]
    assert "PASSWORD" not in host.exec("cat /opt/matrix/synapse/docker-compose.yml").stdout
    # Registration needs a token; two were made and shown once.
    shown = dict(first.result.shown_once or [])
    assert f"Admin password for @admin:{SERVER_NAME}" in shown
    assert sum(label.startswith("Registration token") for label in shown) == 2


def test_second_run_is_unchanged_and_changes_no_file(install):
    host, toml, state_dir, _ = install
    before = host.exec(CHECKSUMS, check=True).stdout
    second = run_install(toml, state_dir)
    assert second.status() == {name: "unchanged" for name in HOST_STAGES}, (second.errors(), "\n".join(second.log_lines[-60:]))
    after = host.exec(CHECKSUMS, check=True).stdout
    assert after == before
    assert "Caddyfile" in after and "homeserver.yaml" in after and "docker-compose.yml" in after
    assert not second.result.shown_once  # nothing new to show


def test_secrets_appear_in_no_log_report_or_state_file(install):
    host, _, state_dir, first = install
    config = host.exec("cat /opt/matrix/synapse/data/homeserver.yaml", check=True).stdout
    import yaml

    settings = yaml.safe_load(config)
    secrets = [value for _, value in first.result.shown_once or []]
    secrets += [settings["registration_shared_secret"], settings["macaroon_secret_key"], settings["form_secret"]]
    secrets.append(host.exec("cat /opt/matrix/synapse/.admin-access-token", check=True).stdout.strip())
    env = host.exec("cat /opt/matrix/synapse/postgres.env", check=True).stdout
    secrets.append(env.split("POSTGRES_PASSWORD=")[1].split()[0])
    assert len(secrets) == 8 and all(len(s) >= 8 for s in secrets)
    texts = {"events": "\n".join(first.log_lines)}
    for path in Path(state_dir).rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    assert any(name.endswith("last-run.log") for name in texts) and any(name.endswith("state.json") for name in texts)
    for name, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {name}"
    # The token file is root's alone.
    assert host.exec("stat -c '%U %a' /opt/matrix/synapse/.admin-access-token").stdout.split() == ["root", "600"]


def test_a_client_uploading_over_the_limit_gets_413_m_too_large(install, tmp_path):
    """What a real client (matrix-nio) sees through Debian's Caddy 2.6.2: one upload just over the
    limit, answered by Synapse; one far over it, answered by Caddy before the body is read; both
    413 M_TOO_LARGE (not a 502 with no Matrix error, as when Caddy cut the body). One under it is stored."""
    import nio

    from installer.components.synapse import upload_bytes
    from installer.render import TOO_LARGE
    from tests.lab.matrix_client import client, login

    host, _, _, first = install
    assert "2.6.2" in host.exec("caddy version", check=True).stdout
    password = dict(first.result.shown_once)[f"Admin password for @admin:{SERVER_NAME}"]
    ca = tmp_path / "caddy-root.crt"
    ca.write_bytes(host.caddy_root_ca())
    limit = upload_bytes(UPLOAD_LIMIT)

    async def upload(made: nio.AsyncClient, size: int):
        answer, _ = await made.upload(lambda *_: b"x" * size, content_type="application/octet-stream",
                                      filename=f"{size}.bin", filesize=size)
        return answer

    async def go():
        made = client(MATRIX_HOST, host.https_port, ca, f"@admin:{SERVER_NAME}")
        try:
            await login(made, password)
            return [await upload(made, size) for size in (limit // 2, limit + 1, limit + 4 * 1024 * 1024)]
        finally:
            await made.close()

    under, just_over, far_over = asyncio.run(go())
    assert isinstance(under, nio.UploadResponse) and under.content_uri.startswith("mxc://"), under
    for answer in (just_over, far_over):
        assert isinstance(answer, nio.UploadError), answer
        assert answer.transport_response.status == 413 and answer.status_code == "M_TOO_LARGE", answer
    # Synapse's own words for the one just over; Caddy's for the one far over.
    assert TOO_LARGE not in just_over.message and just_over.message
    assert f'"error": "{far_over.message}"' in TOO_LARGE, far_over.message


def test_wrong_pinned_host_key_stops_before_any_command(install, tmp_path):
    host, toml, _, _ = install
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    accepted = host.exec("journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey'").stdout.strip()
    run = run_install(toml.replace(host.host_key, other), tmp_path / "state")
    status = run.status()
    assert status["host.ssh"] == "failed"
    assert all(status[name] == "skipped" for name in HOST_STAGES[2:])
    error = run.errors()["host.ssh"]
    import asyncssh

    for key in (host.host_key, other):
        assert asyncssh.import_public_key(key).get_fingerprint("sha256") in error
    assert not any("[command]" in line for line in run.log_lines)
    assert host.exec("journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey'").stdout.strip() == accepted


def test_headless_cli_rerun_reports_every_host_stage_unchanged(install, lab_dns, tmp_path):
    """`matrix-installer --answers F --state-dir D --report R` on the installed lab host: the host
    stages are all unchanged, and the federation test reaches the lab through --connect-to."""
    import os
    import sys

    host, toml, state_dir, _ = install
    answers = tmp_path / "answers.toml"
    answers.write_text(toml)
    ca = tmp_path / "caddy-root.crt"
    ca.write_bytes(host.caddy_root_ca())
    report = tmp_path / "report.json"
    before = host.exec(CHECKSUMS, check=True).stdout
    args = [sys.executable, "-m", "installer", "--answers", str(answers), "--state-dir", str(state_dir),
            "--report", str(report), "--dns-server", f"127.0.0.1:{lab_dns}", "--ca-file", str(ca), "--peer", "none"]
    for name in (SERVER_NAME, MATRIX_HOST):
        args += ["--connect-to", f"{name}:443:127.0.0.1:{host.https_port}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}, stdin=subprocess.DEVNULL)
    assert report.exists(), done.stdout + done.stderr
    stages = {s["name"]: s for s in json.loads(report.read_text())["stages"]}
    for name in HOST_STAGES:
        assert stages[name]["status"] == "unchanged", (name, stages[name], done.stdout[-3000:])
    assert host.exec(CHECKSUMS, check=True).stdout == before
    assert "Traceback" not in done.stderr
    # The whole plan passes: DNS (dnsmasq) and the federation test through Caddy to Synapse.
    assert done.returncode == 0, {name: (s["status"], s["error"]) for name, s in stages.items()}
    assert json.loads(report.read_text())["federation"]["ok"] is True
    import yaml

    settings = yaml.safe_load(host.exec("cat /opt/matrix/synapse/data/homeserver.yaml", check=True).stdout)
    token = host.exec("cat /opt/matrix/synapse/.admin-access-token", check=True).stdout.strip()
    for secret in (settings["registration_shared_secret"], settings["macaroon_secret_key"], token):
        for text in (done.stdout, done.stderr, report.read_text(), (state_dir / SERVER_NAME / "last-run.log").read_text()):
            assert secret not in text


def test_another_web_server_on_port_80_stops_before_caddy_is_installed(lab_host_image, lab_session_key, tmp_path):
    """A server that already runs a web server: named, nothing installed; once it is gone, the rerun goes on."""
    host = _lab.LabHost.start(lab_host_image, lab_session_key)
    try:
        toml = existing_server_answers(host)
        stages = ("local.ssh_key", "host.ssh", "host.firewall", "host.caddy")
        # The stand-in web server: a second sshd listening on port 80.
        host.exec("/usr/sbin/sshd -p 80 -o PidFile=/run/sshd-on-80.pid", check=True)
        pid = host.exec("cat /run/sshd-on-80.pid", check=True).stdout.strip()
        first = run_install(toml, tmp_path / "state", stages=stages)
        assert first.status()["host.caddy"] == "failed", first.errors()
        error = first.errors()["host.caddy"]
        assert f"port 80: sshd (pid {pid})" in error and "Nothing was installed" in error
        assert host.exec("dpkg-query -W -f='${Status}' caddy").stdout.strip() != "install ok installed"

        host.exec(f"kill {pid}", check=True)
        second = run_install(toml, tmp_path / "state", stages=stages)
        assert second.status()["host.caddy"] == "done", second.errors()
        assert host.exec("systemctl is-active caddy").stdout.strip() == "active"
    finally:
        host.stop()
