"""What the engine tells its listeners. The full-screen app and the headless reporter are two
listeners on this one stream; neither changes anything, they only show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"
    PLANNED = "planned"

    @property
    def finished_ok(self) -> bool:
        """Whether stages that need this one may go ahead."""
        return self in (Status.DONE, Status.UNCHANGED, Status.PLANNED, Status.SKIPPED)


@dataclass(frozen=True)
class StageStarted:
    stage: str
    title: str


@dataclass(frozen=True)
class StageLog:
    """One line of a stage's output. `kind` is "log" for the stage's own words, "out"/"err" for a
    remote command's output, and "command", "cloud" or "file" for what the stage does (the
    dry-run plan is made of these)."""

    stage: str
    line: str
    kind: str = "log"


@dataclass(frozen=True)
class StageProgress:
    stage: str
    text: str
    fraction: float | None = None


@dataclass(frozen=True)
class StageFinished:
    stage: str
    status: Status
    seconds: float
    error: str | None = None
    hint: str | None = None


@dataclass(frozen=True)
class StageResult:
    name: str
    title: str
    status: Status
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None


@dataclass(frozen=True)
class RunFinished:
    result: RunResult


@dataclass
class RunResult:
    mode: str
    dry_run: bool
    stages: list[StageResult]
    federation: dict[str, Any] | None = None
    shown_once: list[tuple[str, str]] | None = None
    interrupted: bool = False
    checks: list[dict[str, Any]] = field(default_factory=list)
    """What the checks after the install found, beside the federation test's own (the report's
    "checks": name, ok, detail, fix)."""
    links: list[tuple[str, str]] = field(default_factory=list)
    """(what, URL) to open once the run is done (the web client)."""

    @property
    def ok(self) -> bool:
        stages_ok = all(s.status in (Status.DONE, Status.UNCHANGED, Status.PLANNED) or (s.status is Status.SKIPPED and not s.error) for s in self.stages)
        fed_ok = self.federation is None or bool(self.federation.get("ok"))
        return stages_ok and fed_ok and not self.interrupted


Event = StageStarted | StageLog | StageProgress | StageFinished | RunFinished
Listener = Callable[[Event], None]
