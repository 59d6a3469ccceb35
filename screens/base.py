"""What every step of the guided setup shares: the steps line, a title, the footer. Forms build on
it in screens.form; this module stays light, since the Welcome screen's first frame waits for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Static

from screens.widgets.steps import Steps

if TYPE_CHECKING:
    from screens.app import InstallerApp


class StepScreen(Screen[None]):
    """A full-screen step: the steps line on top, the footer at the bottom."""

    STEP = "Welcome"
    HEADING = ""

    @property
    def installer(self) -> InstallerApp:
        return cast("InstallerApp", self.app)

    def compose_steps(self) -> ComposeResult:
        yield Steps(self.STEP, dry_run=self.installer.options.dry_run, mode=self.installer.options.mode)
        if self.HEADING:
            yield Static(self.HEADING, classes="heading")
