"""The end: how to log in, the secrets shown this once, where things are, how to upgrade."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.widgets import Button, Footer, Static

from installer.answers import Answers
from installer.cloud.notices import IDLE_TITLE, idle_reclaim_notice
from installer.events import RunResult, Status
from screens.base import StepScreen, stylesheet


class DoneScreen(StepScreen):
    """The summary a person copies from; Enter or q leaves with the run's exit status."""

    CSS_PATH = stylesheet("results")

    STEP = "Done"
    BINDINGS = [Binding("q", "finish", "Quit", show=False)]

    def __init__(self, answers: Answers, result: RunResult, *, state_folder: Path | None,
                 answers_path: Path | None, report_path: Path | None) -> None:
        super().__init__()
        self.answers = answers
        self.result = result
        self.state_folder = state_folder
        self.answers_path = answers_path
        self.report_path = report_path

    def compose(self) -> ComposeResult:
        yield from self.compose_steps()
        with VerticalScroll(id="form", can_focus=False):
            yield Static(self._heading(), classes="title")
            yield Static(self._login(), id="login")
            if self.result.shown_once:
                secrets = Static(self._secrets(), id="secrets")
                secrets.border_title = "Shown once: copy these now"
                yield secrets
            if failures := self._failures():
                yield Static(failures, id="failures")
            yield Static(self._where(), id="where")
        with Horizontal(id="nav"):
            yield Static("", id="nav-status")
            yield Button("Quit", id="finish", variant="primary", compact=True)
        yield Footer()

    def _heading(self) -> str:
        if self.result.dry_run:
            ending = "complete" if self.result.ok else "finished with problems"
            return f"Dry run {ending}: nothing was changed"
        if self.result.ok:
            return "Your Matrix homeserver is ready"
        return "The run finished with problems"

    def _login(self) -> str:
        d, r = self.answers.domain, self.answers.registration
        how = "sign in with any Matrix client (Element: app.element.io) using the homeserver URL above."
        if self.result.dry_run:
            then = f"After a real run, {how}"
        elif self._failed_stages():  # the server, the admin or the proxy may not be there: no promise of a login
            then = "[$text-warning]Not ready to sign in:[/] the stages below did not finish. Once a rerun finishes them, " + how
        else:
            then = how[:1].upper() + how[1:]
        return "\n".join([
            f"Homeserver URL   [b]https://{escape(d.matrix_host)}[/]",
            f"Admin user       [b]@{escape(r.admin_user)}:{escape(d.server_name)}[/]",
            # What the run says to open (the web client it installed), drawn as it comes.
            *(f"{escape(label):<17}[b]{escape(url)}[/]" for label, url in self.result.links),
            then,
        ])

    def _failed_stages(self) -> list:
        return [s for s in self.result.stages if s.status is Status.FAILED or (s.status is Status.SKIPPED and s.error)]

    def _secrets(self) -> str:
        return "\n".join(f"{escape(label)}: [b]{escape(value)}[/]" for label, value in self.result.shown_once or [])

    def _failures(self) -> str:
        failed = self._failed_stages()
        if not failed:
            return ""
        lines = ["[b $text-error]Stages that did not finish[/]"]
        for stage in failed:
            mark = "✗" if stage.status is Status.FAILED else "»"
            lines.append(f"  {mark} {escape(stage.name)}: {escape(stage.error or '')}")
            if stage.hint:
                lines.append(f"    what to do: {escape(stage.hint)}")
        if not self.result.dry_run:
            lines.append("  Run [b]matrix-installer[/] again to resume where it stopped.")
        return "\n".join(lines)

    def _where(self) -> str:
        lines = ["[b]Where things are[/]"]
        lines.append(f"  State     {escape(str(self.state_folder)) if self.state_folder else '(dry run: none kept)'}")
        lines.append(f"  Answers   {escape(str(self.answers_path)) if self.answers_path else '(not saved: use Save answers on Review next time)'}")
        if self.report_path:
            lines.append(f"  Report    {escape(str(self.report_path))}")
        answers = escape(str(self.answers_path)) if self.answers_path else "FILE"
        lines.append("[b]Keep it updated[/]")
        lines.append("  matrix-installer --upgrade")
        lines.append(f"  matrix-installer --upgrade --answers {answers}")
        if notice := idle_reclaim_notice(self.answers):
            lines.append(f"[b $text-warning]{IDLE_TITLE}[/]")
            lines += [f"  {escape(line)}" for line in notice]
        return "\n".join(lines)

    def on_mount(self) -> None:
        self.query_one("#finish", Button).focus()

    def action_finish(self) -> None:
        self.installer.finish(0 if self.result.ok else 1)

    @on(Button.Pressed, "#finish")
    def _finish(self) -> None:
        self.action_finish()
