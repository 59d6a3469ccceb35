"""The host stages' logic against scripted remotes, and the dry-run plan they print."""

from __future__ import annotations

import dataclasses
import re
import stat
from pathlib import Path

import pytest

from installer.answers import parse_answers
from installer.components.access import key_pair as local
from installer.components.base import Port
from installer.components.caddy import stages as caddy
from installer.components.docker import stages as docker
from installer.components.firewall import stages as firewall
from installer.components.homeserver import AdminCredentials, Response
from installer.components.registration import stages as registration
from installer.components.synapse import SYNAPSE
from installer.deployment import Deployment
from installer.engine import Engine, RunOptions, Session, Stage, StageContext, StageError
from installer.events import StageLog, Status
from installer.host import apt, connect
from installer.host.connect import HostOS, HostSize
from installer.plan import install_plan
from installer.providers.base import os_release
from installer.providers.oci import ORACLE_IMAGE_RULES
from installer.remote import CommandResult, RecordingRemote
from installer.state import RunState

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"


def answers(extra: str = "", *, host_key: str = HOST_KEY, policy: str = 'policy = "closed"', **_: object):
    """Valid answers for an existing server; host_key="" stands for a pin lost afterwards (the
    answers file refuses it), which the SSH stage must still refuse to guess."""
    return parse_answers(f"""version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
[cloud]
provider = "existing"
[ssh]
host = "203.0.113.7"
private_key = "/nonexistent/id_ed25519"
host_key = "{HOST_KEY}"
[registration]
{policy}
{extra}
""").replace("ssh", host_key=host_key)


NO_CALLS = "[calls]\nturn = false"
"""Without TURN, the deployment's ports are Caddy's alone (TCP)."""


def context(a, remote=None, *, dry_run: bool = False, facts: dict | None = None) -> tuple[StageContext, list[tuple[str, str]]]:
    state = RunState(None, {"facts": facts or {}})
    session = Session(answers=a, state=state, options=RunOptions(dry_run=dry_run), remote=remote)
    lines: list[tuple[str, str]] = []
    session.listeners.append(lambda e: lines.append((e.line, e.kind)) if isinstance(e, StageLog) else None)
    kinds = (HostOS, HostSize, AdminCredentials)
    ctx = StageContext(session, Stage("test", "test", lambda ctx: None, gives=kinds, takes=kinds))
    ctx.give(HostSize(4096, 2))  # what host.ssh gives the stages that render files (replaced when a test runs it)
    return ctx, lines


def tcp(*numbers: int) -> list[Port]:
    return [Port(n) for n in numbers]


class ScriptedRemote(RecordingRemote):
    """Answers commands by the first matching pattern; records what ran."""

    def __init__(self, answers: list[tuple[str, CommandResult | bool]], files: dict[str, bytes] | None = None) -> None:
        super().__init__()
        self.answers = [(re.compile(p), r) for p, r in answers]
        self.files = dict(files or {})
        self.written: dict[str, bytes] = {}

    def _answer(self, command: str) -> CommandResult | bool | None:
        for pattern, result in self.answers:
            if pattern.search(command):
                return result
        return None

    async def run(self, command, *, log, sudo=False, check=True, timeout=900, input=None, quiet=False, dry_output=""):
        await super().run(command, log=log, sudo=sudo)
        answer = self._answer(command)
        if isinstance(answer, CommandResult):
            return answer
        return CommandResult(0 if answer in (None, True) else 1, "", "")

    async def probe(self, command, *, log, sudo=False):
        await super().probe(command, log=log, sudo=sudo)
        answer = self._answer(command)
        return answer.ok if isinstance(answer, CommandResult) else bool(answer)

    async def read_file(self, path, *, log=None, sudo=True):
        return self.files.get(path)

    async def put_file(self, path, data, *, log, mode=0o644, owner="root:root", backup=True, secret=False):
        self.commands.append(f"write {path}")
        changed = self.files.get(path) != data
        self.files[path] = self.written[path] = data
        return changed


ORACLE = ORACLE_IMAGE_RULES["iptables"]


def test_reject_position_finds_the_catch_all_wherever_it_is():
    assert firewall.reject_position(ORACLE) == 6
    moved = "-P INPUT ACCEPT\n-A INPUT -j REJECT --reject-with icmp-host-prohibited\n-A INPUT -p tcp --dport 22 -j ACCEPT\n"
    assert firewall.reject_position(moved) == 1
    # A REJECT limited to some traffic is not the catch-all.
    partial = "-A INPUT -p udp -j REJECT\n-A INPUT -i lo -j ACCEPT\n-A INPUT -j DROP\n"
    assert firewall.reject_position(partial) == 3
    assert firewall.reject_position("-P INPUT ACCEPT\n-A INPUT -i lo -j ACCEPT\n") is None


def test_a_port_is_open_only_when_an_unrestricted_accept_comes_before_the_reject():
    rule = "-A INPUT -p tcp -m state --state NEW -m tcp --dport {} -j ACCEPT"
    above = ORACLE.replace("-A INPUT -j REJECT", rule.format(80) + "\n-A INPUT -j REJECT")
    assert firewall.closed_ports(above, tcp(80, 443)) == tcp(443)
    below = ORACLE + rule.format(443) + "\n"  # added after the REJECT by hand: it never matches
    assert firewall.closed_ports(below, tcp(80, 443)) == tcp(80, 443)
    limited = ORACLE.replace("-A INPUT -j REJECT", "-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 443 -j ACCEPT\n-A INPUT -j REJECT")
    assert firewall.closed_ports(limited, tcp(443)) == tcp(443)
    assert not firewall.opens("-A INPUT -p tcp -m tcp --dport 4430 -j ACCEPT", Port(443))
    assert firewall.closed_ports("-P INPUT ACCEPT\n-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n", tcp(443)) == []
    # UDP and ranges: a range opens each port inside it, and the protocol must match.
    relay = Port((49152, 49200), "udp")
    assert firewall.opens("-A INPUT -p udp -m state --state NEW -m udp --dport 49000:49500 -j ACCEPT", relay)
    assert not firewall.opens("-A INPUT -p tcp -m state --state NEW -m tcp --dport 49000:49500 -j ACCEPT", relay)
    assert not firewall.opens("-A INPUT -p udp -m udp --dport 49152:49199 -j ACCEPT", relay)
    assert firewall.accept_rule(relay) == "-p udp -m state --state NEW -m udp --dport 49152:49200 -j ACCEPT"


SAVED_ORACLE = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:InstanceServices - [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
-A OUTPUT -d 169.254.0.0/16 -j InstanceServices
COMMIT
"""


def test_saved_rules_gain_our_ports_above_the_reject_and_nothing_else_changes():
    updated = firewall.with_saved_ports(SAVED_ORACLE, tcp(80, 443))
    assert updated is not None
    lines = updated.splitlines()
    reject = lines.index("-A INPUT -j REJECT --reject-with icmp-host-prohibited")
    assert lines[reject - 2:reject] == ["-A INPUT -p tcp -m state --state NEW -m tcp --dport 80 -j ACCEPT",
                                        "-A INPUT -p tcp -m state --state NEW -m tcp --dport 443 -j ACCEPT"]
    assert [line for line in lines if "--dport 80 " not in line and "--dport 443 " not in line] == SAVED_ORACLE.splitlines()
    assert firewall.with_saved_ports(updated, tcp(80, 443)) is None  # the second time: nothing to do
    # Other tables (Docker's nat rules, had someone saved them) are left as they are.
    with_nat = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DOCKER\nCOMMIT\n" + SAVED_ORACLE
    assert firewall.with_saved_ports(with_nat, tcp(443)).startswith("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DOCKER\nCOMMIT\n")


def test_no_saved_rules_yet_gives_a_filter_table_with_only_our_ports():
    assert firewall.with_saved_ports("", tcp(80)) == (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        "-A INPUT -p tcp -m state --state NEW -m tcp --dport 80 -j ACCEPT\nCOMMIT\n")


async def test_firewall_inserts_only_the_missing_port_above_the_reject_and_saves_it():
    listing = "-P INPUT ACCEPT\n-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m state --state NEW -m tcp --dport 80 -j ACCEPT\n" \
              "-A INPUT -j REJECT --reject-with icmp-host-prohibited\n-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n"
    remote = ScriptedRemote([
        (r"ufw", False),
        (r"dpkg-query .*iptables-persistent", True),
        (r"^iptables -S INPUT", CommandResult(0, listing, "")),
        (r"^ip6tables -S INPUT", CommandResult(3, "", "ip6tables v1.8: can't initialize ip6tables table `filter'")),
    ], files={"/etc/iptables/rules.v4": SAVED_ORACLE.replace("-A INPUT -j REJECT", "-A INPUT -p tcp -m state --state NEW -m tcp --dport 80 -j ACCEPT\n-A INPUT -j REJECT").encode()})
    ctx, lines = context(answers(), remote)
    assert await firewall.open_firewall(ctx) is Status.DONE
    ran = remote.commands
    # 443 is accepted only below the REJECT: it is inserted above it; 80 is left alone.
    assert "sudo iptables -I INPUT 3 -p tcp -m state --state NEW -m tcp --dport 443 -j ACCEPT" in ran
    assert not any("--dport 80 -j ACCEPT" in c and " -I " in c for c in ran)
    assert ran[ran.index("sudo iptables-restore --test") + 1] == "write /etc/iptables/rules.v4"
    assert ran[-1] == "sudo ip6tables -S INPUT" and "write /etc/iptables/rules.v6" not in ran  # no IPv6 here
    saved = remote.files["/etc/iptables/rules.v4"].decode()
    assert saved.index("--dport 443 -j ACCEPT") < saved.index("-A INPUT -j REJECT") and saved.count("--dport 80 ") == 1
    assert not any("netfilter-persistent save" in c or "ufw" in c and ("disable" in c or "allow" in c) for c in ran)
    assert any("ip6tables cannot list" in line for line, _ in lines)


async def test_firewall_with_everything_in_place_is_unchanged():
    listing = ORACLE.replace("-A INPUT -j REJECT", "-A INPUT -p tcp -m state --state NEW -m tcp --dport 80 -j ACCEPT\n"
                                                   "-A INPUT -p tcp -m state --state NEW -m tcp --dport 443 -j ACCEPT\n-A INPUT -j REJECT")
    saved = firewall.with_saved_ports(SAVED_ORACLE, tcp(80, 443)).encode()
    remote = ScriptedRemote([
        (r"ufw", False), (r"dpkg-query", True), (r"tables -S INPUT", CommandResult(0, listing, "")),
    ], files={"/etc/iptables/rules.v4": saved, "/etc/iptables/rules.v6": saved})
    ctx, _ = context(answers(NO_CALLS), remote)
    assert await firewall.open_firewall(ctx) is Status.UNCHANGED
    assert not any(" -I " in c or "write" in c or "apt-get" in c for c in remote.commands)


async def test_firewall_refuses_an_active_ufw():
    ctx, _ = context(answers(), ScriptedRemote([(r"ufw", True)]))
    with pytest.raises(StageError, match="ufw is active"):
        await firewall.open_firewall(ctx)


async def test_federation_port_8448_is_opened_too():
    a = parse_answers("""version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
delegation = "srv"
[cloud]
provider = "existing"
[ssh]
host = "203.0.113.7"
host_key = "{HOST_KEY}"
[calls]
turn = false
""".replace("{HOST_KEY}", HOST_KEY))
    assert Deployment.build(a).ports == tcp(80, 443, 8448)
    assert Deployment.build(answers(NO_CALLS)).ports == tcp(80, 443)


def test_unknown_host_key_is_refused_with_a_way_to_find_it():
    ctx, _ = context(answers(host_key=""))
    with pytest.raises(StageError) as caught:
        connect.ssh_target(ctx)
    assert "not known" in str(caught.value) and "first sight" in str(caught.value)
    assert "/etc/ssh/ssh_host_ed25519_key.pub" in caught.value.hint and "ssh.host_key" in caught.value.hint
    # The key the cloud stage gave cloud-init is used when nothing is pinned.
    ctx, _ = context(answers(host_key=""), facts={"host.host_key": HOST_KEY, "host.host_key_from": "cloud-init"})
    target = connect.ssh_target(ctx)
    assert target.host_key == HOST_KEY and "cloud-init" in target.host_key_source and target.next_host_key == ""


async def test_connect_in_a_dry_run_does_not_fail_but_says_a_real_run_stops():
    ctx, lines = context(answers(host_key=""), RecordingRemote(), dry_run=True)
    assert await connect.connect(ctx) is Status.DONE
    assert any("a real run stops here" in line for line, _ in lines)


def test_os_release_parsing():
    found = connect.parse_os_release('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_ID="13"\nVERSION_CODENAME=trixie\nARCH=amd64\n')
    assert (found.id, found.codename, found.arch, found.is_ubuntu) == ("debian", "trixie", "amd64", False)
    assert docker.docker_source_line(found) == \
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian trixie stable\n"


async def test_docker_distro_packages_on_ubuntu_and_debian():
    for known, package in ((True, "docker-compose-v2"), (False, "docker-compose")):
        policy = "Candidate: 2.24.6" if known else "Candidate: (none)"
        remote = ScriptedRemote([(r"command -v docker", False), (r"docker compose version", True),
                                 (r"apt-cache policy docker-compose-v2", CommandResult(0, policy, "")),
                                 (r"id -nG", CommandResult(0, "ubuntu sudo", "")), (r"systemctl is-", True),
                                 (r"docker version", CommandResult(0, "26.1.5\n2.26.1\n", ""))])
        ctx, _ = context(answers('[packages]\nsource = "distro"'), remote)
        ctx.give(connect.parse_os_release(os_release("24.04", "arm64")))
        assert await docker.install_docker(ctx) is Status.DONE
        installs = [c for c in remote.commands if " install " in c]
        assert installs == [f"sudo {apt.APT_GET} install docker.io {package}"]
        assert "sudo usermod -aG docker -- ubuntu" in remote.commands


async def test_caddy_from_the_vendor_repo_uses_a_signed_by_keyring():
    remote = ScriptedRemote([(r"dpkg-query", False), (r"test -s", False), (r"command -v", True), (r"systemctl is-", True)])
    ctx, _ = context(answers(), remote)
    assert await caddy.install_caddy(ctx) is Status.DONE
    assert remote.written[caddy.CADDY_SOURCES].decode().startswith(f"deb [signed-by={caddy.CADDY_KEYRING}] https://dl.cloudsmith.io/")
    fetch = next(c for c in remote.commands if "gpg --batch --yes --dearmor" in c)
    assert caddy.CADDY_KEY_URL in fetch
    update_at = next(i for i, c in enumerate(remote.commands) if c.endswith(" update"))
    assert update_at > remote.commands.index(f"write {caddy.CADDY_SOURCES}")


async def test_caddy_config_validates_before_replacing_and_keeps_the_old_file_when_invalid():
    old = b"old config\n"
    remote = ScriptedRemote([(r"systemctl is-active", True), (r"caddy validate", CommandResult(1, "", "Error: adapting config"))],
                            files={caddy.CADDYFILE: old})
    ctx, _ = context(answers(), remote)
    with pytest.raises(StageError, match="previous one stays in place"):
        await caddy.configure(ctx)
    assert remote.files[caddy.CADDYFILE] == old
    assert f"sudo rm -f {caddy.CANDIDATE}" in remote.commands


async def test_caddy_config_restores_the_previous_file_when_the_reload_fails():
    old = b"old config\n"
    remote = ScriptedRemote([(r"systemctl is-active", True), (r"systemctl reload", CommandResult(1, "", "failed"))],
                            files={caddy.CADDYFILE: old})
    ctx, _ = context(answers(), remote)
    with pytest.raises(StageError, match="previous one is restored"):
        await caddy.configure(ctx)
    assert remote.files[caddy.CADDYFILE] == old


async def test_caddy_config_unchanged_when_the_file_matches():
    a = answers()
    remote = ScriptedRemote([(r"systemctl is-active", True)], files={caddy.CADDYFILE: Deployment.build(a).caddyfile().encode()})
    ctx, _ = context(a, remote)
    assert await caddy.configure(ctx) is Status.UNCHANGED
    assert not remote.written


def test_curl_config_keeps_secrets_off_the_command_line_and_escapes():
    from installer.components.synapse.api import curl_config

    text = curl_config("POST", "http://127.0.0.1:8008/x", body={"password": 'a"b\\c'}, token="tok")
    assert 'header = "Authorization: Bearer tok"' in text
    assert 'data-binary = "{\\"password\\": \\"a\\\\\\"b\\\\\\\\c\\"}"' in text
    assert 'write-out = "\\n%{http_code}"' in text


async def test_ensure_ssh_key_creates_a_private_pair_then_keeps_it(tmp_path):
    key = tmp_path / "keys" / "id_ed25519"
    a = answers().replace("ssh", private_key=str(key)).replace("cloud", provider="oci")  # a new VM gets it at boot
    ctx, _ = context(a)
    assert await local.ensure_ssh_key(ctx) is Status.DONE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = Path(str(key) + ".pub")
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644 and pub.read_text().startswith("ssh-ed25519 AAAA")
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert await local.ensure_ssh_key(ctx) is Status.UNCHANGED
    pub.unlink()
    assert await local.ensure_ssh_key(ctx) is Status.DONE and pub.exists()


async def test_dry_run_prints_every_command_and_file_and_no_secret(monkeypatch):
    monkeypatch.setenv("MATRIX_ADMIN_PASSWORD", "a-very-secret-admin-pw")
    a = answers(NO_CALLS, policy='policy = "token"\ntokens = 2')
    session = Session(answers=a, state=RunState(None), options=RunOptions(dry_run=True), remote=RecordingRemote())
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(f"{e.stage} [{e.kind}] {e.line}") if isinstance(e, StageLog) else None)
    mine = {"host.ssh", "host.firewall", "host.caddy", "host.docker", "synapse.config", "services.start", "caddy.config",
            "synapse.admin", "registration.policy"}
    plan = [s for s in install_plan(a) if s.name in mine]
    plan = [dataclasses.replace(s, needs=tuple(n for n in s.needs if n in mine)) for s in plan]
    result = await Engine(plan, session).run()
    assert {s.status for s in result.stages} == {Status.PLANNED}, [(s.name, s.error) for s in result.stages]
    text = "\n".join(lines)
    for expected in (
        "host.ssh [command] connect to ubuntu@203.0.113.7:22",
        # A server of the user's own: not assumed to be Oracle's image, with its REJECT rule.
        "host.firewall [command] $ sudo iptables -A INPUT -p tcp -m state --state NEW -m tcp --dport 443 -j ACCEPT",
        "host.firewall [log] assumed (dry run): iptables: opened TCP 80, 443 (no REJECT rule found: appended)",
        "host.firewall [command] ? sudo cat -- /etc/iptables/rules.v4  # a dry run assumes no such file yet",
        "host.firewall [command] $ sudo iptables-restore --test",
        "host.firewall [file] write /etc/iptables/rules.v4 ",
        f"host.caddy [command] $ sudo {apt.APT_GET} install caddy",
        f"host.docker [command] $ sudo {apt.APT_GET} install docker-ce",
        "services.start [file] write /opt/matrix/synapse/docker-compose.yml",
        'ports: ["127.0.0.1:8008:8008"]',
        "SYNAPSE_SERVER_NAME=example.org -e SYNAPSE_REPORT_STATS=no -v /opt/matrix/synapse/data:/data -- matrixdotorg/synapse:latest generate",
        "services.start [command] $ sudo docker compose -f /opt/matrix/synapse/docker-compose.yml up -d --remove-orphans",
        "caddy.config [command] $ sudo runuser -u caddy -- env HOME=/var/lib/caddy caddy validate",
        "caddy.config [file] write /etc/caddy/Caddyfile ",
        'respond "/.well-known/matrix/server"',
        "register_new_matrix_user --user=admin -a -c /data/homeserver.yaml --password-file /dev/stdin",
        "registration.policy [command] POST http://127.0.0.1:8008/_synapse/admin/v1/registration_tokens/new (as the admin)",
    ):
        assert expected in text, expected
    assert text.index("caddy validate") < text.index("write /etc/caddy/Caddyfile ")
    assert "read /etc" not in text  # reading a file is shown as the command it is
    assert "a-very-secret-admin-pw" not in text
    assert not session.shown_once  # a dry run reveals nothing: nothing was made


async def test_token_policy_makes_only_the_missing_tokens_and_shows_them_once():
    a = answers(policy='policy = "token"\ntokens = 3')
    remote = ScriptedRemote([
        (r"curl -K -", CommandResult(0, "", "")),
    ], files={registration.ADMIN_TOKEN_FILE: b"admin-token-123\n"})
    calls: list[tuple[str, str]] = []
    listing = '{"registration_tokens":[{"token":"existing-token-1"}]}'

    async def fake_api(ctx, method, path, *, body=None, token=None, dry_output=""):
        calls.append((method, path))
        if path.endswith("/register"):
            return Response(401, '{"flows":[{"stages":["m.login.registration_token"]}]}')
        if path.endswith("whoami"):
            return Response(200, "{}")
        if "registration_tokens?" in path:
            return Response(200, listing)
        return Response(200, '{"token":"new-token-%d"}' % len(calls))

    ctx, lines = context(a, remote)
    ctx.give(AdminCredentials("@admin:example.org", None))
    orig = SYNAPSE.api
    SYNAPSE.api = fake_api
    try:
        assert await registration.apply_policy(ctx) is Status.DONE
    finally:
        SYNAPSE.api = orig
    assert [c for c in calls if c[1].endswith("/new")] == [("POST", "/_synapse/admin/v1/registration_tokens/new")] * 2
    labels = [label for label, _ in ctx.session.shown_once]
    assert labels == ["Registration token 2 of 3", "Registration token 3 of 3"]
    for _, value in ctx.session.shown_once:
        assert ctx.session.secrets.redact(value) == "********"
    assert ctx.session.secrets.redact("existing-token-1 admin-token-123") == "******** ********"


def test_rfc3339_with_nanoseconds():
    from installer.host.containers import _rfc3339

    assert _rfc3339("2024-05-01T10:00:00.123456789Z") == pytest.approx(1714557600.123456789)
    assert _rfc3339("0001-01-01T00:00:00Z") < 0


def fake_api(answers_by_path: dict[str, list[Response]], calls: list[tuple[str, str]]):
    async def api(ctx, method, path, *, body=None, token=None, dry_output=""):
        calls.append((method, path))
        for suffix, answers in answers_by_path.items():
            if path.endswith(suffix):
                return answers.pop(0) if len(answers) > 1 else answers[0]
        raise AssertionError(f"unexpected {method} {path}")
    return api


CLOSED = Response(403, '{"errcode":"M_FORBIDDEN"}')
OPEN = Response(401, '{"flows":[{"stages":["m.login.dummy"]}]}')


async def test_closed_policy_already_in_force_is_unchanged(monkeypatch):
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(SYNAPSE, "api", fake_api({"/register": [CLOSED]}, calls))
    ctx, _ = context(answers(), ScriptedRemote([]))
    assert await registration.apply_policy(ctx) is Status.UNCHANGED
    assert calls == [("POST", "/_matrix/client/v3/register")]


async def test_a_server_still_open_is_restarted_then_verified_closed(monkeypatch):
    calls: list[tuple[str, str]] = []
    restarts: list[bool] = []
    monkeypatch.setattr(SYNAPSE, "api", fake_api({"/register": [OPEN, CLOSED]}, calls))

    async def restart(ctx):
        restarts.append(True)

    monkeypatch.setattr(SYNAPSE, "restart", restart)
    ctx, _ = context(answers(), ScriptedRemote([]))
    assert await registration.apply_policy(ctx) is Status.DONE
    assert restarts == [True]


async def test_open_until_admin_ends_closed_with_the_admin_in_place(monkeypatch):
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(SYNAPSE, "api", fake_api({"/register": [CLOSED]}, calls))

    async def exists(ctx, user_id):
        calls.append(("exists", user_id))
        return True

    monkeypatch.setattr(SYNAPSE, "user_exists", exists)
    ctx, lines = context(answers(policy='policy = "open-until-admin"'), ScriptedRemote([]))
    ctx.give(AdminCredentials("@admin:example.org", None))
    assert await registration.apply_policy(ctx) is Status.UNCHANGED
    assert ("exists", "@admin:example.org") in calls
    assert any("registration is closed" in line for line, _ in lines)


async def test_a_policy_that_does_not_hold_after_a_restart_fails(monkeypatch):
    monkeypatch.setattr(SYNAPSE, "api", fake_api({"/register": [OPEN]}, []))

    async def restart(ctx):
        pass

    monkeypatch.setattr(SYNAPSE, "restart", restart)
    ctx, _ = context(answers(), ScriptedRemote([]))
    with pytest.raises(StageError, match="registration is open on the running server"):
        await registration.apply_policy(ctx)


SS_LISTING = """LISTEN 0      511          0.0.0.0:80        0.0.0.0:*    users:(("nginx",pid=813,fd=6),("nginx",pid=812,fd=6))
LISTEN 0      511             [::]:443          [::]:*    users:(("nginx",pid=812,fd=8))
LISTEN 0      4096       127.0.0.1:2019      0.0.0.0:*    users:(("caddy",pid=90,fd=3))
LISTEN 0      4096               *:8448            *:*    users:(("caddy",pid=90,fd=9))
LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=5,fd=3))
"""


def test_other_programs_on_the_web_ports_are_named_and_caddy_is_not():
    assert caddy.port_holders(SS_LISTING, [80, 443, 8448]) == {80: ["nginx (pid 813)", "nginx (pid 812)"], 443: ["nginx (pid 812)"]}
    assert caddy.port_holders(SS_LISTING, [8448]) == {}


async def test_caddy_is_not_installed_while_another_web_server_holds_the_ports():
    remote = ScriptedRemote([(r"^ss -Htlnp", CommandResult(0, SS_LISTING, ""))])
    ctx, _ = context(answers(), remote)
    with pytest.raises(StageError) as caught:
        await caddy.install_caddy(ctx)
    assert "port 80: nginx (pid 813), nginx (pid 812); port 443: nginx (pid 812)" in str(caught.value)
    assert "sudo systemctl disable --now nginx" in caught.value.hint
    assert remote.commands == ["sudo ss -Htlnp"]  # nothing installed


class ModeRecordingRemote(ScriptedRemote):
    """Also keeps the owner and mode each file was written with."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.modes: dict[str, tuple[str, int]] = {}

    async def put_file(self, path, data, *, log, mode=0o644, owner="root:root", backup=True, secret=False):
        self.modes[path] = (owner, mode)
        return await super().put_file(path, data, log=log, mode=mode, owner=owner, backup=backup, secret=secret)


async def test_homeserver_yaml_and_the_signing_key_are_private_to_synapses_user():
    """The config holds the registration shared secret (whoever reads it can make an admin), the
    signing key is the server's identity: 0600, Synapse's own uid, even when the image left them 0644."""
    from installer.components.synapse import CONFIG, DATA
    from installer.components.synapse import stages as synapse

    key_file = f"{DATA}/example.org.signing.key"
    generated = synapse.DRY_HOMESERVER.format(server_name="example.org").encode()
    remote = ModeRecordingRemote([(r"test -d", True), (r"stat -c", CommandResult(0, "991:991 644\n", "")),
                                  (r"-perm /077", CommandResult(0, key_file + "\n", ""))], files={CONFIG: generated})
    ctx, _ = context(answers(NO_CALLS), remote)
    assert await synapse.configure(ctx) is Status.DONE
    assert remote.modes[CONFIG] == ("991:991", 0o600)
    assert f"sudo chmod 0600 {key_file}" in remote.commands
    # Already private and as the answers want it: left alone.
    remote.answers = [(re.compile(r"test -d"), True), (re.compile(r"stat -c"), CommandResult(0, "991:991 600\n", "")),
                      (re.compile(r"-perm /077"), CommandResult(0, "", ""))]
    remote.modes.clear()
    assert await synapse.configure(ctx) is Status.UNCHANGED
    assert not remote.modes


async def test_the_dry_run_shows_homeserver_yaml_written_private():
    session = Session(answers=answers(), state=RunState(None), options=RunOptions(dry_run=True), remote=RecordingRemote())
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(e.line) if isinstance(e, StageLog) else None)
    async def size(ctx) -> None:  # what host.ssh gives, without its connection
        ctx.give(HostSize(4096, 2))

    plan = [Stage("host.size", "size", size, gives=(HostSize,))] + [
        dataclasses.replace(s, needs=("host.size",)) for s in install_plan(answers()) if s.name == "synapse.config"]
    await Engine(plan, session).run()
    text = "\n".join(lines)
    assert "write /opt/matrix/synapse/data/homeserver.yaml (owner 991:991, mode 0600" in text
    assert "-name '*.signing.key' -perm /077" in text


async def _dry_run_lines(a, names: set[str]) -> list[str]:
    session = Session(answers=a, state=RunState(None), options=RunOptions(dry_run=True), remote=RecordingRemote())
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(f"{e.stage} {e.line}") if isinstance(e, StageLog) else None)
    plan = [dataclasses.replace(s, needs=tuple(n for n in s.needs if n in names)) for s in install_plan(a) if s.name in names]
    await Engine(plan, session).run()
    return lines


async def test_the_dry_run_shows_what_really_runs_and_marks_what_it_assumed():
    """sudo covers a whole shell line only through `sudo sh -c '...'`; every value a dry run makes
    up (the OS, Docker's version, a ready service) says it was assumed."""
    lines = await _dry_run_lines(answers(), {"host.ssh", "host.firewall", "host.caddy", "host.docker", "caddy.config",
                                             "services.start", "postgres.check", "synapse.admin", "registration.policy"})
    text = "\n".join(lines)
    assert "caddy.config $ sudo sh -c 'systemctl enable caddy && systemctl restart caddy'" in text
    assert "host.firewall ? sudo sh -c 'command -v ufw >/dev/null && ufw status | grep -q " in text
    assert "$ sudo iptables -S INPUT" in text  # no shell syntax: shown as it is
    for assumed in ("host.ssh assumed (dry run): host OS: Ubuntu 24.04 LTS (amd64)",
                    "host.docker assumed (dry run): Docker 27.0.3, compose 2.29.1",
                    "services.start assumed (dry run): synapse is ready",
                    "postgres.check assumed (dry run): Synapse's database is UTF8 with C collation",
                    "registration.policy a real run verifies on the running server that registration is closed"):
        assert assumed in text, assumed
    for stated_as_fact in ("sudo read", "<<<", "\nhost.docker Docker 27", "verified on the running server", "REJECT rule (was"):
        assert stated_as_fact not in text, stated_as_fact


async def test_an_oracle_vm_is_assumed_to_be_oracles_image_and_a_server_of_yours_is_not():
    oracle = answers(NO_CALLS).replace("cloud", provider="oci", shape="VM.Standard.E2.1.Micro", ubuntu_version="22.04")
    text = "\n".join(await _dry_run_lines(oracle, {"host.ssh", "host.firewall"}))
    assert "assumed (dry run): host OS: Ubuntu 22.04 LTS (amd64)" in text
    assert "assumed (dry run): iptables: opened TCP 80, 443 above the REJECT rule (was rule 6)" in text
    assert "(arm64)" in "\n".join(await _dry_run_lines(oracle.replace("cloud", shape="VM.Standard.A1.Flex"), {"host.ssh"}))


class Answering:
    """The guided setup's side of a question: records it, answers as told."""

    asks = True

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str, str]] = []

    async def confirm(self, question: str, *, yes: str = "Yes", no: str = "No") -> bool | None:
        self.asked.append((question, yes, no))
        return self.answer


async def test_a_new_key_for_a_server_of_yours_stops_with_the_way_to_add_it(tmp_path):
    """Headless: the pair is made, then the run stops saying exactly how the server learns it (it
    was never told, and would refuse the connection); the rerun goes on with the same key."""
    key = tmp_path / "keys" / "id_ed25519"
    ctx, lines = context(answers().replace("ssh", private_key=str(key), port=2222))
    with pytest.raises(StageError) as caught:
        await local.ensure_ssh_key(ctx)
    public = Path(f"{key}.pub").read_text().strip()
    hint = caught.value.hint or ""
    assert f"ssh-copy-id -i {key}.pub -p 2222 ubuntu@203.0.113.7" in hint
    assert f"~ubuntu/.ssh/authorized_keys on the server: {public}" in hint
    logged = [line for line, _ in lines]
    assert f"    ssh-copy-id -i {key}.pub -p 2222 ubuntu@203.0.113.7" in logged and f"    {public}" in logged
    assert await local.ensure_ssh_key(ctx) is Status.UNCHANGED  # the rerun: the key is kept, the run goes on


@pytest.mark.parametrize("added", [True, False])
async def test_a_new_key_for_a_server_of_yours_waits_for_the_person_in_the_guided_setup(tmp_path, added: bool):
    key = tmp_path / "id_ed25519"
    ctx, _ = context(answers().replace("ssh", private_key=str(key)))
    ctx.session.interaction = person = Answering(added)
    if added:
        assert await local.ensure_ssh_key(ctx) is Status.DONE
    else:
        with pytest.raises(StageError, match="does not accept the new key yet"):
            await local.ensure_ssh_key(ctx)
    ((question, yes, no),) = person.asked
    assert f"ssh-copy-id -i {key}.pub ubuntu@203.0.113.7" in question
    assert Path(f"{key}.pub").read_text().strip() in question
    assert (yes, no) == ("Added: continue", "Stop here")


async def test_an_upgrade_never_makes_a_key_pair(tmp_path):
    key = tmp_path / "id_ed25519"
    ctx, _ = context(answers().replace("ssh", private_key=str(key)))
    ctx.session.options.mode = "upgrade"
    with pytest.raises(StageError, match="an upgrade logs in with the key the server already accepts"):
        await local.ensure_ssh_key(ctx)
    assert not key.exists()


async def test_a_rate_limited_request_waits_as_synapse_asks_then_asks_again(monkeypatch) -> None:
    """A rerun logs the admin in several times within seconds (the TURN check, the self-test);
    Synapse's per-account login limit answers 429 with retry_after_ms: the request waits that long
    and is sent again, instead of failing the run."""
    import asyncio

    from installer.components.synapse.api import request

    answers_seen = iter([CommandResult(0, '{"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 1500}\n429', ""),
                         CommandResult(0, '{"access_token": "t"}\n200', "")])

    class RateLimited(ScriptedRemote):
        async def run(self, command, **kwargs):
            await super().run(command, **kwargs)
            return next(answers_seen)

    waited: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    remote = RateLimited([])
    ctx, lines = context(answers(), remote)
    answer = await request(ctx, "POST", "/_matrix/client/v3/login", body={"type": "m.login.password"})
    assert answer.status == 200 and waited == [1.6]
    assert remote.commands.count("curl -K -") == 2
    assert "Synapse asks to wait 2 s (rate limit): waiting" in [line for line, _ in lines]


@pytest.mark.parametrize("status, body, wait", [
    (429, '{"retry_after_ms": 5800}', 5.9),
    (429, b'{"retry_after_ms": 0}', 0.1),
    (429, '{"retry_after_ms": 3600000}', None),  # an hour: say so rather than hang
    (429, '{"errcode": "M_LIMIT_EXCEEDED"}', None),
    (429, '{"retry_after_ms": true}', None),
    (429, "not json", None),
    (403, '{"retry_after_ms": 100}', None),
])
def test_rate_limit_waits_only_for_a_short_wait_synapse_named(status, body, wait) -> None:
    from installer.federation.client import rate_limit_wait

    assert rate_limit_wait(status, body) == (pytest.approx(wait) if wait is not None else None)
