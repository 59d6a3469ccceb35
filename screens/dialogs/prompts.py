"""Small questions: a file path to save to, and "are you sure?"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from installer.checks import path as check_path
from screens.dialogs.base import Dialog


class PathDialog(Dialog[Path | None]):
    """Ask where to write a file; Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, default: Path, note: str = "",
                 check: Callable[[Path], str | None] | None = None) -> None:
        """`check`: what stops writing at a path (a folder there, say), said here so another can be typed."""
        super().__init__()
        self.title_text = title
        self.default = default
        self.note = note
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as box:
            box.border_title = self.title_text
            if self.note:
                yield Static(self.note, classes="dialog-message", markup=False)
            yield Input(str(self.default), id="path", compact=True)
            yield Static("", classes="dialog-problem", id="path-problem", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        text = self.query_one("#path", Input).value.strip()
        problem = check_path(text)
        if problem is None and self.check is not None:
            problem = self.check(Path(text).expanduser())
        if problem:
            self.query_one("#path-problem", Static).update(f"✗ The path {problem}")
            return
        self.dismiss(Path(text).expanduser())

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(Dialog[bool]):
    """A yes/no question; Esc means no."""

    BINDINGS = [Binding("escape", "answer(False)", "No")]

    def __init__(self, title: str, question: str, yes: str, no: str = "Cancel") -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as box:
            box.border_title = self.title_text
            yield Static(self.question, classes="dialog-message", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.no, id="no", compact=True)
                yield Button(self.yes, id="yes", variant="warning", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_answer(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
