"""The stages of a run as a list: a status mark (a spinner while running) and a duration each."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from installer.events import Status

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
MARKS: dict[Status, tuple[str, str]] = {
    Status.PENDING: ("·", "dim"),
    Status.DONE: ("✓", "green"),
    Status.UNCHANGED: ("=", "green"),
    Status.PLANNED: ("✓", "cyan"),
    Status.SKIPPED: ("»", "yellow"),
    Status.FAILED: ("✗", "bold red"),
}


def format_seconds(seconds: float) -> str:
    """A short duration: 0.4s, 12s, 3m05s."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


@dataclass
class StageRow:
    """What the list knows about one stage."""

    name: str
    title: str
    status: Status = Status.PENDING
    seconds: float | None = None
    waiting: bool = False
    """Stopped on a failure, waiting for the user's decision."""


class StageList(OptionList):
    """One option per stage; `refresh_rows` redraws the marks (the spinner advances by `frame`)."""

    def __init__(self, rows: list[StageRow], *, id: str | None = None) -> None:
        self.rows = {row.name: row for row in rows}
        self.frame = 0
        super().__init__(*[Option(self._prompt(row), id=row.name) for row in rows], id=id)

    def _prompt(self, row: StageRow) -> Text:
        if row.waiting:
            mark, style = "?", "bold yellow"
        elif row.status is Status.RUNNING:
            mark, style = SPINNER[self.frame % len(SPINNER)], "bold cyan"
        else:
            mark, style = MARKS.get(row.status, ("?", ""))
        duration = format_seconds(row.seconds) if row.seconds is not None else ""
        return Text.assemble(
            (f"{mark} ", style),
            (f"{row.name:<20}", "bold" if row.status is Status.RUNNING else ""),
            (f"{duration:>6}", "dim"),
        )

    def update_row(self, name: str) -> None:
        self.replace_option_prompt(name, self._prompt(self.rows[name]))

    def spin(self) -> None:
        """Advance the spinner of running stages by one frame."""
        self.frame += 1
        for row in self.rows.values():
            if row.status is Status.RUNNING and not row.waiting:
                self.update_row(row.name)
