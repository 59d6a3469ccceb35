"""The top line: where the user is in the guided setup, and whether this is a dry run."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

STEPS: tuple[str, ...] = ("Welcome", "Cloud", "Domain", "Keys", "Accounts", "Server", "Review", "Install", "Done")
DRY_RUN_BADGE = "[b $background on $warning]DRY RUN[/]"


class Steps(Widget):
    """Every step's name, the current one highlighted, the ones before it marked done; a dry run's
    badge at the right end. One widget drawing one line (every screen's first frame has it)."""

    def __init__(self, current: str, *, dry_run: bool = False, mode: str = "install") -> None:
        super().__init__(id="steps")
        self.current = current
        self.dry_run = dry_run
        self.mode = mode

    def _names(self, *, short: bool = False, tight: bool = False) -> str:
        index = STEPS.index(self.current)
        parts = []
        for number, name in enumerate(STEPS):
            if short and number == 0 and index > 0:
                continue  # Welcome is behind for good once left
            shown = "Upgrade" if name == "Install" and self.mode == "upgrade" else name
            if number < index:
                parts.append(f"[$text-success]{shown}[/]")
            elif number == index:
                parts.append(f"[b reverse $accent] {shown} [/]")
            else:
                parts.append(f"[$text-muted]{shown}[/]")
        return ("›" if tight else " › ").join(parts)

    def render(self) -> Content:
        badge = Content.from_markup(DRY_RUN_BADGE) if self.dry_run else Content("")
        # A narrow terminal: Welcome goes once it is behind, then the spaces around the arrows.
        for short, tight in ((False, False), (True, False), (True, True)):
            names = Content.from_markup(self._names(short=short, tight=tight))
            if names.cell_length + badge.cell_length + 1 <= self.content_region.width:
                break
        if not self.dry_run:
            return names
        gap = max(1, self.content_region.width - names.cell_length - badge.cell_length)
        return names + " " * gap + badge
