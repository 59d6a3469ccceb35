"""The selftest component's stages against a scripted host: the bot and its room made through
the homeserver's API (its token written root-only and never logged, the admin's session logged
out), reruns that change nothing, the timer's files; and server-health as --check reads it."""

from __future__ import annotations

import json
import re
import time

import pytest

from installer.components import selftest
from installer.components.federation.host_side import server_health
from installer.components.homeserver import AdminCredentials
from installer.components.selftest import stages
from installer.engine import RunOptions, Session, Stage, StageContext
from installer.events import StageLog, Status
from installer.remote import CommandResult
from installer.state import RunState
from tests.unit.test_host_stages import ScriptedRemote, answers

ADMIN = "@admin:example.org"
BOT = "@matrix-selftest:example.org"
BOT_TOKEN = "syt_bot_token_Abc123"
ADMIN_TOKEN = "syt_admin_token_Xyz789"


class FakeHost(ScriptedRemote):
    """Synapse on the loopback (curl -K - with its config on stdin) and a few files."""

    def __init__(self, *, joined=(), whoami=BOT, files=None, answers=()):
        super().__init__(list(answers), files)
        self.requests: list[tuple[str, str, str | None]] = []
        self.modes: dict[str, int] = {}
        self.joined = set(joined)
        self.whoami = whoami

    def _synapse(self, config: str) -> CommandResult:
        url = re.search(r'^url = "(.*)"$', config, re.M).group(1)
        method = re.search(r'^request = "(.*)"$', config, re.M).group(1)
        token = re.search(r'Authorization: Bearer ([^"]*)"', config)
        token = token.group(1) if token else None
        path = url.split("8008", 1)[1]
        self.requests.append((method, path, token))

        def answer(body: object, status: int = 200) -> CommandResult:
            return CommandResult(0, json.dumps(body) + f"\n{status}", "")

        if path.endswith("/login"):
            user = json.loads(re.search(r'^data-binary = "(.*)"$', config, re.M).group(1).encode().decode("unicode_escape"))["identifier"]["user"]
            return answer({"access_token": ADMIN_TOKEN if user == ADMIN else BOT_TOKEN})
        if path.endswith("/whoami"):
            return answer({"user_id": self.whoami} if token == BOT_TOKEN else {"errcode": "M_UNKNOWN_TOKEN"},
                          200 if token == BOT_TOKEN else 401)
        if path.endswith("/joined_members"):
            return answer({"joined": {u: {} for u in self.joined}})
        if path.endswith("/createRoom"):
            return answer({"room_id": "!notices:example.org"})
        if "/join/" in path:
            self.joined.add(ADMIN)
            return answer({"room_id": "!notices:example.org"})
        if "/_synapse/admin/v2/users/" in path:
            return answer({}, 201)
        return answer({})

    async def run(self, command, *, log, sudo=False, check=True, timeout=900, input=None, quiet=False, dry_output=""):
        if command == "curl -K -":
            return self._synapse(input)
        return await super().run(command, log=log, sudo=sudo, check=check, timeout=timeout, input=input)

    async def put_file(self, path, data, *, log, mode=0o644, owner="root:root", backup=True, secret=False):
        self.modes[path] = mode
        return await super().put_file(path, data, log=log, mode=mode, owner=owner, backup=backup, secret=secret)


def context(remote, stage: Stage, *, password: str | None = "admin-password-1", facts=None, peer="other.test"):
    session = Session(answers(), RunState(None, {"facts": dict(facts or {})}), RunOptions(peer=peer), remote=remote)
    session.outputs[AdminCredentials] = AdminCredentials(ADMIN, password)
    if password:
        session.secrets.add(password)
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(e.line) if isinstance(e, StageLog) else None)
    return StageContext(session, stage), session, lines


NOTICES = Stage("selftest.notices", "", stages.notices_room, takes=(AdminCredentials,))
TIMER = Stage("selftest.timer", "", stages.install_timer)


async def test_the_bot_and_its_room_are_made_and_only_the_bots_token_is_kept():
    host = FakeHost()
    ctx, session, lines = context(host, NOTICES)
    assert await stages.notices_room(ctx) is Status.DONE
    methods = [(m, p.split("?")[0], t) for m, p, t in host.requests]
    assert ("PUT", "/_synapse/admin/v2/users/@matrix-selftest:example.org", ADMIN_TOKEN) in methods
    assert ("POST", "/_matrix/client/v3/createRoom", BOT_TOKEN) in methods
    assert ("POST", "/_matrix/client/v3/join/%21notices%3Aexample.org", ADMIN_TOKEN) in methods
    assert methods[-1] == ("POST", "/_matrix/client/v3/logout", ADMIN_TOKEN)  # the admin's session ends
    assert host.written[selftest.TOKEN_FILE] == BOT_TOKEN.encode() + b"\n"
    assert host.modes[selftest.TOKEN_FILE] == 0o600
    assert session.state.facts[selftest.ROOM] == "!notices:example.org"
    shown = "\n".join(lines)
    assert BOT_TOKEN not in shown and ADMIN_TOKEN not in shown and "admin-password-1" not in shown
    assert "@admin:example.org joined" in shown


async def test_a_rerun_with_a_working_bot_changes_nothing():
    host = FakeHost(joined=(BOT, ADMIN), files={selftest.TOKEN_FILE: BOT_TOKEN.encode() + b"\n"})
    ctx, _, lines = context(host, NOTICES, facts={selftest.ROOM: "!notices:example.org"})
    assert await stages.notices_room(ctx) is Status.UNCHANGED
    assert not any(p.endswith("/login") for _, p, _ in host.requests)
    assert not host.written


async def test_without_the_admins_password_the_room_waits_for_a_rerun():
    ctx, _, lines = context(FakeHost(), NOTICES, password=None)
    assert await stages.notices_room(ctx) is Status.SKIPPED
    assert any("posts nothing; set $MATRIX_ADMIN_PASSWORD and rerun" in line for line in lines)


async def test_the_timer_files_and_a_rerun():
    host = FakeHost(answers=[("systemctl is-enabled", False), ("test -d", False)])
    ctx, session, lines = context(host, TIMER, facts={selftest.ROOM: "!notices:example.org"})
    assert await stages.install_timer(ctx) is Status.DONE
    assert host.modes[selftest.SCRIPT] == 0o755 and host.modes[selftest.CONFIG] == 0o644
    assert host.written[selftest.SCRIPT].startswith(b"#!/usr/bin/env python3")
    config = json.loads(host.written[selftest.CONFIG])
    assert config["room_id"] == "!notices:example.org" and config["peer"] == "other.test"
    assert b"OnCalendar=daily" in host.written[selftest.TIMER_FILE]
    assert f"ExecStart=/usr/bin/python3 {selftest.SCRIPT} --config {selftest.CONFIG}".encode() in host.written[selftest.SERVICE_FILE]
    assert "sudo systemctl daemon-reload" in host.commands and "sudo systemctl enable --now matrix-selftest.timer" in host.commands
    assert session.state.facts[selftest.DEPLOYED] is True
    again = FakeHost(files=dict(host.files), answers=[("systemctl is-enabled", True), ("test -d", True)])
    ctx, _, _ = context(again, TIMER, facts={selftest.ROOM: "!notices:example.org"})
    assert await stages.install_timer(ctx) is Status.UNCHANGED


def _health_host(props: str, last: dict | None) -> FakeHost:
    out = props + "\n---\n" + (json.dumps(last) if last is not None else "")
    return FakeHost(answers=[("systemctl show", CommandResult(0, out, ""))])


LOADED = "LoadState=loaded\nActiveState=active\nNextElapseUSecRealtime=Tue 2026-12-01 00:41:10 UTC"


@pytest.mark.parametrize(("props", "last", "ok", "warning", "words"), [
    (LOADED, None, True, False, "the self-test's timer is active, no result yet (next run Tue 2026-12-01 00:41:10 UTC)"),
    (LOADED, {"ok": True, "checks": [{"name": "tls@1.2.3.4:443", "ok": True, "detail": "fine"}]}, True, False,
     "passed 1 checks; next run Tue 2026-12-01"),
    (LOADED, {"ok": False, "checks": [{"name": "tls@1.2.3.4:443", "ok": False, "detail": "connection refused",
                                       "fix": "check Caddy"}]}, True, True, "FAILED: tls@1.2.3.4:443: connection refused"),
    ("LoadState=loaded\nActiveState=inactive", None, False, False, "is inactive: the server no longer tests itself"),
    ("LoadState=not-found\nActiveState=inactive", None, False, False, "is not installed on the host"),
])
async def test_server_health_reads_the_last_result(props, last, ok, warning, words):
    if last is not None:
        last["at"] = int(time.time()) - 600
    ctx, _, _ = context(_health_host(props, last), Stage("federation.check", "", lambda c: None))
    check = await server_health(ctx, {selftest.DEPLOYED: True})
    assert (check.ok, check.warning) == (ok, warning), check
    assert words in check.detail
    if last is not None:
        assert "(10 min ago)" in check.detail


async def test_server_health_says_when_the_timer_stopped_running():
    last = {"at": int(time.time()) - 4 * 86400, "ok": True, "checks": []}
    ctx, _, _ = context(_health_host(LOADED, last), Stage("federation.check", "", lambda c: None))
    check = await server_health(ctx, {selftest.DEPLOYED: True})
    assert not check.ok and "the timer does not run it" in check.detail
    assert await server_health(ctx, {}) is None


# --- the backups' checks, and the restore test's failure posted through the self-test ----------

S3_BACKUP = ('[backup]\ntarget = "s3"\nbucket = "lab-bucket"\ns3_endpoint = "http://172.17.0.1:9000"\n'
             's3_access_key_env = "TEST_S3_KEY"\ns3_secret_key_env = "TEST_S3_SECRET"\n')


def backup_context(remote, stage: Stage, *, facts=None):
    session = Session(answers(S3_BACKUP), RunState(None, {"facts": dict(facts or {})}), RunOptions(peer="other.test"),
                      remote=remote)
    return StageContext(session, stage), session


async def test_with_backups_a_failed_restore_test_starts_the_self_test_and_it_reads_the_backups():
    host = FakeHost(answers=[("systemctl is-enabled", True), ("test -d", True)])
    ctx, _ = backup_context(host, TIMER, facts={selftest.ROOM: "!notices:example.org"})
    assert await stages.install_timer(ctx) is Status.DONE
    hook = host.written[selftest.RESTORE_TEST_HOOK].decode()
    assert selftest.RESTORE_TEST_HOOK.startswith("/etc/systemd/system/matrix-restore-test.service.d/")
    assert "\n[Unit]\nOnFailure=matrix-selftest.service\n" in hook
    config = json.loads(host.written[selftest.CONFIG])
    assert config["backup"] == {"status_file": "/opt/matrix/restic/status.json",
                                "restore_test_file": "/opt/matrix/restic/restore-test.json"}
    assert "sudo systemctl daemon-reload" in host.commands
    # Backups turned off later: the hook goes, and the script no longer reads them.
    off = FakeHost(files=dict(host.files), answers=[("systemctl is-enabled", True), ("test -d", True),
                                                    (f"test -e {selftest.RESTORE_TEST_HOOK}", True)])
    ctx, _, _ = context(off, TIMER, facts={selftest.ROOM: "!notices:example.org"})
    assert await stages.install_timer(ctx) is Status.DONE
    assert f"sudo rm -f -- {selftest.RESTORE_TEST_HOOK}" in off.commands and "sudo systemctl daemon-reload" in off.commands
    assert json.loads(off.written[selftest.CONFIG])["backup"] is None
    # Without backups from the start there is no hook to write or remove.
    none = FakeHost(answers=[("systemctl is-enabled", True), ("test -d", True)])
    ctx, _, _ = context(none, TIMER, facts={selftest.ROOM: "!notices:example.org"})
    await stages.install_timer(ctx)
    assert selftest.RESTORE_TEST_HOOK not in none.written and not any("rm -f" in c for c in none.commands)


NOW = 1_760_000_000.0
GOOD_STATUS = {"ok": True, "at": NOW - 3600, "snapshot": "0123abcdef", "snapshot_time": NOW - 3600, "period": 86400,
               "files": 12, "bytes": 4096}


@pytest.mark.parametrize(("status", "restore_test"), [
    (None, None),
    (GOOD_STATUS, None),
    ({**GOOD_STATUS, "snapshot_time": NOW - 3 * 86400}, None),
    ({**GOOD_STATUS, "snapshot": "", "snapshot_time": 0, "ok": False, "error": "bucket unreachable"}, None),
    ({**GOOD_STATUS, "ok": False, "error": "the disk is full"}, None),
    (GOOD_STATUS, {"ok": True, "at": NOW - 86400, "snapshot": "0123abcd", "details": "users 2, rooms 1, events 40"}),
    (GOOD_STATUS, {"ok": False, "at": NOW - 60, "snapshot": "0123abcd",
                   "reason": "the restored signing key differs from the live one"}),
    (GOOD_STATUS, {"ok": True, "at": NOW - 20 * 86400, "snapshot": "0123abcd", "details": ""}),
])
def test_the_host_script_judges_the_backups_as_the_installer_does(tmp_path, status, restore_test):
    """The self-test on the host (standard library only) and --check (backup/check.py) give the
    same verdicts on the same files."""
    from installer.components.backup.check import backup_checks
    from installer.components.selftest import matrix_selftest

    files = {"status_file": str(tmp_path / "status.json"), "restore_test_file": str(tmp_path / "restore-test.json")}
    for key, value in (("status_file", status), ("restore_test_file", restore_test)):
        if value is not None:
            with open(files[key], "w") as f:
                json.dump(value, f)
    cfg = matrix_selftest.Config({"server_name": "example.org", "federation_host": "matrix.example.org",
                                  "federation_port": 443, "backup": files})
    on_host = matrix_selftest.backups(cfg, NOW)
    installer = backup_checks(status, restore_test, NOW)
    assert [(c["name"], c["ok"]) for c in on_host] == [(c.name, c.ok) for c in installer]
    for mine, theirs in zip(on_host, installer):
        if not mine["ok"]:
            assert mine["fix"], mine
        if restore_test and not restore_test["ok"] and mine["name"] == "restore-test":
            assert restore_test["reason"] in mine["detail"] and restore_test["reason"] in theirs.detail
    assert matrix_selftest.backups(matrix_selftest.Config({"server_name": "x", "federation_host": "x",
                                                           "federation_port": 443}), NOW) == []


async def test_a_restore_from_another_machine_finds_the_room_in_the_hosts_config():
    """The restored self-test files name the room; this machine's state does not: the working bot
    and room are kept (and remembered), no new room is made."""
    config = json.dumps({"room_id": "!notices:example.org"}).encode()
    host = FakeHost(joined=(BOT, ADMIN), files={selftest.TOKEN_FILE: BOT_TOKEN.encode() + b"\n", selftest.CONFIG: config})
    ctx, session, _ = context(host, NOTICES)
    assert await stages.notices_room(ctx) is Status.UNCHANGED
    assert session.state.facts[selftest.ROOM] == "!notices:example.org"
    assert not any(p.endswith("/createRoom") for _, p, _ in host.requests)
