"""What every step of the guided setup shares: the steps line, a title, the footer. Forms build on
it in screens.form; this module stays light, since the Welcome screen's first frame waits for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
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
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    """The screen gets class -wide from 120 columns (forms put their preview beside them, the
    review and install steps go to two columns), else -narrow."""

    @property
    def installer(self) -> InstallerApp:
        return cast("InstallerApp", self.app)

    def compose_steps(self) -> ComposeResult:
        yield Steps(self.STEP, dry_run=self.installer.options.dry_run, mode=self.installer.options.mode)
        if self.HEADING:
            yield Static(self.HEADING, classes="heading")
