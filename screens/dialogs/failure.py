"""A stage failed: its last lines, and Retry / Skip / Give up / Quit and resume later."""

from __future__ import annotations

from typing import Literal

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from screens.dialogs.base import Dialog

Choice = Literal["retry", "skip", "fail", "quit"]


class FailureDialog(Dialog[Choice]):
    """Ask what to do about a failed stage; "skip" is offered only where nothing depends on it."""

    BINDINGS = [
        Binding("r", "choose('retry')", "Retry"),
        Binding("s", "choose('skip')", "Skip", show=False),
        Binding("g", "choose('fail')", "Give up"),
        Binding("q", "choose('quit')", "Quit, resume later"),
    ]

    def __init__(self, name: str, title: str, error: str, hint: str | None, last_lines: list[str], *, skippable: bool) -> None:
        super().__init__()
        self.stage_name = name
        self.stage_title = title
        self.error = error
        self.hint = hint
        self.last_lines = last_lines
        self.skippable = skippable

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -error", id="failure") as box:
            box.border_title = f"{self.stage_name} failed"
            yield Static(self.stage_title, classes="dialog-subtitle", markup=False)
            yield Static(self.error, classes="dialog-message", markup=False)
            if self.hint:
                yield Static(f"What to do: {self.hint}", classes="dialog-hint", markup=False)
            if self.last_lines:
                tail = Static("\n".join(self.last_lines), classes="dialog-tail", markup=False)
                tail.border_title = "last lines"
                yield tail
            with Horizontal(classes="dialog-buttons"):
                yield Button("Retry", id="retry", variant="primary", compact=True)
                if self.skippable:
                    yield Button("Skip", id="skip", compact=True)
                yield Button("Give up on it", id="fail", compact=True)
                yield Button("Quit, resume later", id="quit", variant="warning", compact=True)
            yield Static(
                "Give up: stages that need this one are skipped; the run ends with exit status 1. "
                "Quit: the state is saved, run matrix-installer again to resume.",
                classes="dialog-note",
            )

    def on_mount(self) -> None:
        self.query_one("#retry", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_choose(event.button.id or "fail")

    def action_choose(self, choice: str) -> None:
        if choice == "skip" and not self.skippable:
            return
        self.dismiss(choice)  # type: ignore[arg-type]
