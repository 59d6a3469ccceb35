"""What every dialog shares: a box in the middle over the dimmed step, styled by dialogs.tcss."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen

from screens.base import stylesheet

ResultType = TypeVar("ResultType")


class Dialog(ModalScreen[ResultType]):
    """A modal screen returning a typed result (its dismiss value)."""

    CSS_PATH = stylesheet("dialogs")

    def __init__(self) -> None:
        super().__init__(classes="dialog-screen")
