"""Secrets known to this run, and the one place they are masked before anything is shown or stored."""

from __future__ import annotations

MASK = "********"


class Secrets:
    """Every secret the run handles is registered here; `redact` masks them all in any text."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> str:
        if value and len(value) >= 4:
            self._values.add(value)
        return value

    def redact(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return text
