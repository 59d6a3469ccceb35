"""The SSH layer (installer.ssh) against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from installer.engine import ConnectionLost, StageError
from installer.remote import RemoteCommandError
from installer.ssh import CommandTimeout, SshRemote, SshTarget, SudoNeedsPassword
from tests.fixtures.sshd import SshdServer, _keygen


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[float, str, str]] = []

    def __call__(self, line: str, kind: str) -> None:
        self.lines.append((time.monotonic(), line, kind))

    def of(self, *kinds: str) -> list[str]:
        return [line for _, line, kind in self.lines if kind in kinds]


def target(server: SshdServer, *, user: str | None = None, host_key: str | None = None) -> SshTarget:
    return SshTarget(server.host, server.port, user or server.user, server.client_key, host_key or server.host_key)


@pytest.fixture
async def remote(sshd_server):
    r = SshRemote(target(sshd_server))
    await r.connect_once()
    yield r
    await r.close()


async def test_output_is_streamed_line_by_line_as_it_arrives(remote):
    log = Log()
    started = time.monotonic()
    result = await remote.run("echo first; echo oops >&2; sleep 1; printf 'second\\nlast-no-newline'", log=log)
    assert result.ok and result.stdout == "first\nsecond\nlast-no-newline"
    assert log.of("command") == ["$ echo first; echo oops >&2; sleep 1; printf 'second\\nlast-no-newline'"]
    assert log.of("out") == ["first", "second", "last-no-newline"]
    assert log.of("err") == ["oops"]
    first_at = next(t for t, line, _ in log.lines if line == "first")
    second_at = next(t for t, line, _ in log.lines if line == "second")
    assert first_at - started < 0.9 and second_at - first_at > 0.8  # "first" came before the sleep ended


async def test_failure_carries_exit_status_and_last_lines(remote):
    with pytest.raises(RemoteCommandError) as caught:
        await remote.run("for i in $(seq 1 30); do echo line$i; done; echo boom >&2; exit 3", log=Log())
    err = caught.value
    assert err.result.exit_status == 3
    assert err.tail[-2:] == ["line30", "boom"] and len(err.tail) == 20
    assert "status 3" in str(err) and "| boom" in str(err)
    unchecked = await remote.run("exit 5", log=Log(), check=False)
    assert unchecked.exit_status == 5


async def test_timeout_stops_the_command_on_the_host(remote, sshd_server):
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        await remote.run("echo started; sleep 47", log=Log(), timeout=2)
    assert 1.5 < time.monotonic() - started < 15
    assert "timeout" in str(caught.value) and caught.value.tail == ["started"]
    await asyncio.sleep(0.5)
    ps = subprocess.run(["ps", "-u", sshd_server.user, "-o", "args="], capture_output=True, text=True).stdout
    assert "sleep 47" not in ps


async def test_stdin_input_and_sudo(remote):
    result = await remote.run("cat; id -un", log=Log(), input="from stdin\n", sudo=True)
    assert result.stdout == "from stdin\nroot\n"
    log = Log()
    await remote.run("echo hidden-cmd", log=log, quiet=True)
    assert log.of("command") == [] and log.of("out") == ["hidden-cmd"]
    assert await remote.probe("test -d /", log=Log()) is True
    assert await remote.probe("test -d /nonexistent", log=Log()) is False


async def test_sudo_that_wants_a_password_is_reported_clearly(sshd_server):
    r = SshRemote(target(sshd_server, user=sshd_server.nosudo_user))
    await r.connect_once()
    try:
        with pytest.raises(SudoNeedsPassword) as caught:
            await r.run("true", log=Log(), sudo=True)
        assert "wants a password" in str(caught.value) and sshd_server.nosudo_user in str(caught.value)
        assert "NOPASSWD" in caught.value.hint
    finally:
        await r.close()


async def test_host_key_mismatch_stops_before_authentication_with_both_fingerprints(sshd_server, tmp_path):
    other = _keygen(tmp_path / "other", "other")
    before = sshd_server.accepted_logins()
    r = SshRemote(target(sshd_server, host_key=other))
    with pytest.raises(StageError) as caught:
        await r.wait_until_up(deadline=time.monotonic() + 5)
    message = str(caught.value)
    import asyncssh

    presented = asyncssh.import_public_key(sshd_server.host_key).get_fingerprint("sha256")
    pinned = asyncssh.import_public_key(other).get_fingerprint("sha256")
    assert presented in message and pinned in message and "does not match" in message
    assert "ssh_host_ed25519_key.pub" in caught.value.hint
    time.sleep(0.2)
    assert sshd_server.accepted_logins() == before  # no login, so no command, ever happened
    assert r.connections == 0


async def test_refused_client_key_is_reported(sshd_server, tmp_path):
    _keygen(tmp_path / "stranger", "stranger")
    t = SshTarget(sshd_server.host, sshd_server.port, sshd_server.user, tmp_path / "stranger", sshd_server.host_key)
    with pytest.raises(StageError) as caught:
        await SshRemote(t).connect_once()
    assert "refused the key" in str(caught.value)
    # What to do, said exactly as when the key was made: the command, and the line for authorized_keys.
    public = (tmp_path / "stranger.pub").read_text().strip()
    hint = caught.value.hint or ""
    assert f"ssh-copy-id -i {tmp_path / 'stranger.pub'} -p {sshd_server.port} {sshd_server.user}@{sshd_server.host}" in hint
    assert f"~{sshd_server.user}/.ssh/authorized_keys on the server: {public}" in hint


async def test_wait_for_ssh_counts_down_then_gives_up(sshd_server):
    from tests.fixtures.sshd import _free_port

    t = SshTarget("127.0.0.1", _free_port(), "x", sshd_server.client_key, sshd_server.host_key)
    shown: list[tuple[str, float | None]] = []
    with pytest.raises(StageError) as caught:
        await SshRemote(t).wait_until_up(deadline=time.monotonic() + 2.5, progress=lambda s, f: shown.append((s, f)), every=0.5)
    assert "did not answer in time" in str(caught.value)
    assert len(shown) >= 3 and "s left" in shown[0][0]


async def test_upload_is_atomic_with_owner_mode_backup_and_unchanged_detection(remote, tmp_path):
    folder = tmp_path / "etc"
    path = folder / "app.conf"
    log = Log()
    assert await remote.put_file(str(path), b"one\n", log=log, mode=0o640, owner=f"root:{remote.target.user}") is True
    st = path.stat()
    assert path.read_bytes() == b"one\n" and st.st_mode & 0o777 == 0o640 and st.st_uid == 0
    assert log.of("file") == [f"write {path} (owner root:{remote.target.user}, mode 0640, 4 bytes): written"]
    # Same content: nothing written, nothing backed up.
    mtime = path.stat().st_mtime_ns
    assert await remote.put_file(str(path), b"one\n", log=log, mode=0o640, owner=f"root:{remote.target.user}") is False
    assert path.stat().st_mtime_ns == mtime and list(folder.glob("*.bak-*")) == []
    # Different content: the old one is kept beside it, the new one replaces it in one rename.
    assert await remote.put_file(str(path), b"two\n", log=log, mode=0o600) is True
    backups = list(folder.glob("app.conf.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == b"one\n"
    assert path.read_bytes() == b"two\n" and path.stat().st_mode & 0o777 == 0o600
    assert any("previous version kept as" in line for line in log.of("file"))
    # Same content, other mode: fixed without a backup.
    assert await remote.put_file(str(path), b"two\n", log=log, mode=0o644) is True
    assert path.stat().st_mode & 0o777 == 0o644 and len(list(folder.glob("app.conf.bak-*"))) == 1
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp file left
    # Secrets: the content never reaches the log.
    log = Log()
    await remote.put_file(str(folder / "secret"), b"s3cret-value", log=log, mode=0o600, secret=True)
    assert not any("s3cret" in line for _, line, _ in log.lines)


async def test_read_file(remote, tmp_path):
    (tmp_path / "f").write_bytes(b"\x00binary\xff")
    assert await remote.read_file(str(tmp_path / "f")) == b"\x00binary\xff"
    assert await remote.read_file(str(tmp_path / "missing")) is None
    with pytest.raises(RemoteCommandError):
        await remote.read_file(str(tmp_path))  # a folder


async def test_dropped_connection_raises_connection_lost_then_reconnects(remote, sshd_server):
    assert (await remote.run("echo before", log=Log())).stdout == "before\n"
    running = asyncio.create_task(remote.run("sleep 20", log=Log()))
    await asyncio.sleep(1)
    assert sshd_server.drop_connections() >= 1
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(running, 20)
    log = Log()
    assert (await remote.run("echo after", log=log)).stdout == "after\n"
    assert remote.connections == 2 and any("reconnected" in line for line in log.of("log"))
    # A drop between commands is noticed too, and the next command just reconnects.
    sshd_server.drop_connections()
    await asyncio.sleep(0.5)
    assert (await remote.run("echo again", log=Log())).stdout == "again\n"
    assert remote.connections == 3


async def test_more_concurrent_commands_than_max_sessions(remote):
    results = await asyncio.gather(*(remote.run(f"sleep 0.3; echo {i}", log=Log()) for i in range(25)))
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(25)]
    assert remote.connections == 1


async def test_engine_retries_a_stage_once_after_a_drop_and_the_retry_reconnects(sshd_server):
    from installer.answers import Answers
    from installer.engine import Engine, RunOptions, Session, Stage
    from installer.events import Status
    from installer.state import RunState

    r = SshRemote(target(sshd_server))
    await r.connect_once()
    session = Session(answers=Answers(), state=RunState(None), options=RunOptions(), remote=r)
    attempts: list[int] = []

    async def stage(ctx):
        attempts.append(r.connections)
        if len(attempts) == 1:
            running = asyncio.create_task(ctx.run("sleep 20"))
            await asyncio.sleep(0.5)
            sshd_server.drop_connections()
            await running
        await ctx.run("echo second try")
        return Status.DONE

    try:
        result = await Engine([Stage("host.test", "test", stage)], session).run()
    finally:
        await r.close()
    assert result.stages[0].status is Status.DONE
    assert attempts == [1, 1] and r.connections == 2  # the retry's first command reconnected
