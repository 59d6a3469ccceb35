"""The engine: stages with declared dependencies, run concurrently where independent.

A stage is a small async function: check what is there, change only what differs, and return
`Status.DONE` or `Status.UNCHANGED` (or `Status.SKIPPED` when it does not apply). It reports
through its `StageContext`; it fails by raising `StageError` (message + what to do next).
"""

from __future__ import annotations

import asyncio
import functools
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from installer.answers import Answers, in_words
from installer.interaction import Decision, Headless, Interaction, SkippableWait
from installer.events import (
    Listener,
    RunFinished,
    RunResult,
    StageFinished,
    StageLog,
    StageProgress,
    StageResult,
    StageStarted,
    Status,
)
from installer.options import RunOptions
from installer.remote import CommandResult, Remote, RemoteCommandError
from installer.secrets import LineMasker, Secrets
from installer.shown import error_summary, escape
from installer.state import RunState

if TYPE_CHECKING:
    from installer.deployment import Deployment

StageFn = Callable[["StageContext"], Awaitable["Status | None"]]
T = TypeVar("T")

__all__ = ["Decision", "Engine", "Session", "Stage", "StageContext", "StageError"]


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: StageFn
    needs: tuple[str, ...] = ()
    skippable: bool = False
    """Whether the guided setup may offer "Skip" after a failure (nothing later depends on it being right)."""
    gives: tuple[type, ...] = ()
    """Typed outputs the stage hands to later ones (`ctx.give`): one value of each type."""
    takes: tuple[type, ...] = ()
    """Typed outputs it reads (`ctx.take`): each must be given by a stage it needs, directly or not."""
    before: tuple[str, ...] = ()
    """Stages that need this one, said from this side (a component adding a step before another's);
    the plan turns these into their `needs`."""


class StageError(Exception):
    """A stage failed in a way the user can act on: `hint` says what to do next."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConnectionLost(Exception):
    """The SSH connection dropped mid-stage: the engine reconnects and retries the stage once."""


@dataclass
class Session:
    """What the stages of one run share: answers, state, secrets, back-ends, results."""

    answers: Answers
    state: RunState
    options: RunOptions = field(default_factory=RunOptions)
    secrets: Secrets = field(default_factory=Secrets)
    listeners: list[Listener] = field(default_factory=list)
    interaction: Interaction = field(default_factory=Headless)
    remote: Remote | None = None
    federation: dict[str, Any] | None = None
    shown_once: list[tuple[str, str]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    """The checks stages made besides the federation test (name, ok, detail, fix), for the report."""
    links: list[tuple[str, str]] = field(default_factory=list)
    """(what, URL) the person should open once the run is done."""
    outputs: dict[type, Any] = field(default_factory=dict)
    """What stages gave (by type), for the stages after them."""
    resources: dict[type, Any] = field(default_factory=dict)
    """Things of the run's own, made on first use (`ctx.resource`): the apt lock, the cloud client.
    Tests put their own in first (short cloud timings)."""
    run_log: Any = None
    """The run's log file (installer.report.RunLog), closed when the engine's run ends."""

    @property
    def dry_run(self) -> bool:
        return self.options.dry_run

    @functools.cached_property
    def deployment(self) -> Deployment:
        """What the answers make of the server: the enabled components, merged."""
        from installer.deployment import Deployment

        return Deployment.build(self.answers, self.options.mode, self.state.facts)

    def emit(self, event: Any) -> None:
        for listener in self.listeners:
            listener(event)


class StageContext:
    """A stage's handle on the run: its log, progress, state facts, and the remote host."""

    def __init__(self, session: Session, stage: Stage) -> None:
        self.session = session
        self.stage = stage
        self._streams: dict[str, LineMasker] = {}
        """One per kind of line ("out", "err", ...): a secret broken across two lines of a
        command's output is masked on both."""

    @property
    def answers(self) -> Answers:
        return self.session.answers

    @property
    def deployment(self) -> Deployment:
        return self.session.deployment

    @property
    def facts(self) -> dict[str, Any]:
        return self.session.state.facts

    @property
    def dry_run(self) -> bool:
        return self.session.dry_run

    @property
    def options(self) -> RunOptions:
        return self.session.options

    # --- telling the user -------------------------------------------------------------
    def log(self, line: str, kind: str = "log") -> None:
        """One log line per line of `line`, every secret masked (also one the line breaks in two)."""
        text = in_words(line if type(line) is str else str(line))
        parts = text.splitlines()
        if len(parts) != 1:  # a secret holding a line break, or broken at one
            parts = self.session.secrets.redact(text).splitlines() if parts else [""]
        stream = self._streams.get(kind)
        if stream is None:
            stream = self._streams[kind] = self.session.secrets.stream()
        name, emit, mask = self.stage.name, self.session.emit, stream.mask
        for part in parts:
            part = mask(part)
            if not part.isprintable():  # escaped: a command's output must not drive the terminal it is shown on
                part = escape(part, keep="\t")
            emit(StageLog(name, part, kind))

    def progress(self, text: str, fraction: float | None = None) -> None:
        self.session.emit(StageProgress(self.stage.name, escape(self.session.secrets.redact(text), keep="\t"), fraction))

    def found(self, text: str) -> None:
        """Log what was found on the host or in the cloud. A dry run looks at nothing: what it
        "finds" is made up to show the plan, and the line says it was assumed."""
        self.log(f"assumed (dry run): {text}" if self.dry_run else text)

    def cloud_call(self, description: str) -> None:
        """Log a cloud API call (the dry-run plan lists these in order)."""
        self.log(description, "cloud")

    def secret(self, value: str) -> str:
        """Register a secret so no log, report or state file ever shows it."""
        return self.session.secrets.add(value)

    def reveal(self, label: str, value: str) -> None:
        """A secret the user must see once (a generated password): shown at the end, never logged."""
        self.secret(value)
        self.session.shown_once.append((label, value))

    def report_check(self, name: str, ok: bool, detail: str, fix: str | None = None) -> None:
        """A check's result for the report's "checks" (secrets masked, escaped: details may hold
        what the network sent). A stage whose check fails also raises, so the run exits 1."""
        def said(text: str) -> str:
            return escape(self.session.secrets.redact(text), keep="\t")

        self.session.checks[:] = [c for c in self.session.checks if c["name"] != name]
        self.session.checks.append({"name": name, "ok": ok, "detail": said(detail), "fix": said(fix) if fix else None})

    def link(self, label: str, url: str) -> None:
        """Something to open once the run is done (the web client's address): shown at the end and
        in the report."""
        if (label, url) not in self.session.links:
            self.session.links.append((label, url))

    # --- state ------------------------------------------------------------------------
    def remember(self, key: str, value: Any) -> None:
        """Record a fact about the deployment now (not at stage end): a crash must not lose it."""
        self.session.state.remember(key, value)

    def forget(self, key: str) -> None:
        """Drop a fact that no longer holds (saved at once, as remember)."""
        self.session.state.forget(key)

    async def sleep(self, seconds: float) -> None:
        if not self.dry_run:
            await asyncio.sleep(seconds)

    def proven(self) -> Status:
        """What a check that passed reports: it changes nothing, so passing again, as on the last
        run, is "unchanged" (a rerun after success says so of every stage); the first time, "done"."""
        last = self.session.state.stages.get(self.stage.name, {}).get("status")
        return Status.UNCHANGED if last in (Status.DONE.value, Status.UNCHANGED.value) else Status.DONE

    # --- what stages hand each other ---------------------------------------------------
    def give(self, value: Any) -> None:
        """Hand a typed output to later stages (declared in the stage's `gives`)."""
        if type(value) not in self.stage.gives:
            raise PlanError(f"stage {self.stage.name} gives a {type(value).__name__} it does not declare")
        self.session.outputs[type(value)] = value

    def take(self, kind: type[T]) -> T:
        """A typed output of an earlier stage (declared in this stage's `takes`)."""
        if kind not in self.stage.takes:
            raise PlanError(f"stage {self.stage.name} takes a {kind.__name__} it does not declare")
        try:
            return self.session.outputs[kind]
        except KeyError:
            raise StageError(f"no {kind.__name__} from an earlier stage", "rerun: the stage that makes it runs first") from None

    def resource(self, kind: type[T]) -> T:
        """The run's one `kind` (made with no arguments on first use)."""
        if kind not in self.session.resources:
            self.session.resources[kind] = kind()
        return self.session.resources[kind]

    # --- asking the person ---------------------------------------------------------------
    @property
    def can_ask(self) -> bool:
        """Whether someone is there to answer `confirm` (not in a headless run)."""
        return self.session.interaction.asks

    async def confirm(self, question: str, *, yes: str = "Yes", no: str = "No") -> bool | None:
        """Yes or no from the person running this (`yes` and `no`: the answers' words); None when
        nobody can answer (headless)."""
        return await self.session.interaction.confirm(self.session.secrets.redact(question), yes=yes, no=no)

    async def consents(self, choice: str, question: str, *, setting: str, otherwise: str) -> bool:
        """Whether to go ahead, by an answer "yes" | "no" | "ask" (`setting` names it): "ask" asks
        the person running this (a dry run says what it would ask; a headless run has nobody to
        ask, so no). When not, the log says why (`otherwise`: what happens instead)."""
        if choice == "no":
            self.log(f'{otherwise}: {setting} = "no"')
            return False
        if choice == "ask":
            if not self.can_ask:
                self.log(f'{otherwise}: {setting} = "ask" and nobody to ask in a headless run '
                         f'(set {setting} = "yes" to go ahead)')
                return False
            if self.dry_run:
                self.log(f'{setting} = "ask": a real run asks "{question}"; yes goes on as below')
            elif not await self.confirm(question):
                self.log(f"{otherwise}: declined")
                return False
        return True

    def skippable(self, what: str) -> SkippableWait:
        """A long wait the person may stop: `with ctx.skippable("waiting for DNS") as wait: ...`."""
        return SkippableWait(self.session.interaction, self.stage.name, what, dry_run=self.dry_run)

    # --- the host ---------------------------------------------------------------------
    @property
    def remote(self) -> Remote:
        if self.session.remote is None:
            raise StageError("not connected to the host", "the host.ssh stage must run first")
        return self.session.remote

    def attach_remote(self, remote: Remote) -> None:
        self.session.remote = remote

    async def run(self, command: str, **kwargs: Any) -> CommandResult:
        return await self.remote.run(command, log=self.log, **kwargs)

    async def probe(self, command: str, *, sudo: bool = False) -> bool:
        return await self.remote.probe(command, log=self.log, sudo=sudo)

    async def read_file(self, path: str, *, sudo: bool = True) -> bytes | None:
        return await self.remote.read_file(path, log=self.log, sudo=sudo)

    async def put_file(self, path: str, data: bytes, **kwargs: Any) -> bool:
        return await self.remote.put_file(path, data, log=self.log, **kwargs)


class PlanError(Exception):
    """The stage list itself is wrong (a programming error, caught by the tests)."""


def check_plan(stages: Iterable[Stage]) -> list[Stage]:
    """Stages in a valid order: unique names, known dependencies listed before use (so no
    cycles), and every output a stage takes given by a stage it needs, directly or not."""
    stages = list(stages)
    upstream: dict[str, set[str]] = {}
    gives: dict[str, tuple[type, ...]] = {}
    for stage in stages:
        if stage.name in upstream:
            raise PlanError(f"stage {stage.name} is listed twice")
        for need in stage.needs:
            if need not in upstream:
                raise PlanError(f"stage {stage.name} needs {need}, which is not listed before it")
        upstream[stage.name] = set(stage.needs).union(*(upstream[n] for n in stage.needs))
        gives[stage.name] = stage.gives
        for kind in stage.takes:
            if not any(kind in gives[name] for name in upstream[stage.name]):
                raise PlanError(f"stage {stage.name} takes a {kind.__name__}, which no stage it needs gives")
    return stages


class Engine:
    """Runs a plan: every stage whose needs have finished starts at once (up to `max_parallel`)."""

    def __init__(self, stages: Iterable[Stage], session: Session, *, max_parallel: int | None = None) -> None:
        self.stages = check_plan(stages)
        self.session = session
        # The dry-run prints a plan: one stage at a time, in the listed order, so it reads top to bottom.
        self.max_parallel = 1 if session.dry_run else (max_parallel or len(self.stages) or 1)
        self.results: dict[str, StageResult] = {s.name: StageResult(s.name, s.title, Status.PENDING) for s in self.stages}

    def _finish(self, stage: Stage, status: Status, seconds: float, error: str | None = None, hint: str | None = None) -> None:
        redact = self.session.secrets.redact
        error = escape(redact(error), keep="\t\n") if error else None  # its lines are ours; what is in them may not be
        hint = escape(redact(hint), keep="\t\n") if hint else None
        self.results[stage.name] = StageResult(stage.name, stage.title, status, seconds, error, hint)
        if not self.session.dry_run and status is not Status.PENDING:
            self.session.state.record_stage(stage.name, status.value, seconds, error)
        self.session.emit(StageFinished(stage.name, status, seconds, error, hint))

    async def _execute(self, stage: Stage) -> None:
        ctx = StageContext(self.session, stage)
        self.results[stage.name] = StageResult(stage.name, stage.title, Status.RUNNING)
        self.session.emit(StageStarted(stage.name, stage.title))
        started = time.monotonic()
        reconnected = False
        while True:
            error: str | None = None
            hint: str | None = None
            try:
                outcome = await stage.run(ctx) or Status.DONE
                if outcome is not Status.SKIPPED and (missing := [k.__name__ for k in stage.gives if k not in self.session.outputs]):
                    raise PlanError(f"stage {stage.name} finished without giving {', '.join(missing)}")
                if self.session.dry_run and outcome is not Status.SKIPPED:
                    outcome = Status.PLANNED
                self._finish(stage, outcome, time.monotonic() - started)
                return
            except StageError as exc:  # keys its message mentions, as the answers file writes them
                error, hint = in_words(str(exc)), in_words(exc.hint) if exc.hint else None
            except RemoteCommandError as exc:
                error = str(exc)
            except ConnectionLost as exc:
                if not reconnected:
                    reconnected = True
                    ctx.log(f"connection lost ({exc}); reconnecting and retrying this stage once")
                    continue
                error, hint = f"connection lost again: {exc}", "check the host is up and reachable, then rerun to resume"
            except Exception as exc:  # a bug or an unforeseen failure: keep the run alive and honest
                error = f"unexpected error: {error_summary(exc)}"
                for line in traceback.format_exc().splitlines():
                    ctx.log(line, "debug")
            redact = self.session.secrets.redact
            decision: Decision = await self.session.interaction.decide(stage, redact(error), redact(hint) if hint else None)
            if decision == "retry":
                ctx.log("retrying")
                started = time.monotonic()
                continue
            if decision == "skip" and stage.skippable:
                ctx.log(f"skipped at the user's request after: {error}")
                self._finish(stage, Status.SKIPPED, time.monotonic() - started)
                return
            self._finish(stage, Status.FAILED, time.monotonic() - started, error, hint)
            return

    def _block_dependents(self) -> None:
        """Stages whose needs failed are skipped, with the reason."""
        changed = True
        while changed:
            changed = False
            for stage in self.stages:
                if self.results[stage.name].status is not Status.PENDING:
                    continue
                for need in stage.needs:
                    dep = self.results[need]
                    if dep.status is Status.FAILED or (dep.status is Status.SKIPPED and dep.error):
                        self._finish(stage, Status.SKIPPED, 0.0, f"not run: {need} did not finish")
                        changed = True
                        break

    def _ready(self) -> list[Stage]:
        return [
            s for s in self.stages
            if self.results[s.name].status is Status.PENDING
            and all(self.results[n].status.finished_ok for n in s.needs)
        ]

    async def run(self) -> RunResult:
        running: dict[asyncio.Task[None], Stage] = {}
        interrupted = False
        try:
            while True:
                self._block_dependents()
                for stage in self._ready()[: max(0, self.max_parallel - len(running))]:
                    running[asyncio.create_task(self._execute(stage), name=stage.name)] = stage
                    self.results[stage.name] = StageResult(stage.name, stage.title, Status.RUNNING)
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
                    task.result()
        except (asyncio.CancelledError, KeyboardInterrupt):
            interrupted = True
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for task, stage in running.items():
                self._finish(stage, Status.FAILED, 0.0, "interrupted", "rerun the same command to resume")
        if self.session.remote is not None:
            await self.session.remote.close()  # the one SSH connection of the run ends with it
        if self.session.run_log is not None:
            self.session.run_log.close()
        result = RunResult(
            mode=self.session.options.mode,
            dry_run=self.session.dry_run,
            stages=[self.results[s.name] for s in self.stages],
            federation=self.session.federation,
            shown_once=list(self.session.shown_once),
            interrupted=interrupted,
            checks=list(self.session.checks),
            links=list(self.session.links),
        )
        self.session.emit(RunFinished(result))
        if interrupted:
            raise Interrupted(result)
        return result


class Interrupted(Exception):
    """Ctrl-C: the state is saved; the partial result rides along for the report."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("interrupted")
        self.result = result
