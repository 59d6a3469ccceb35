"""The deployment's host as this machine's saved state knows it, for `--check SERVER_NAME`: the
answers saved beside the state (SSH user, port, key, any pinned host key) and the facts of its
runs (the address, the host key pinned after the first verified connection).

The one place `--check` reaches the host from: every check that reads it (the server's health,
the backups' age) asks here. The first to ask connects, with a short timeout and only to the pinned
key (host.connect.ssh_target, as an install's host.ssh does); the others use that connection, and a
host that did not answer is said once and not waited for again. The engine closes the connection
at the end of the run, as it does an install's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from installer.engine import StageError

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.engine import StageContext
    from installer.remote import Remote
    from installer.ssh import SshTarget

CONNECT_SECONDS = 15.0
"""How long `--check` waits for SSH: a host that is down must not hold up the federation test."""


class NotKnown(Exception):
    """This machine's state cannot say where the server is: why, in words."""


@dataclass(frozen=True)
class SavedDeployment:
    server_name: str
    answers: Answers
    facts: dict[str, Any] = field(default_factory=dict)

    def target(self, ctx: StageContext) -> SshTarget:
        """Where to connect and which host key to accept (a StageError when it cannot be vouched for)."""
        from installer.host.connect import ssh_target

        shim = SimpleNamespace(answers=self.answers, facts=self.facts, log=ctx.log, dry_run=ctx.dry_run)
        return ssh_target(shim)  # type: ignore[arg-type]


def saved_deployment(ctx: StageContext) -> SavedDeployment:
    """The server `--check` was given, as a run on this machine left it; NotKnown when none did."""
    from installer.answers import AnswersError, load_answers
    from installer.discovery import ANSWERS_FILE
    from installer.state import RunState, StateError

    server_name = ctx.answers.domain.server_name
    try:
        state = RunState.load(ctx.options.state_root, server_name)
    except StateError as exc:
        raise NotKnown(f"this machine's state for {server_name} cannot be read ({exc})") from None
    path = state.folder / ANSWERS_FILE if state.folder is not None else None
    if path is None or not path.exists():
        raise NotKnown(f"this machine did not install {server_name} (no answers saved in its state)")
    try:
        answers = load_answers(path)
    except (AnswersError, OSError) as exc:
        raise NotKnown(f"the answers saved in this machine's state for {server_name} cannot be read "
                       f"({str(exc).splitlines()[0][:200]})") from None
    return SavedDeployment(server_name, answers, dict(state.facts))


class _Connection:
    """The run's one connection to the saved deployment's host (a session resource)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.remote: Remote | None = None
        self.failure: str | None = None
        self.hint: str | None = None


async def connect(ctx: StageContext, target: SshTarget) -> Remote:
    """The run's connection to `target`: made by the first check that asks, shared by the rest.
    A dry run says where it would connect and returns a recording remote (the run's). Raises
    StageError (in words) when the host cannot be reached or presents another key."""
    if ctx.dry_run:
        ctx.log(f"connect to {target.address}, accepting only {target.host_key_source}", "command")
        if ctx.session.remote is None:  # a check's session has none
            from installer.remote import RecordingRemote

            ctx.attach_remote(RecordingRemote())
        return ctx.remote
    shared = ctx.resource(_Connection)
    async with shared.lock:
        if shared.remote is None and shared.failure is None:
            from installer.shown import error_summary
            from installer.ssh import SshRemote, Unreachable

            remote = SshRemote(target, connect_timeout=CONNECT_SECONDS)
            try:
                await remote.wait_until_up(deadline=time.monotonic() + CONNECT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - any failure to connect is said, in words
                await remote.close()
                shared.failure = (str(exc) if isinstance(exc, StageError) else error_summary(exc)).splitlines()[0][:300]
                shared.hint = exc.hint if isinstance(exc, StageError) and not isinstance(exc, Unreachable) else None
            else:
                shared.remote = remote
                ctx.attach_remote(remote)  # closed by the engine at the end of the run
    if shared.failure is not None:
        raise StageError(f"{target.address} cannot be reached over SSH ({shared.failure})",
                         shared.hint or f"check that {target.address} is up and reachable, then run the check again")
    assert shared.remote is not None
    return shared.remote
