"""What a federation check found: one `Check` per question, and the whole `FederationReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from installer.shown import escape

CHECK_ORDER = (
    "well-known",
    "dns",
    "tls",
    "server-keys",
    "federation-version",
    "@",
    "certificate-expiry",
    "clock",
    "client-well-known",
    "client-versions",
    "registration",
    "admin-login",
    "outbound",
)
"""The report's order: discovery as the spec (and the public tester's Report()) goes, .well-known
then DNS then each address; "@" stands for the per-address checks (`tls@ADDR`, ...), which keep
the order they were made in (address by address)."""


def order_key(name: str) -> int:
    """Where a check goes in the report (see CHECK_ORDER); unknown names go last."""
    base = "@" if "@" in name else name
    return CHECK_ORDER.index(base) if base in CHECK_ORDER else len(CHECK_ORDER)


@dataclass(frozen=True)
class Check:
    """One answer: its name (see CHECK_ORDER), whether it passed, what was seen, what to do.
    `warning`: it passed, but something deserves a look (a redirect some servers do not follow, a
    certificate close to its end); the fix says what to do, and the run does not fail for it."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    warning: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix, "warning": self.warning}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        """A check as `to_json` wrote it (the self-test's history on the host keeps the same shape)."""
        fix = data.get("fix")
        return cls(str(data.get("name", "?")), bool(data.get("ok")), str(data.get("detail", "")),
                   str(fix) if fix else None, bool(data.get("warning")))

    def summary_line(self) -> str:
        """One printed line: what the network sent (a .well-known's base URL, an error message)
        is escaped, so it can never add a line of its own, such as a forged instruction."""
        mark = ("!" if self.warning else "✓") if self.ok else "✗"
        line = f"{mark} {self.name}  {escape(self.detail)}"
        if (not self.ok or self.warning) and self.fix:
            line += f" -> fix: {escape(self.fix)}"
        return line


@dataclass
class FederationReport:
    """The checks in a stable order, plus a section shaped like the public federation tester's."""

    server_name: str
    checks: list[Check] = field(default_factory=list)
    tester: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    base_url: str = ""
    """The client API's base URL the client .well-known named (where a stranger's client goes)."""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    @property
    def warnings(self) -> list[Check]:
        return [check for check in self.checks if check.ok and check.warning]

    def add(self, *checks: Check | None) -> None:
        """More checks (made on the host, after the test from outside), kept in report order."""
        from installer.federation.report import order_key

        self.checks = sorted([*self.checks, *(c for c in checks if c is not None)], key=lambda c: order_key(c.name))

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
