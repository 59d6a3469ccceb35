"""How a run reaches the person running it: one interface, filled in by each front-end.

Stages never ask a front-end directly; they call their context (`ctx.confirm`, `ctx.skippable`),
which goes here. The headless run has nobody to ask: a failed stage fails, a question has no
answer (the stage says what it did instead), and a wait cannot be cut short. The guided setup
answers with dialogs and a key on the run's screen.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from installer.engine import Stage

Decision = Literal["retry", "skip", "fail"]


class Interaction(Protocol):
    asks: bool
    """Whether someone is there to answer questions (a dry run says what a real run would ask)."""

    async def decide(self, stage: Stage, error: str, hint: str | None) -> Decision:
        """What to do about a failed stage."""
        ...

    async def confirm(self, question: str, *, yes: str = "Yes", no: str = "No") -> bool | None:
        """Yes or no (worded `yes` and `no`); None when there is nobody to ask."""
        ...

    def offer_skip(self, stage: str, what: str) -> asyncio.Event | None:
        """A long wait (`what`: "waiting for DNS") the person may cut short: the event is set when
        they do. None when nobody can."""
        ...

    def withdraw_skip(self, stage: str) -> None:
        """The wait is over: the offer goes."""
        ...


class Headless:
    """Nobody to ask: the answers file decides everything."""

    asks = False

    async def decide(self, stage: Stage, error: str, hint: str | None) -> Decision:
        return "fail"

    async def confirm(self, question: str, *, yes: str = "Yes", no: str = "No") -> bool | None:
        return None

    def offer_skip(self, stage: str, what: str) -> asyncio.Event | None:
        return None

    def withdraw_skip(self, stage: str) -> None:
        return None


class SkippableWait:
    """A wait the person may stop (see Interaction.offer_skip): `pause` sleeps up to a given time,
    returning early when asked to stop; `stopped` says whether they did."""

    def __init__(self, interaction: Interaction, stage: str, what: str, *, dry_run: bool = False) -> None:
        self._interaction = interaction
        self._stage = stage
        self._what = what
        self._dry_run = dry_run
        self._event: asyncio.Event | None = None

    def __enter__(self) -> SkippableWait:
        self._event = self._interaction.offer_skip(self._stage, self._what)
        return self

    def __exit__(self, *exc: object) -> None:
        self._interaction.withdraw_skip(self._stage)

    @property
    def stopped(self) -> bool:
        return self._event is not None and self._event.is_set()

    async def pause(self, seconds: float) -> None:
        if self._dry_run or seconds <= 0:
            return
        if self._event is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            pass
