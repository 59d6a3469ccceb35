"""--check of a deployment this machine installed: installer.host.saved opens its host once, from
the saved answers and the pinned host key, for every check made there (the backup's and the
self-test's); a host that cannot be asked fails those checks with the same words, after one try."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from installer.answers import Answers
from installer.components import selftest
from installer.components.backup.check import state_checks
from installer.components.federation.host_side import server_health
from installer.discovery import ANSWERS_FILE
from installer.engine import RunOptions, Session, Stage, StageContext, StageError
from installer.host import saved as saved_module
from installer.remote import CommandResult
from installer.state import RunState
from tests.fixtures.cli import HOST_KEY
from tests.unit.test_backup import S3_TOML, answers_file

SERVER = "example.org"


class FakeSsh:
    """installer.ssh.SshRemote as the helper uses it: one connect, then commands."""

    made: list[FakeSsh] = []
    refuse: Exception | None = None

    def __init__(self, target, *, connect_timeout: float = 15.0) -> None:
        self.target, self.connect_timeout = target, connect_timeout
        self.connects, self.commands, self.closed = 0, [], False
        FakeSsh.made.append(self)

    async def connect_once(self) -> None:
        self.connects += 1
        if FakeSsh.refuse is not None:
            raise FakeSsh.refuse

    async def run(self, command, *, log, sudo=False, check=True, timeout=900, input=None, quiet=False, dry_output=""):
        self.commands.append(command)
        if command.startswith("systemctl show"):
            last = {"at": int(time.time()) - 120, "ok": True, "checks": [{"name": "tls@1.2.3.4:443", "ok": True,
                                                                           "detail": "fine"}]}
            return CommandResult(0, "LoadState=loaded\nActiveState=active\n---\n" + json.dumps(last), "")
        now = int(time.time())
        status = {"ok": True, "at": now - 600, "snapshot": "0123abcdef", "snapshot_time": now - 600, "period": 86400}
        return CommandResult(0, json.dumps(status) + "\n--\n\n--\n" + str(now), "")

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_ssh(monkeypatch):
    import installer.ssh

    FakeSsh.made, FakeSsh.refuse = [], None
    monkeypatch.setattr(installer.ssh, "SshRemote", FakeSsh)
    return FakeSsh


def installed_here(tmp_path: Path, *, facts: dict | None = None, backup: str = S3_TOML) -> Path:
    """This machine's state for SERVER as an install leaves it: the answers and the facts."""
    root = tmp_path / "state"
    folder = root / SERVER
    folder.mkdir(parents=True)
    (folder / ANSWERS_FILE).write_text(answers_file(tmp_path, backup).read_text())
    state = RunState.load(root, SERVER)
    for key, value in {"host.host_key": HOST_KEY, selftest.DEPLOYED: True, **(facts or {})}.items():
        state.remember(key, value)
    return root


def check_mode(root: Path, name: str, *, dry_run: bool = False, session: Session | None = None):
    if session is None:
        answers = Answers().replace("domain", server_name=SERVER, matrix_host=SERVER)
        session = Session(answers, RunState.in_memory(), RunOptions(mode="check", state_dir=root, dry_run=dry_run))
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(getattr(e, "line", "")))
    return StageContext(session, Stage(name, "", lambda ctx: None)), session, lines


async def test_the_backup_and_self_test_checks_share_one_connection_made_as_the_install_did(tmp_path, fake_ssh):
    root = installed_here(tmp_path)
    ctx, session, lines = check_mode(root, "backup.age")
    found = await state_checks(ctx)
    assert [(c.name, c.ok) for c in found] == [("backup-age", True), ("restore-test", True)]
    (remote,) = fake_ssh.made
    assert remote.connects == 1 and session.remote is remote
    # The saved answers' address and key pair, the host key pinned in the state.
    assert remote.target.host == "203.0.113.7" and remote.target.host_key == HOST_KEY
    assert remote.target.host_key_source == "the pinned key (ssh.host_key in the answers)"
    assert remote.connect_timeout == saved_module.CONNECT_TIMEOUT
    assert any("connected to ubuntu@203.0.113.7:22 (the host this machine installed example.org on" in line for line in lines)

    later, _, _ = check_mode(root, "federation.check", session=session)
    saved = await saved_module.open_saved_host(later)
    assert saved is not None and saved.connected and saved.facts[selftest.DEPLOYED] is True
    health = await server_health(later, saved.facts)
    assert health.ok and "passed 1 checks" in health.detail
    assert len(fake_ssh.made) == 1 and remote.connects == 1  # the same connection, not a second one


async def test_a_host_that_cannot_be_asked_fails_the_checks_made_there_after_one_try(tmp_path, fake_ssh):
    root = installed_here(tmp_path)
    fake_ssh.refuse = StageError("203.0.113.7:22 refused the key /home/me/.ssh/id_ed25519", "add the key")
    ctx, session, _ = check_mode(root, "backup.age")
    (check,) = await state_checks(ctx)
    assert not check.ok and check.detail == ("the server could not be asked over SSH "
                                             "(203.0.113.7:22 refused the key /home/me/.ssh/id_ed25519)")
    assert check.fix == "add the key" and session.remote is None and fake_ssh.made[0].closed
    later, _, _ = check_mode(root, "federation.check", session=session)
    saved = await saved_module.open_saved_host(later)
    assert saved.problem == check.detail and not saved.connected
    assert len(fake_ssh.made) == 1 and fake_ssh.made[0].connects == 1

    fake_ssh.made, fake_ssh.refuse = [], OSError(113, "No route to host")
    ctx, _, _ = check_mode(root, "backup.age")
    (check,) = await state_checks(ctx)
    assert check.detail.startswith("the server could not be asked over SSH (") and "route to host" in check.detail.lower()
    assert check.fix == "check that ubuntu@203.0.113.7:22 is up and reachable, then run the check again"


async def test_a_server_this_machine_did_not_install_is_not_asked(tmp_path, fake_ssh):
    ctx, _, lines = check_mode(tmp_path / "state", "backup.age")
    assert await state_checks(ctx) is None
    later, _, later_lines = check_mode(tmp_path / "state", "federation.check", session=ctx.session)
    assert await saved_module.open_saved_host(later) is None
    assert fake_ssh.made == []
    said = "no run of this machine's state knows example.org: its host is not asked"
    assert said in lines and said in later_lines  # each stage's log says why


async def test_a_dry_run_says_where_it_would_connect_and_connects_nowhere(tmp_path, fake_ssh):
    root = installed_here(tmp_path)
    ctx, _, lines = check_mode(root, "backup.age", dry_run=True)
    assert await state_checks(ctx) == []
    assert fake_ssh.made == []
    assert any(line.startswith("connect to ubuntu@203.0.113.7:22 (the host this machine installed example.org on") for line in lines)
    assert any(line == "read /opt/matrix/restic/status.json and /opt/matrix/restic/restore-test.json on ubuntu@203.0.113.7:22"
               for line in lines)


async def test_check_mode_reports_server_health_beside_the_test_and_fails_after_it(tmp_path, fake_ssh, monkeypatch):
    """A host that cannot be asked: the federation test still runs (its own checks in "federation"),
    server-health fails in the report's "checks", and the stage fails for it afterwards."""
    import installer.federation
    from installer.components.federation import check as stage
    from installer.federation.report import Check, FederationReport

    async def passing_test(server_name, **_):
        return FederationReport(server_name, [Check("well-known", True, "m.server = matrix.example.org:443")])

    async def no_outbound(ctx, **_):
        return Check("outbound", True, "not tested: no peer to reach (--peer none)", warning=True)

    monkeypatch.setattr(installer.federation, "run_check", passing_test)
    monkeypatch.setattr(stage, "outbound", no_outbound)
    root = installed_here(tmp_path)
    fake_ssh.refuse = OSError(113, "No route to host")
    ctx, session, _ = check_mode(root, "federation.check")
    with pytest.raises(StageError) as failed:
        await stage.check(ctx)
    assert str(failed.value).startswith("federation works, but server-health failed (the server could not be asked")
    assert session.federation["ok"] is True
    assert [c["name"] for c in session.federation["checks"]] == ["well-known", "outbound"]
    (health,) = session.checks
    assert health["name"] == "server-health" and health["ok"] is False

    fake_ssh.made, fake_ssh.refuse = [], None  # reachable: the last self-test passed
    ctx, session, _ = check_mode(root, "federation.check")
    await stage.check(ctx)
    (health,) = session.checks
    assert health["ok"] is True and "passed 1 checks" in health["detail"] and "warning" not in health


async def test_without_off_box_backups_the_backup_stage_connects_nowhere(tmp_path, fake_ssh):
    root = installed_here(tmp_path, backup='target = "none"')
    ctx, session, lines = check_mode(root, "backup.age")
    assert await state_checks(ctx) is None
    assert fake_ssh.made == [] and "this server's answers send no backups off the box: backup-age is not checked" in lines
    later, _, later_lines = check_mode(root, "federation.check", session=session)
    saved = await saved_module.open_saved_host(later)
    assert saved.connected and len(fake_ssh.made) == 1 and session.remote is fake_ssh.made[0]
    assert any(line.startswith("connected to ubuntu@203.0.113.7:22") for line in later_lines)
