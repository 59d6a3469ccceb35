"""`--check SERVER_NAME` of a deployment this machine installed: its saved answers and state facts,
and one SSH connection to its host, made as the install made it (the host key pinned in the state
or the answers, the key pair the answers name). The one place a check-mode stage opens the
deployment's host: the backup checks (backup-age, restore-test) and the self-test's
server-health share it, and the connection is attached to the run (closed when it ends).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.engine import StageContext

CONNECT_TIMEOUT = 10.0


@dataclass
class SavedHost:
    """A deployment this machine's state knows, and whether its host could be asked."""

    answers: Answers
    facts: dict[str, Any]
    address: str = ""
    problem: str | None = None
    """Why the host could not be asked (the checks made on it fail with these words)."""
    hint: str | None = None

    @property
    def connected(self) -> bool:
        """Commands can run on the host (never in a dry run)."""
        return bool(self.address) and self.problem is None


@dataclass
class _Lookup:
    """The run's one look-up (ctx.resource): made by the first stage that asks."""

    looked: bool = False
    found: SavedHost | None = None
    connect_tried: bool = False
    notes: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Stages that read the host run side by side: the second waits for the first's connection."""


async def open_saved_host(ctx: StageContext, *, connect: bool = True) -> SavedHost | None:
    """The deployment of ctx's server name as this machine's state saved it, its host connected
    and attached to the run (unless `connect` is false: the answers and facts only); None when no
    run from here knows it (said in the log). The first call looks and connects; later ones in
    the same run get the same answer and the same connection."""
    lookup = ctx.resource(_Lookup)
    async with lookup.lock:
        if not lookup.looked:
            lookup.found = _look(ctx, lookup.notes)
            lookup.looked = True
        else:
            for note in lookup.notes:  # each stage's log says why it checks nothing on the host
                ctx.log(note)
        saved = lookup.found
        if saved is not None and connect and not lookup.connect_tried:
            lookup.connect_tried = True
            await _connect(ctx, saved)
        return saved


def _look(ctx: StageContext, notes: list[str]) -> SavedHost | None:
    from installer.answers import AnswersError, load_answers
    from installer.discovery import ANSWERS_FILE
    from installer.state import RunState, StateError

    def note(text: str) -> None:
        notes.append(text)
        ctx.log(text)

    server_name = ctx.answers.domain.server_name
    try:
        state = RunState.load(ctx.options.state_root, server_name)
    except StateError as exc:
        note(f"this machine's state for {server_name} cannot be read ({exc}): its host is not asked")
        return None
    if state.folder is None or not state.facts:
        note(f"no run of this machine's state knows {server_name}: its host is not asked")
        return None
    try:
        answers = load_answers(state.folder / ANSWERS_FILE)
    except (AnswersError, OSError):
        note(f"the answers saved for {server_name} cannot be read: its host is not asked")
        return None
    return SavedHost(answers, dict(state.facts))


async def _connect(ctx: StageContext, saved: SavedHost) -> None:
    from installer.engine import StageError
    from installer.host.connect import target_for

    server_name = ctx.answers.domain.server_name
    try:
        target = target_for(saved.answers, saved.facts, ctx.log)
    except StageError as exc:
        saved.problem, saved.hint = f"its host is not known: {exc}", exc.hint
        return
    saved.address = target.address
    if ctx.dry_run:
        ctx.log(f"connect to {target.address} (the host this machine installed {server_name} on; host key pinned in "
                "its state) to read what the checks there need", "command")
        if ctx.session.remote is None:  # the checks' commands are shown, as an install's are
            from installer.remote import RecordingRemote

            ctx.attach_remote(RecordingRemote())
        return
    from installer.ssh import SshRemote

    remote = SshRemote(target, connect_timeout=CONNECT_TIMEOUT)
    try:
        await remote.connect_once()
    except Exception as exc:  # noqa: BLE001 - any failure to connect is a host that could not be asked
        from installer.shown import error_summary

        await remote.close()
        words = str(exc) if isinstance(exc, StageError) else error_summary(exc)
        saved.problem = f"the server could not be asked over SSH ({words})"
        saved.hint = (exc.hint if isinstance(exc, StageError) and exc.hint else
                      f"check that {target.address} is up and reachable, then run the check again")
        return
    old = ctx.session.remote
    ctx.attach_remote(remote)
    if old is not None and old is not remote:
        await old.close()
    ctx.log(f"connected to {target.address} (the host this machine installed {server_name} on; host key verified "
            f"against {target.host_key_source})")
