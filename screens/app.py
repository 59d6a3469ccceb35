"""The guided setup: the app that walks from Welcome to Done, and `run_guided`, its entry point."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from installer.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from screens.base import stylesheet


if TYPE_CHECKING:
    from installer import discovery
    from installer.answers import Answers
    from installer.engine import Session, Stage
    from installer.events import RunResult
    from installer.options import RunOptions

# The engine, the answers model and the dialogs are imported where first used: the Welcome
# screen needs none of them, and its first frame should not wait for them (bench/startup.py).


PlanFn = Callable[[str, "Answers", "dict[str, Any]"], Sequence["Stage"]]


def check_provider(answers: Answers, options: RunOptions) -> list[str]:
    """What the provider needs of this machine (imported late: only the Keys and Review steps ask)."""
    from installer.readiness import provider_problems

    return provider_problems(answers, options)


class InstallerApp(App[int]):
    """Holds the answers being built and the run; each step is a screen pushed on top of the last."""

    CSS_PATH = stylesheet("installer")
    TITLE = "matrix-installer"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        answers: Answers | None,
        options: RunOptions,
        *,
        found: discovery.Found | None = None,
        plan: PlanFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        home: Path | None = None,
        env: Callable[[str], str | None] | None = None,
        default_answers_path: Path | None = None,
        provider_check: Callable[[Answers, RunOptions], list[str]] = check_provider,
    ) -> None:
        super().__init__()
        self._answers = answers
        self.options = options
        self.found = found
        self.plan = plan
        self.clock = clock
        self.home = home
        self.env = env or os.environ.get
        """An environment variable's value by name (the admin password's source; tests give their own)."""
        self.provider_check = provider_check
        self.default_answers_path = default_answers_path or Path.cwd() / "matrix-answers.toml"
        self.answers_path: Path | None = None
        self.session: Session | None = None
        self.result: RunResult | None = None
        self.report_path: Path | None = None
        self.state_folder: Path | None = None
        self.running = False

    def env_is_set(self, name: str) -> bool:
        return bool(self.env(name))

    @property
    def answers(self) -> Answers:
        """The answers being built: the presets given, else the defaults (made on first use)."""
        if self._answers is None:
            from installer.answers import Answers

            self._answers = Answers()
        return self._answers

    @answers.setter
    def answers(self, value: Answers) -> None:
        self._answers = value

    def get_default_screen(self) -> Screen[Any]:
        """Welcome is the first screen itself: no blank screen composed and replaced first."""
        from screens.welcome import WelcomeScreen

        return WelcomeScreen()  # it looks around this machine (discover) right after its first frame

    def discover(self) -> None:
        """Find OCI profiles, SSH keys and previous runs (unless given, as the tests do)."""
        from installer import discovery

        if self.found is None:
            self.found = discovery.discover(self.home, self.options.state_root)

    # --- moving between steps ---------------------------------------------------------
    def go_next(self, current: Screen[Any]) -> None:
        """Open the step after `current` (forms keep the ones before on the stack for Back)."""
        from screens.cloud import CloudScreen
        from screens.domain import DomainScreen
        from screens.keys import KeysScreen
        from screens.registration import RegistrationScreen
        from screens.review import ReviewScreen
        from screens.server import ServerScreen

        order: list[type[Screen[Any]]] = [CloudScreen, DomainScreen, KeysScreen, RegistrationScreen, ServerScreen, ReviewScreen]
        names = ["WelcomeScreen"] + [cls.__name__ for cls in order]
        index = names.index(type(current).__name__)
        self.push_screen(order[index]())

    def continue_run(self, index: int, mode: str) -> None:
        """Resume or upgrade a previous run: its saved answers, straight to Review."""
        from screens.cloud import CloudScreen
        from screens.review import ReviewScreen

        assert self.found is not None
        run = self.found.previous_runs[index]
        self.options.mode = mode
        from installer import discovery

        saved = discovery.run_answers(run)
        if saved is not None:
            self.answers = saved
            self.answers_path = run.answers_path
            self.push_screen(ReviewScreen())
        else:
            self.answers = self.answers.replace("domain", server_name=run.server_name)
            self.notify("No saved answers for this run: check each step.", title=run.server_name)
            self.push_screen(CloudScreen())

    def plan_stages(self) -> list[Stage]:
        if self.plan is None:
            from installer.plan import plan_for

            self.plan = plan_for
        return list(self.plan(self.options.mode, self.answers, self.known_facts()))

    def known_facts(self) -> dict[str, Any]:
        """What an earlier run's state knows of this server (an upgrade works on what is deployed)."""
        if self.session is not None:
            return self.session.state.facts
        from installer.state import RunState, StateError

        try:
            return RunState.load(self.options.state_root, self.answers.domain.server_name).facts
        except (StateError, OSError):
            return {}

    # --- the run ----------------------------------------------------------------------
    def start_run(self) -> None:
        """Build the session (state loaded, answers kept beside it) and open the Provision screen."""
        from screens.provision import ProvisionScreen

        from installer.discovery import ANSWERS_FILE
        from installer.session import open_session
        from installer.state import StateError
        from screens.dialogs import ErrorDialog

        try:
            self.session = open_session(self.answers, self.options)
        except (StateError, OSError) as exc:
            self.push_screen(ErrorDialog("Cannot start the run", str(exc), f"check that {self.options.state_root} is writable, or pass --state-dir"))
            return
        if not self.options.dry_run:
            self.state_folder = self.session.state.folder
            self.answers_path = self.answers_path or self.session.state.folder / ANSWERS_FILE
        stages = self.plan_stages()
        screen = ProvisionScreen(stages, self.session)
        self.session.interaction = screen  # failed stages, questions and skippable waits come to it
        self.running = True
        self.push_screen(screen)

    def stop_run(self) -> None:
        """Quit and resume later: cancel the engine (it saves state and reports the interruption)."""
        for worker in list(self.workers):
            if worker.group == "engine":
                worker.cancel()

    def run_finished(self, result: RunResult, *, interrupted: bool) -> None:
        """The engine is done: keep the result, write the report (an interrupted run's too, as
        headless does), leave with 130 if interrupted."""
        self.running = False
        self.result = result
        target = self.options.report
        if target is None and self.state_folder is not None:
            target = self.state_folder / "report.json"
        problem = None
        if target is not None:
            from installer.report import write_report

            try:
                write_report(result, Path(target))
                self.report_path = Path(target)
            except OSError as exc:
                problem = f"{target}: {exc}"
        if interrupted:
            self.finish(EXIT_INTERRUPTED)
        elif problem:
            from screens.dialogs import ErrorDialog

            self.push_screen(ErrorDialog("Could not write the report", problem, "the run itself is unaffected; pass --report with a writable path next time"))

    def show_results(self) -> None:
        from screens.federation import FederationScreen

        assert self.result is not None
        self.push_screen(FederationScreen(self.result.federation, self.report_path, self.answers.domain.server_name))

    def show_done(self) -> None:
        from screens.done import DoneScreen

        assert self.result is not None
        self.push_screen(DoneScreen(self.answers, self.result, state_folder=self.state_folder,
                                    answers_path=self.answers_path, report_path=self.report_path))

    # --- leaving ----------------------------------------------------------------------
    def finish(self, code: int) -> None:
        """Leave the app; `run_guided` returns `code` as the process exit status.

        Only the first call counts: an engine cancelled while the app shuts down must not
        overwrite why it is shutting down."""
        if not self._exit:
            self.exit(code, return_code=code)

    def request_quit(self) -> None:
        """Ctrl+Q: confirm, then stop (a running engine saves its state first)."""
        if self.result is not None and not self.running:
            self.finish(EXIT_OK if self.result.ok else EXIT_FAILED)
            return
        if self.running and self.options.dry_run:
            question = "Stop the dry run now? Nothing has been changed."
        elif self.running:
            question = "Stop the run now? Finished stages are saved: run matrix-installer again to resume."
        else:
            question = "Quit the guided setup? Nothing has been changed. Answers are kept only if you saved them (Review › Save answers)."

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            if self.running:
                self.stop_run()
            else:
                self.finish(EXIT_OK)  # nothing ran: 130 would say a run was interrupted

        from screens.dialogs import ConfirmDialog

        self.push_screen(ConfirmDialog("Quit", question, "Quit"), answered)

    async def action_quit(self) -> None:
        self.request_quit()

    # --- the unexpected ---------------------------------------------------------------
    def keep_crash_details(self, error: BaseException | None) -> tuple[str, Path | None]:
        """What went wrong in words for the screen (no class names: they mean nothing to a user), and
        the masked traceback kept in a private crash file for a bug report (None if it cannot be written)."""
        import traceback

        from installer.files import write_private
        from installer.shown import error_words

        # One file per error: its report can reach here twice (the worker's state, then the app's
        # hook), and seconds apart under load; a second file would only confuse the bug report.
        kept = getattr(self, "_crashes_kept", {})
        self._crashes_kept = kept
        if error is not None and id(error) in kept:
            return kept[id(error)]
        details = "".join(traceback.format_exception(error)) if error else "unknown error"
        summary = error_words(error) if error else "unknown error"
        if self.session is not None:
            details, summary = self.session.secrets.redact(details), self.session.secrets.redact(summary)
        crash: Path | None = self.options.state_root / f"crash-{int(time.time())}.log"
        try:
            write_private(crash, details.encode())
        except OSError:
            crash = None
        if error is not None:
            kept[id(error)] = (summary, crash)
        return summary, crash

    def _fatal_error(self) -> None:
        """An exception escaped a screen's handler. Textual would print a traceback with local
        variables (secrets among them, possibly) when the app closes; instead, a short message
        and the masked details in a private crash file. (This overrides Textual's own hook on
        purpose; Textual is pinned exactly.)"""
        error = self._exception
        summary, crash = self.keep_crash_details(error)
        where = f"Details (masked): {crash}\n" if crash else ""
        self._exit_renderables.append(
            f"matrix-installer stopped on an unexpected error: {summary}\n{where}"
            "Nothing more was changed; run the same command again to resume, and please report this."
        )
        self._close_messages_no_wait()


def run_guided(answers: Answers | None, options: RunOptions) -> int:
    """Run the full-screen setup; the process exit status: 0 ok, 1 failed, 130 quit to resume later."""
    app = InstallerApp(answers, options)
    code = app.run()
    if code is None:
        return app.return_code if app.return_code is not None else EXIT_INTERRUPTED
    return code
