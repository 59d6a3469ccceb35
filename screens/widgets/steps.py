"""The top line: where the user is in the guided setup, and whether this is a dry run."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

STEPS: tuple[str, ...] = ("Welcome", "Cloud", "Domain", "Keys", "Accounts", "Review", "Install", "Done")


class Steps(Horizontal):
    """Every step's name, the current one highlighted, the ones before it marked done."""

    def __init__(self, current: str, *, dry_run: bool = False, mode: str = "install") -> None:
        super().__init__(id="steps")
        self.current = current
        self.dry_run = dry_run
        self.mode = mode

    def compose(self) -> ComposeResult:
        index = STEPS.index(self.current)
        parts = []
        for number, name in enumerate(STEPS):
            shown = "Upgrade" if name == "Install" and self.mode == "upgrade" else name
            if number < index:
                parts.append(f"[$text-success]{shown}[/]")
            elif number == index:
                parts.append(f"[b reverse $accent] {shown} [/]")
            else:
                parts.append(f"[$text-muted]{shown}[/]")
        yield Static(" › ".join(parts), id="steps-names")
        if self.dry_run:
            yield Static("DRY RUN", id="steps-dry-run")
