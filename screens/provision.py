"""The run: stages as a list beside the selected stage's live log, overall progress, and a dialog
when a stage fails. The engine runs in a worker; its events are queued by a plain listener and
drawn by a ~10 Hz flush, so a stage printing 100k lines a second cannot stall the screen.

This screen is the run's Interaction (installer.interaction): a failed stage, a question and a
wait the user may stop all come here."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Footer, Log, OptionList, ProgressBar, Static
from textual.worker import Worker, WorkerState

from installer.engine import Decision, Engine, Interrupted, Session, Stage
from installer.events import Event, RunFinished, RunResult, StageFinished, StageLog, StageProgress, StageStarted, Status
from screens.base import StepScreen, stylesheet
from screens.dialogs import ErrorDialog, FailureDialog
from screens.widgets import StageList, StageRow, format_seconds

HISTORY = 5000
"""Lines kept per stage (and shown in the log pane): enough to read back, bounded in memory."""
FLUSH_SECONDS = 0.1
TAIL_LINES = 12
MARKS_TEXT = {Status.DONE: "✓", Status.UNCHANGED: "=", Status.PLANNED: "✓", Status.SKIPPED: "»", Status.FAILED: "✗"}
PREFIX = {"cloud": "☁ ", "file": "✎ ", "out": "  ", "err": "! "}
"""Marks for kinds of line; a command line carries its own ("$ " run, "? " checked), as the headless log shows it."""


def format_line(event: StageLog) -> str | None:
    """A log line as the pane shows it; debug lines (tracebacks) stay out of the pane."""
    if event.kind == "debug":
        return None
    return PREFIX.get(event.kind, "") + event.line


@dataclass
class RunDone(Message):
    """The engine finished (or was interrupted); the worker's only message."""

    result: RunResult
    interrupted: bool


class ProvisionScreen(StepScreen):
    """Runs the plan and shows it; Continue leads to the federation results once it is over."""

    CSS_PATH = stylesheet("provision")

    STEP = "Install"
    asks = True  # as the run's Interaction: the user answers here
    BINDINGS = [
        Binding("f", "follow", "Follow running"),
        Binding("z", "zoom", "Wide log"),
        Binding("s", "stop_waiting", "Stop waiting"),
        Binding("ctrl+n", "continue", "Continue", show=False),
    ]

    def __init__(self, stages: Sequence[Stage], session: Session) -> None:
        super().__init__()
        self.stages = list(stages)
        self.session = session
        self.rows = [StageRow(s.name, s.title) for s in self.stages]
        self.row_by_name = {row.name: row for row in self.rows}
        self.buffers: dict[str, deque[str]] = {s.name: deque(maxlen=HISTORY) for s in self.stages}
        self.started_at: dict[str, float] = {}
        self.progress_text: dict[str, str] = {}
        self.pending: list[Event] = []
        self.shown: str | None = self.stages[0].name if self.stages else None
        self.following = True
        self._auto_highlights: set[str] = set()
        self._list_had_focus = False  # when z hid the stage list
        """Stages highlighted by following, not by the user: their highlight events are ignored."""
        self.result: RunResult | None = None
        self.run_started = 0.0
        self.waits: dict[str, tuple[str, asyncio.Event]] = {}
        """Stages waiting on something the user may stop waiting for (what, the signal)."""

    # --- layout -----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield from self.compose_steps()
        with Horizontal(id="run-head"):
            yield Static(self._title(), id="run-title")
            yield ProgressBar(total=len(self.stages) or 1, show_eta=False, id="overall")
        with Horizontal(id="panes"):
            stage_list = StageList(self.rows, id="stage-list")
            stage_list.border_title = "Stages"
            yield stage_list
            with Vertical(id="log-box"):
                log = Log(max_lines=HISTORY, id="log", auto_scroll=True)
                log.border_title = self._log_title()
                yield log
        with Horizontal(id="nav"):
            yield Static("Starting…", id="nav-status")
            yield Button("Continue →", id="continue", variant="primary", compact=True, disabled=True)
        yield Footer()

    def _title(self) -> str:
        server = self.session.answers.domain.server_name
        if self.session.dry_run:
            return f"Dry run: {server} (nothing contacted)"
        return f"{'Upgrading' if self.session.options.mode == 'upgrade' else 'Installing'} {server}"

    def _log_title(self) -> str:
        if self.shown is None:
            return "Log"
        follow = " · following" if self.following else " · f: follow the running stage"
        return f"{self.shown}{follow}"

    @property
    def stage_list(self) -> StageList:
        return self.query_one("#stage-list", StageList)

    @property
    def log_pane(self) -> Log:
        return self.query_one("#log", Log)

    def on_mount(self) -> None:
        self.session.listeners.append(self._queue_event)
        self.run_started = self.installer.clock()
        self.set_interval(FLUSH_SECONDS, self.flush, name="flush-engine-events")
        self.run_engine()

    # --- the engine -------------------------------------------------------------------
    def _queue_event(self, event: Event) -> None:
        """The engine's listener: only queue; the flush owns every widget."""
        self.pending.append(event)

    @work(group="engine", exclusive=True, exit_on_error=False, name="engine")
    async def run_engine(self) -> None:
        engine = Engine(self.stages, self.session)
        try:
            result = await engine.run()
        except Interrupted as exc:
            self.post_message(RunDone(exc.result, interrupted=True))
            return
        self.post_message(RunDone(result, interrupted=False))

    async def decide(self, stage: Stage, error: str, hint: str | None = None) -> Decision:
        """Ask the user what to do about a failed stage (called by the engine, in its worker)."""
        self.flush()
        row = self.row_by_name[stage.name]
        row.waiting = True
        self.stage_list.update_row(stage.name)
        self.query_one("#nav-status", Static).update(f"✗ {stage.name} failed: waiting for your decision")
        tail = list(self.buffers[stage.name])[-TAIL_LINES:]
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def chosen(choice: str | None) -> None:
            if not answer.done():
                answer.set_result(choice or "fail")

        self.app.push_screen(FailureDialog(stage.name, stage.title, error, hint, tail, skippable=stage.skippable), chosen)
        choice = await answer
        row.waiting = False
        self.stage_list.update_row(stage.name)
        if choice == "quit":
            self.installer.stop_run()
            return "fail"
        if choice == "retry":
            self.started_at[stage.name] = self.installer.clock()  # the retry's own duration, as the engine counts it
        self.query_one("#nav-status", Static).update(f"{'Retrying' if choice == 'retry' else 'Continuing after'} {stage.name}…")
        return choice  # type: ignore[return-value]

    async def confirm(self, question: str, *, yes: str = "Yes", no: str = "No") -> bool | None:
        """A yes/no question from a stage, answered in a dialog (the engine waits meanwhile)."""
        from screens.dialogs import ConfirmDialog

        self.flush()
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.app.push_screen(ConfirmDialog("A question from the installer", question, yes, no),
                             lambda choice: answer.done() or answer.set_result(bool(choice)))
        return await answer

    def offer_skip(self, stage: str, what: str) -> asyncio.Event:
        """A stage waits on something outside (DNS records): `s` lets the user stop waiting."""
        event = asyncio.Event()
        self.waits[stage] = (what, event)
        self.refresh_bindings()
        return event

    def withdraw_skip(self, stage: str) -> None:
        self.waits.pop(stage, None)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_waiting":
            return bool(self.waits)
        return True

    def action_stop_waiting(self) -> None:
        """Stop the wait of the stage shown (or of the one that is waiting, if only one is)."""
        stage = self.shown if self.shown in self.waits else next(iter(self.waits), None)
        if stage is None:
            return
        what, event = self.waits.pop(stage)
        event.set()
        self.refresh_bindings()
        self.notify(f"{stage}: stopped {what}; the run goes on", title="Stopped waiting")

    # --- drawing ----------------------------------------------------------------------
    def flush(self) -> None:
        """Draw every queued event: rows, progress, and the shown stage's new lines in one write."""
        events, self.pending = self.pending, []
        new_lines: list[str] = []
        stage_list = self.stage_list
        for event in events:
            if isinstance(event, StageLog):
                line = format_line(event)
                if line is None:
                    continue
                self.buffers[event.stage].append(line)
                if event.stage == self.shown:
                    new_lines.append(line)
            elif isinstance(event, StageStarted):
                row = self.row_by_name[event.stage]
                row.status, row.seconds = Status.RUNNING, None
                self.started_at[event.stage] = self.installer.clock()
                stage_list.update_row(event.stage)
                if self.following and event.stage != self.shown:
                    self._show_stage(event.stage, new_lines)
            elif isinstance(event, StageProgress):
                fraction = f" {event.fraction:.0%}" if event.fraction is not None else ""
                self.progress_text[event.stage] = f"{event.stage}: {event.text}{fraction}"
            elif isinstance(event, StageFinished):
                row = self.row_by_name[event.stage]
                row.status = event.status
                started = self.started_at.get(event.stage)
                row.seconds = self.installer.clock() - started if started is not None else None
                self.progress_text.pop(event.stage, None)
                stage_list.update_row(event.stage)
                # The outcome goes into the stage's own log, so reading it back tells the whole story.
                closing = [f"{MARKS_TEXT.get(event.status, '·')} {event.status.value}" + (f": {event.error}" if event.error else "")]
                if event.hint:
                    closing.append(f"  what to do: {event.hint}")
                self.buffers[event.stage].extend(closing)
                if event.stage == self.shown:
                    new_lines.extend(closing)
                self._update_progress()
            elif isinstance(event, RunFinished):
                self.result = event.result
        if new_lines:
            self.log_pane.write_lines(new_lines[-HISTORY:])
        stage_list.spin()
        if self.result is None and events:
            self._update_status()

    def _show_stage(self, name: str, new_lines: list[str] | None = None) -> None:
        """Point the log pane at another stage (its whole bounded history)."""
        if new_lines is not None and new_lines:
            self.log_pane.write_lines(new_lines)
            new_lines.clear()
        self.shown = name
        self.log_pane.clear()
        self.log_pane.write_lines(list(self.buffers[name]))
        self.log_pane.border_title = self._log_title()
        if self.following:
            index = next(i for i, s in enumerate(self.stages) if s.name == name)
            if self.stage_list.highlighted != index:
                self._auto_highlights.add(name)
                self.stage_list.highlighted = index

    def _update_progress(self) -> None:
        finished = sum(1 for row in self.rows if row.status not in (Status.PENDING, Status.RUNNING))
        self.query_one("#overall", ProgressBar).update(progress=finished)

    def _update_status(self) -> None:
        running = [row.name for row in self.rows if row.status is Status.RUNNING]
        texts = [self.progress_text[name] for name in running if name in self.progress_text]
        if texts:
            status = texts[-1]
        elif running:
            status = "Running " + ", ".join(running)
        else:
            status = ""
        self.query_one("#nav-status", Static).update(status)

    # --- the user ---------------------------------------------------------------------
    @on(OptionList.OptionHighlighted, "#stage-list")
    def _stage_picked(self, event: OptionList.OptionHighlighted) -> None:
        name = event.option_id
        if name in self._auto_highlights:
            self._auto_highlights.discard(name)
            return
        if name is None or name == self.shown:
            return
        running = [row.name for row in self.rows if row.status is Status.RUNNING]
        self.following = bool(running) and name == running[-1]
        self._show_stage(name)

    def action_zoom(self) -> None:
        """Hide or show the stage list, for long log lines on a narrow terminal. The list's
        focus goes to the log while it is hidden, and comes back with it."""
        stage_list, log = self.stage_list, self.query_one("#log")
        self.toggle_class("-zoomed")
        if self.has_class("-zoomed"):
            self._list_had_focus = self.focused is stage_list
            if self._list_had_focus:
                log.focus()
        elif self._list_had_focus:
            stage_list.focus()

    def action_follow(self) -> None:
        self.following = True
        running = [row.name for row in self.rows if row.status is Status.RUNNING]
        self._show_stage(running[-1] if running else (self.shown or self.stages[-1].name))

    @on(RunDone)
    def _run_done(self, message: RunDone) -> None:
        self.flush()
        self.result = message.result
        self.installer.run_finished(message.result, interrupted=message.interrupted)
        if message.interrupted:
            return
        self._update_progress()
        counts: dict[str, int] = {}
        for stage in message.result.stages:
            counts[stage.status.value] = counts.get(stage.status.value, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        federation = message.result.federation
        if federation is not None and not federation.get("ok"):
            summary += "; the federation test failed"
        took = format_seconds(self.installer.clock() - self.run_started)
        mark = "✓" if message.result.ok else "✗"
        status = self.query_one("#nav-status", Static)
        status.update(f"{mark} Finished in {took}: {summary}")
        status.set_class(not message.result.ok, "-invalid")
        button = self.query_one("#continue", Button)
        button.disabled = False
        button.focus()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name == "engine" and worker.state is WorkerState.ERROR:
            summary, crash = self.installer.keep_crash_details(worker.error)
            report = f"report it with {crash} (masked)" if crash else "report it with the log"
            self.app.push_screen(
                ErrorDialog("The run stopped unexpectedly", summary,
                            f"the state of finished stages is saved: rerun matrix-installer to resume; if it happens again, {report}"),
                lambda _: self.installer.finish(1),
            )

    def action_continue(self) -> None:
        if self.result is not None and not self.query_one("#continue", Button).disabled:
            self.installer.show_results()

    @on(Button.Pressed, "#continue")
    def _continue(self) -> None:
        self.action_continue()
