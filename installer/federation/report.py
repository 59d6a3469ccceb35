"""What a federation check found: one `Check` per question, and the whole `FederationReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from installer.shown import escape

CHECK_ORDER = (
    "dns",
    "well-known",
    "tls",
    "server-keys",
    "federation-version",
    "client-well-known",
    "client-versions",
    "registration",
    "admin-login",
)


@dataclass(frozen=True)
class Check:
    """One answer: its name (see CHECK_ORDER), whether it passed, what was seen, what to do."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}

    def summary_line(self) -> str:
        """One printed line: what the network sent (a .well-known's base URL, an error message)
        is escaped, so it can never add a line of its own, such as a forged instruction."""
        mark = "✓" if self.ok else "✗"
        line = f"{mark} {self.name}  {escape(self.detail)}"
        if not self.ok and self.fix:
            line += f" -> fix: {escape(self.fix)}"
        return line


@dataclass
class FederationReport:
    """The checks in a stable order, plus a section shaped like the public federation tester's."""

    server_name: str
    checks: list[Check] = field(default_factory=list)
    tester: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def check(self, name: str) -> Check | None:
        """The check called `name`, if it ran."""
        return next((c for c in self.checks if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "server_name": self.server_name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "checks": [check.to_json() for check in self.checks],
            "tester": self.tester,
        }

    def summary_lines(self) -> list[str]:
        return [check.summary_line() for check in self.checks]
