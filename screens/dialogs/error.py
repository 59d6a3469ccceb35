"""The one place errors go: what happened and what to do, never a traceback."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from screens.dialogs.base import Dialog


class ErrorDialog(Dialog[None]):
    """An error the user must see, with the next step."""

    BINDINGS = [Binding("escape,enter", "dismiss", "Close")]

    def __init__(self, title: str, message: str, what_to_do: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.what_to_do = what_to_do

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -error") as box:
            box.border_title = self.title_text
            yield Static(self.message, classes="dialog-message", markup=False)
            if self.what_to_do:
                yield Static(f"What to do: {self.what_to_do}", classes="dialog-hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary", compact=True)

    def on_button_pressed(self) -> None:
        self.dismiss(None)
