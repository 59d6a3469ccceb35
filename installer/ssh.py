"""The real `Remote`: one verified asyncssh connection to the host, shared by every stage.

- The host key is checked against one known key (the answers' pin or the key cloud-init was
  given); anything else stops before authentication, so no command ever runs on a host we
  cannot vouch for.
- SSH costs are per session, not per byte: one connection is kept for the whole run, and the
  number of channels open at once is capped below sshd's `MaxSessions` (10 by default).
- Every command runs under `timeout` on the host (so a stuck command is really killed there),
  streams its output line by line to the stage's log, and fails with its exit status and the
  last lines it printed.
- A dropped connection raises the engine's `ConnectionLost`; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from installer.engine import ConnectionLost, StageError
from installer.remote import STDIN_NOTE, CommandResult, LogFn, RemoteCommandError, read_command, shown_command
from installer.shown import error_words

MAX_CHANNELS = 8
"""Channels open at once on the connection: below OpenSSH's default MaxSessions of 10."""
TAIL_LINES = 20
TIMEOUT_STATUS = 124
"""What coreutils' `timeout` exits with when it stopped the command."""
ABSENT_STATUS = 3
SUDO_PASSWORD_HINT = "sudo: a password is required"

ProgressFn = Callable[[str, "float | None"], None]


YIELD_EVERY_LINES = 200
"""Output lines handled between turns of the event loop: a read can hold ~10k short lines, and
handling them all at once stalled key presses in the guided setup for ~0.2 s (bench/logs.py)."""


class CommandTimeout(RemoteCommandError):
    """A remote command ran longer than its timeout and was stopped on the host."""

    def __init__(self, command: str, result: CommandResult, tail: list[str], seconds: float) -> None:
        super().__init__(command, result, tail)
        last = "\n".join(f"  | {line}" for line in tail)
        self.args = (f"`{command}` was stopped after {seconds:.0f} s (timeout)" + (f"; last output:\n{last}" if tail else ""),)


class SudoNeedsPassword(StageError):
    pass


class Unreachable(StageError):
    """SSH did not answer before the deadline (as opposed to answering with the wrong key)."""


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


def parse_host_key(text: str) -> asyncssh.SSHKey:
    """A public key as OpenSSH writes it ("ssh-ed25519 AAAA... [comment]"); a known_hosts line's
    leading host field is tolerated."""
    words = text.split()
    if words and not words[0].startswith(("ssh-", "ecdsa-", "sk-")) and len(words) >= 3:
        words = words[1:]
    try:
        return asyncssh.import_public_key(" ".join(words[:2]))
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise StageError(f"the host key {text[:40]!r}... cannot be read: {exc}",
                         'give it as "ssh-ed25519 AAAA...", as in /etc/ssh/ssh_host_ed25519_key.pub') from None


@dataclass(frozen=True)
class KeyToAuthorize:
    """A key pair the server does not accept yet, and where it is to log in: what the user does
    about it is said the same way when the key is made and whenever the server refuses it."""

    public_path: Path
    public_line: str
    """The public key as authorized_keys holds it ("ssh-ed25519 AAAA... matrix-installer")."""
    user: str
    host: str
    port: int

    @property
    def copy_id(self) -> str:
        port = f" -p {self.port}" if self.port != 22 else ""
        return f"ssh-copy-id -i {shlex.quote(str(self.public_path))}{port} {self.user}@{self.host}"

    def lines(self) -> list[str]:
        """The instruction, a step per line, each command whole (to copy)."""
        return [
            f"The server does not accept this key yet: add {self.public_path} to it, then continue.",
            "  From this machine, while the server still takes your password:",
            f"    {self.copy_id}",
            f"  Or on the server itself (its console), as {self.user}, add this line to ~/.ssh/authorized_keys:",
            f"    {self.public_line}",
        ]

    def hint(self, then: str) -> str:
        """The same on one line (a stage's hint)."""
        return (f"add the key to the server: {self.copy_id} (while it still takes your password), or add this line to "
                f"~{self.user}/.ssh/authorized_keys on the server: {self.public_line}; then {then}")


def key_text(key: asyncssh.SSHKey) -> str:
    """"ssh-ed25519 AAAA...": the form kept in the state file and the answers."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    user: str
    key_path: Path
    host_key: str
    """The host key to accept ("ssh-ed25519 AAAA...")."""
    host_key_source: str = "the pinned key"
    next_host_key: str = ""
    """Also accepted: the key the installer made on the host to replace the first one (a run that
    stopped while replacing it finds either)."""

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class _Client(asyncssh.SSHClient):
    """Sees the key the server presented (to show its fingerprint on a mismatch) and notices
    when the connection goes away."""

    def __init__(self, remote: SshRemote) -> None:
        self._remote = remote

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self._remote.presented_key = key
        return False  # the one trusted key was passed as known_hosts; anything else is refused

    def connection_lost(self, exc: Exception | None) -> None:
        self._remote._on_lost(exc)


_PUT_FILE = r"""set -eu
dest=$1 mode=$2 owner=$3 stamp=$4 want=$5 backup=$6
dir=$(dirname -- "$dest")
[ -d "$dir" ] || mkdir -p -- "$dir"
tmp=$(mktemp "$dir/.$(basename -- "$dest").XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
got=$(sha256sum < "$tmp" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then echo "upload damaged: sha256 $got, expected $want" >&2; exit 4; fi
chown -- "$owner" "$tmp"
chmod -- "$mode" "$tmp"
if [ -f "$dest" ] && cmp -s -- "$tmp" "$dest"; then
    if [ "$(stat -c '%a %u %g' -- "$tmp")" = "$(stat -c '%a %u %g' -- "$dest")" ]; then echo unchanged; exit 0; fi
    mv -f -- "$tmp" "$dest"; trap - EXIT; echo permissions; exit 0
fi
if [ -e "$dest" ] && [ "$backup" = 1 ]; then cp -p -- "$dest" "$dest.bak-$stamp"; echo "backup $dest.bak-$stamp"; fi
mv -f -- "$tmp" "$dest"
trap - EXIT
echo written
"""
"""Installs stdin at $1 atomically (a temp file in the same folder, renamed over it) with mode
and owner, keeping a differing previous version as $1.bak-STAMP; says what it did."""

_READ_FILE = f'if [ -e "$1" ]; then exec cat -- "$1"; else exit {ABSENT_STATUS}; fi'


class SshRemote:
    """A Remote over one SSH connection; see the module docstring."""

    def __init__(self, target: SshTarget, *, max_channels: int = MAX_CHANNELS, connect_timeout: float = 15.0,
                 keepalive: float = 15.0) -> None:
        self.target = target
        self.trusted_key = parse_host_key(target.host_key)
        self.trusted_keys = [self.trusted_key] + ([parse_host_key(target.next_host_key)] if target.next_host_key else [])
        self.presented_key: asyncssh.SSHKey | None = None
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.connections = 0
        """How many times a connection was made (1 for a run without drops)."""
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lost: Exception | None = None
        self._lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(max_channels)
        self._client_key: asyncssh.SSHKey | None = None
        self.tunnel: SshRemote | None = None
        """Connect through this remote's connection (a worker host on the main host's private network)."""

    # --- connecting -------------------------------------------------------------------
    def _load_client_key(self) -> asyncssh.SSHKey:
        if self._client_key is None:
            path = self.target.key_path
            try:
                self._client_key = asyncssh.read_private_key(str(path))
            except FileNotFoundError:
                raise StageError(f"the SSH key {path} does not exist", "the local.ssh_key stage creates it; rerun") from None
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, OSError) as exc:
                raise StageError(f"the SSH key {path} cannot be used: {exc}",
                                 "give ssh.private_key a key without a passphrase (or a new path: one is created)") from None
        return self._client_key

    def key_to_authorize(self, client_key: asyncssh.SSHKey) -> KeyToAuthorize:
        t = self.target
        line = client_key.export_public_key("openssh").decode().strip()
        return KeyToAuthorize(t.key_path.with_name(t.key_path.name + ".pub"), line, t.user, t.host, t.port)

    @property
    def server_key(self) -> asyncssh.SSHKey | None:
        """The host key the server presented on the current connection (one of the trusted ones)."""
        return self._conn.get_server_host_key() if self._conn is not None else None

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("connection closed")

    async def connect_once(self) -> None:
        """One connection attempt; host key and authentication problems become StageErrors."""
        client_key = self._load_client_key()
        self.presented_key = None
        self._lost = None
        t = self.target
        try:
            conn = await asyncssh.connect(
                t.host, t.port, username=t.user,
                tunnel=await self.tunnel._connection(None) if self.tunnel is not None else (),
                client_keys=[client_key], agent_path=None, config=None,
                known_hosts=(self.trusted_keys, [], []),
                client_factory=lambda: _Client(self),
                connect_timeout=self.connect_timeout,
                keepalive_interval=self.keepalive, keepalive_count_max=3,
            )
        except asyncssh.HostKeyNotVerifiable:
            presented = fingerprint(self.presented_key) if self.presented_key else "a key of another type"
            raise StageError(
                f"the host key of {t.host}:{t.port} does not match: the server presented {presented}, "
                f"but {t.host_key_source} is {fingerprint(self.trusted_key)}. Nothing was run on the host.",
                "if the server was rebuilt, read its key on the console (sudo cat /etc/ssh/ssh_host_ed25519_key.pub) "
                "and put it in ssh.host_key; otherwise someone may be intercepting the connection",
            ) from None
        except asyncssh.PermissionDenied:
            raise StageError(
                f"{t.address} refused the key {t.key_path}",
                f"{self.key_to_authorize(client_key).hint('rerun')} (or check ssh.user)",
            ) from None
        self._conn = conn
        self.connections += 1

    async def wait_until_up(self, *, deadline: float, progress: ProgressFn | None = None,
                            retry_auth: bool = False, every: float = 3.0) -> None:
        """Connect, retrying until `deadline` (time.monotonic()) while the host is not up yet,
        with a countdown. Host key problems stop at once; refused keys too unless `retry_auth`
        (a fresh cloud VM whose cloud-init has not installed the key yet)."""
        total = max(deadline - time.monotonic(), 1.0)
        last_error = ""
        while True:
            try:
                await self.connect_once()
                if progress:
                    progress(f"connected to {self.target.address}", 1.0)
                return
            except StageError as exc:
                if not (retry_auth and "refused the key" in str(exc)):
                    raise
                last_error = str(exc)
            except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
                last_error = error_words(exc)  # "the connection was lost", not "ConnectionLost: ..."
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unreachable(
                    f"SSH on {self.target.host}:{self.target.port} did not answer in time ({last_error})",
                    "check that the host is running, its address and port, and that the firewalls let port "
                    f"{self.target.port} in; then rerun",
                )
            if progress:
                progress(f"waiting for SSH on {self.target.host}:{self.target.port}: {left:.0f} s left ({last_error})",
                         1.0 - left / total)
            await asyncio.sleep(min(every, left))

    async def _connection(self, log: LogFn | None) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None and self._lost is None:
                return self._conn
            if self._conn is not None:
                self._conn.abort()
                self._conn = None
            try:
                await self.wait_until_up(deadline=time.monotonic() + 30)
            except Unreachable as exc:  # a changed host key or a refused client key propagate: no retry helps
                raise ConnectionLost(f"cannot reconnect to {self.target.address}: {exc}") from None
            if log:
                log(f"reconnected to {self.target.address}", "log")
            assert self._conn is not None
            return self._conn

    def _drop(self, conn: asyncssh.SSHClientConnection, why: object) -> ConnectionLost:
        if self._conn is conn:
            self._lost = self._lost or ConnectionResetError(str(why))
        words = error_words(why) if isinstance(why, BaseException) else why
        return ConnectionLost(f"the SSH connection to {self.target.host} dropped: {words}")

    # --- running ----------------------------------------------------------------------
    @staticmethod
    def _wrap(command: str, *, sudo: bool, timeout: float) -> str:
        line = f"timeout -k 10 {max(1, int(timeout))} sh -c {shlex.quote(command)}"
        return f"sudo -n -- {line}" if sudo else line

    async def _open(self, conn: asyncssh.SSHClientConnection, line: str) -> asyncssh.SSHClientProcess[bytes]:
        for attempt in range(4):
            try:
                return await conn.create_process(line, encoding=None)
            except asyncssh.ChannelOpenError as exc:
                # Another client on the same host may hold sessions; back off briefly.
                if self._lost is not None or attempt == 3:
                    raise self._drop(conn, exc) if self._lost is not None else exc
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def execute(self, line: str, *, stdin: bytes | None, timeout: float,
                      on_line: LogFn | None, out_kind: str = "out", err_kind: str = "err",
                      ) -> tuple[int, bytes, bytes, list[str]]:
        """Run an already-wrapped command line: (exit status, stdout, stderr, last lines)."""
        conn = await self._connection(on_line)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        outputs: dict[str, list[bytes]] = {"out": [], "err": []}

        async def pump(stream: asyncssh.SSHReader[bytes], which: str, kind: str) -> None:
            pending = b""

            def emit(raw: bytes) -> None:
                text = raw.decode("utf-8", "replace").rstrip("\r").rsplit("\r", 1)[-1]
                tail.append(text)
                if on_line is not None:
                    on_line(text, kind)

            while chunk := await stream.read(65536):
                outputs[which].append(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for count, raw in enumerate(lines, start=1):
                    emit(raw)
                    if count % YIELD_EVERY_LINES == 0:
                        await asyncio.sleep(0)  # a flood of output must not freeze the screen's loop
            if pending:
                emit(pending)

        async with self._channels:
            try:
                proc = await self._open(conn, line)
                try:
                    try:
                        if stdin:
                            proc.stdin.write(stdin)
                        proc.stdin.write_eof()
                    except BrokenPipeError:
                        pass  # the command exited without reading it all: its status says how it went
                    await asyncio.wait_for(
                        asyncio.gather(pump(proc.stdout, "out", out_kind), pump(proc.stderr, "err", err_kind)),
                        timeout + 30,  # a backstop: `timeout` on the host normally stops it first
                    )
                    await proc.wait_closed()
                except asyncio.TimeoutError:
                    proc.close()
                    return TIMEOUT_STATUS, b"".join(outputs["out"]), b"".join(outputs["err"]), list(tail)
                finally:
                    proc.close()
            except (asyncssh.DisconnectError, asyncssh.ConnectionLost, ConnectionError) as exc:
                raise self._drop(conn, exc) from None
        status = proc.exit_status
        if status is None:
            if self._lost is not None or self._conn is not conn:
                raise self._drop(conn, self._lost or "closed")
            signal = proc.exit_signal
            status = 128 + 9 if signal else 255
        return status, b"".join(outputs["out"]), b"".join(outputs["err"]), list(tail)

    async def run(self, command: str, *, log: LogFn, sudo: bool = False, check: bool = True, timeout: float = 900,
                  input: str | None = None, quiet: bool = False, dry_output: str = "") -> CommandResult:
        shown = shown_command(command, sudo=sudo)
        if not quiet:
            log(f"$ {shown}" + (STDIN_NOTE if input else ""), "command")
        return await self._run(command, shown if not quiet else "(a command kept out of the log)", log=log, sudo=sudo,
                               check=check, timeout=timeout, stdin=input.encode() if input is not None else None)

    async def _run(self, command: str, shown: str, *, log: LogFn | None, sudo: bool, check: bool, timeout: float,
                   stdin: bytes | None, out_kind: str = "out", err_kind: str = "err") -> CommandResult:
        started = time.monotonic()
        status, out, err, tail = await self.execute(
            self._wrap(command, sudo=sudo, timeout=timeout), stdin=stdin, timeout=timeout, on_line=log,
            out_kind=out_kind, err_kind=err_kind,
        )
        result = CommandResult(status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if sudo and status != 0 and SUDO_PASSWORD_HINT in result.stderr:
            raise sudo_needs_password(self.target)
        if status == TIMEOUT_STATUS and time.monotonic() - started >= timeout - 1:
            raise CommandTimeout(_first_line(shown), result, tail, timeout)
        if check and status != 0:
            raise RemoteCommandError(_first_line(shown), result, tail)
        return result

    async def probe(self, command: str, *, log: LogFn, sudo: bool = False) -> bool:
        shown = shown_command(command, sudo=sudo)
        log(f"? {shown}", "debug")
        result = await self._run(command, shown, log=log, sudo=sudo, check=False, timeout=120, stdin=None,
                                 out_kind="debug", err_kind="debug")
        return result.ok

    async def read_file(self, path: str, *, log: LogFn | None = None, sudo: bool = True) -> bytes | None:
        if log is not None:
            log(f"$ {read_command(path, sudo=sudo)}", "command")
        line = self._wrap(f"{_READ_FILE}", sudo=sudo, timeout=120) + f" sh {shlex.quote(path)}"
        status, out, err, tail = await self.execute(line, stdin=None, timeout=120, on_line=None)
        if status == ABSENT_STATUS:
            return None
        if status != 0:
            if sudo and SUDO_PASSWORD_HINT.encode() in err:
                raise sudo_needs_password(self.target)
            raise RemoteCommandError(f"read {path}", CommandResult(status, "", err.decode("utf-8", "replace")), tail)
        return out

    async def put_file(self, path: str, data: bytes, *, log: LogFn, mode: int = 0o644, owner: str = "root:root",
                       backup: bool = True, secret: bool = False) -> bool:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args = [path, f"{mode:04o}", owner, stamp, hashlib.sha256(data).hexdigest(), "1" if backup else "0"]
        line = self._wrap(_PUT_FILE, sudo=True, timeout=120) + " sh " + " ".join(shlex.quote(a) for a in args)
        status, out, err, tail = await self.execute(line, stdin=data, timeout=120, on_line=None)
        if status != 0:
            if SUDO_PASSWORD_HINT.encode() in err:
                raise sudo_needs_password(self.target)
            raise RemoteCommandError(f"write {path}", CommandResult(status, "", err.decode("utf-8", "replace")), tail)
        said = out.decode().split()
        what = said[-1] if said else "written"
        summary = {"unchanged": "unchanged", "permissions": "owner/mode fixed", "written": "written"}.get(what, what)
        log(f"write {path} (owner {owner}, mode {mode:04o}, {len(data)} bytes): {summary}", "file")
        if "backup" in said:
            log(f"    previous version kept as {said[said.index('backup') + 1]}", "file")
        return what != "unchanged"

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (asyncio.TimeoutError, OSError, asyncssh.Error):
                pass


def _first_line(command: str) -> str:
    lines = command.strip().splitlines() or [""]
    return lines[0] + (" ..." if len(lines) > 1 else "")


def sudo_needs_password(target: SshTarget) -> SudoNeedsPassword:
    return SudoNeedsPassword(
        f"sudo on {target.host} wants a password for {target.user}: the installer needs sudo without a password",
        f"on the host, as root: echo '{target.user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-matrix-installer "
        "&& chmod 0440 /etc/sudoers.d/90-matrix-installer (Oracle's images already have this for ubuntu)",
    )



