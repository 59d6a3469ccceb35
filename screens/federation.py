"""The federation test's results: one row per check, the fix for each failure, where the report is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.widgets import Button, DataTable, Footer, Static

from screens.base import StepScreen, stylesheet


class FederationScreen(StepScreen):
    """Pass/fail per check with details; failures get their fix spelled out below the table."""

    CSS_PATH = stylesheet("results")

    STEP = "Done"
    HEADING = "Federation test"
    BINDINGS = [Binding("ctrl+n", "continue", "Continue", show=False)]

    def __init__(self, federation: dict[str, Any] | None, report_path: Path | None, server_name: str = "SERVER_NAME") -> None:
        super().__init__()
        self.server_name = server_name
        self.federation = federation
        self.report_path = report_path

    @property
    def checks(self) -> list[dict[str, Any]]:
        return list((self.federation or {}).get("checks") or [])

    def compose(self) -> ComposeResult:
        yield from self.compose_steps()
        with VerticalScroll(id="form", can_focus=False):
            yield Static(self._summary(), id="fed-summary")
            if self.checks:
                yield DataTable(id="checks", cursor_type="row", zebra_stripes=False)
                if fixes := self._fixes():
                    yield Static(fixes, id="fixes")
            yield Static(self._report_line(), id="report-line")
        with Horizontal(id="nav"):
            yield Static("", id="nav-status")
            yield Button("Continue →", id="continue", variant="primary", compact=True)
        yield Footer()

    def _summary(self) -> str:
        if self.federation is None:
            return ("[$text-muted]The federation test did not run[/] (a dry run, or a stage it needs did not finish). "
                    f"Run it any time with: [b]matrix-installer --check {escape(self.server_name)}[/]")
        server = escape(str(self.federation.get("server_name", "")))
        failed = [c for c in self.checks if not c.get("ok")]
        if self.federation.get("ok"):
            return f"[b $text-success]✓ {server} federates:[/] all {len(self.checks)} checks passed."
        return f"[b $text-error]✗ {server}: {len(failed)} of {len(self.checks)} checks failed.[/] The fixes are below the table."

    def _fixes(self) -> str:
        failed = [c for c in self.checks if not c.get("ok")]
        if not failed:
            return ""
        lines = ["[b]What to fix[/]"]
        for check in failed:
            fix = check.get("fix") or "see the detail above"
            lines.append(f"[$text-error]✗[/] [b]{escape(str(check.get('name', '')))}[/]: {escape(str(fix))}")
        return "\n".join(lines)

    def _report_line(self) -> str:
        if self.report_path is None:
            return "[$text-muted]No report was written (dry run without --report).[/]"
        return f"Report saved to [b]{escape(str(self.report_path))}[/]"

    def on_mount(self) -> None:
        if self.checks:
            table = self.query_one("#checks", DataTable)
            table.add_columns("", "Check", "Detail")
            for check in self.checks:
                ok = bool(check.get("ok"))
                mark = Text("✓ pass", style="bold green") if ok else Text("✗ FAIL", style="bold red")
                table.add_row(mark, str(check.get("name", "")), Text(str(check.get("detail", ""))))
        self.query_one("#continue", Button).focus()

    def action_continue(self) -> None:
        self.installer.show_done()

    @on(Button.Pressed, "#continue")
    def _continue(self) -> None:
        self.action_continue()
