"""What every step of the guided setup shares: the steps line, a title, the footer. Forms build on
it in screens.form; this module stays light, since the Welcome screen's first frame waits for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.screen import Screen
from textual.widgets import Static

from installer.resources import data_dir
from screens.widgets.steps import Steps

if TYPE_CHECKING:
    from screens.app import InstallerApp


def stylesheet(name: str) -> str:
    """One of the guided setup's stylesheets in assets/. installer.tcss (every step) is the app's;
    each other is a screen's CSS_PATH, parsed when that screen first opens."""
    return str(data_dir("assets") / f"{name}.tcss")


class StepScreen(Screen[None]):
    """A full-screen step: the steps line on top, the footer at the bottom."""

    STEP = "Welcome"
    HEADING = ""
    BINDINGS = [
        # The step's body scrolls whatever has focus (often a button below it).
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
    ]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    """The screen gets class -wide from 120 columns (forms put their preview beside them, the
    review and install steps go to two columns), else -narrow."""

    @property
    def installer(self) -> InstallerApp:
        return cast("InstallerApp", self.app)

    def action_page(self, direction: int) -> None:
        for body in self.query("#form").results(ScrollableContainer):
            (body.scroll_page_down if direction > 0 else body.scroll_page_up)(animate=False)

    def compose_steps(self) -> ComposeResult:
        yield Steps(self.STEP, dry_run=self.installer.options.dry_run, mode=self.installer.options.mode)
        if heading := self.heading():
            yield Static(heading, classes="heading")

    def heading(self) -> str:
        """The line under the steps (HEADING; a step may word it for the mode)."""
        return self.HEADING
