"""How stages act on the host: the interface, and the recording back-end the dry-run uses.

Stages never build an SSH connection themselves; they call `ctx.run`, `ctx.probe`,
`ctx.read_file` and `ctx.put_file`, which go to a `Remote`. The real one is `installer.ssh`;
`RecordingRemote` prints what would be done and touches nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable, Protocol

LogFn = Callable[[str, str], None]
"""(line, kind): kind is "out", "err", "command" or "file"."""


_SHELL_SYNTAX = frozenset(";&|<>()$`*?[~#\n")
"""Characters that mean something to the shell outside quotes: operators, redirects, expansions."""


def needs_shell(command: str) -> bool:
    """Whether a command line relies on the shell beyond splitting it into words (&&, |, >, $(...),
    globs): outside quotes, as the shell reads it."""
    quote, escaped = "", False
    for ch in command:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = "" if ch == "'" else quote
        elif ch == "\\":
            escaped = True
        elif quote == '"':
            if ch in "$`":
                return True
            quote = "" if ch == '"' else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _SHELL_SYNTAX:
            return True
    return False


def shown_command(command: str, *, sudo: bool) -> str:
    """A command line as it really runs. Every command runs in `sh -c` (installer.ssh); with sudo,
    one that relies on the shell is shown as `sudo sh -c '...'`: `sudo a && b` would read as if b
    ran without sudo."""
    if not sudo:
        return command
    return f"sudo sh -c {shlex.quote(command)}" if needs_shell(command) else f"sudo {command}"


def read_command(path: str, *, sudo: bool) -> str:
    """What reading a file on the host amounts to, as a command a person could type."""
    return shown_command(f"cat -- {shlex.quote(path)}", sudo=sudo)


STDIN_NOTE = "  # input on stdin, not shown"


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class RemoteCommandError(Exception):
    """A remote command failed: its exit status and the last lines of its output."""

    def __init__(self, command: str, result: CommandResult, tail: list[str]) -> None:
        self.command = command
        self.result = result
        self.tail = tail
        last = "\n".join(f"  | {line}" for line in tail)
        super().__init__(f"`{command}` exited with status {result.exit_status}" + (f"; last output:\n{last}" if tail else ""))


class Remote(Protocol):
    async def run(
        self,
        command: str,
        *,
        log: LogFn,
        sudo: bool = False,
        check: bool = True,
        timeout: float = 900,
        input: str | None = None,
        quiet: bool = False,
        dry_output: str = "",
    ) -> CommandResult:
        """Run a shell command line; stream each output line to `log`; raise RemoteCommandError
        on a non-zero exit when `check`. `quiet` keeps the command line itself out of the log
        (its output is still streamed). `dry_output` is what the recording back-end returns."""
        ...

    async def probe(self, command: str, *, log: LogFn, sudo: bool = False) -> bool:
        """Whether a check command succeeds ("is this already so?"). The dry-run says no."""
        ...

    async def read_file(self, path: str, *, log: LogFn | None = None, sudo: bool = True) -> bytes | None:
        """The file's content, or None when it does not exist (the dry run: never there)."""
        ...

    async def put_file(
        self, path: str, data: bytes, *, log: LogFn, mode: int = 0o644, owner: str = "root:root", backup: bool = True, secret: bool = False
    ) -> bool:
        """Install a file atomically with owner and mode, backing up a different previous version.
        Returns whether anything changed. `secret` keeps the content out of the log."""
        ...

    async def close(self) -> None: ...


class RecordingRemote:
    """The dry-run back-end: logs every command and file, and pretends nothing exists yet (each
    check and read says it assumed so)."""

    def __init__(self, host: str = "HOST") -> None:
        self.host = host
        self.commands: list[str] = []

    async def run(self, command: str, *, log: LogFn, sudo: bool = False, check: bool = True, timeout: float = 900,
                  input: str | None = None, quiet: bool = False, dry_output: str = "") -> CommandResult:
        shown = shown_command(command, sudo=sudo)
        self.commands.append(shown)
        log(f"$ {shown}" + (STDIN_NOTE if input else ""), "command")
        return CommandResult(0, dry_output, "")

    async def probe(self, command: str, *, log: LogFn, sudo: bool = False) -> bool:
        shown = shown_command(command, sudo=sudo)
        self.commands.append(shown)
        log(f"? {shown}  # a dry run assumes not", "command")
        return False

    async def read_file(self, path: str, *, log: LogFn | None = None, sudo: bool = True) -> bytes | None:
        shown = read_command(path, sudo=sudo)
        self.commands.append(shown)
        if log is not None:
            log(f"? {shown}  # a dry run assumes no such file yet", "command")
        return None

    async def put_file(self, path: str, data: bytes, *, log: LogFn, mode: int = 0o644, owner: str = "root:root",
                       backup: bool = True, secret: bool = False) -> bool:
        self.commands.append(f"write {path}")
        log(f"write {path} (owner {owner}, mode {mode:04o}, {len(data)} bytes)", "file")
        if secret:
            log("    (its content is not shown: it holds secrets)", "file")
        else:
            for line in data.decode("utf-8", "replace").splitlines():
                log(f"    | {line}", "file")
        return True

    async def close(self) -> None:
        return None
