"""The headless reporter: plain lines, one per event, prefixed by the stage's name, then a summary.

It is a listener on the engine's event stream, like the full-screen app; it decides nothing.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from installer.shown import plural
from installer.events import Event, RunFinished, RunResult, StageFinished, StageLog, StageProgress, StageStarted, Status

_MARK = {"command": "", "cloud": "cloud: ", "file": "", "out": "  ", "err": "  ! ", "log": ""}
PROGRESS_EVERY = 5.0
"""Seconds between progress lines of one stage: a countdown each second is noise in a log."""


class HeadlessReporter:
    def __init__(self, out: TextIO | None = None, width: int = 20) -> None:
        self.out = out or sys.stdout
        self.width = width
        self._last_progress: dict[str, tuple[float, str]] = {}

    def _line(self, stage: str, text: str) -> None:
        self.out.write(f"{stage:<{self.width}} {text}\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        match event:
            case StageStarted(stage=stage, title=title):
                self._line(stage, f"-- {title}")
            case StageLog(stage=stage, line=line, kind=kind) if kind != "debug":
                self._line(stage, f"{_MARK.get(kind, '')}{line}")
            case StageProgress(stage=stage, text=text, fraction=fraction):
                now = time.monotonic()
                last_at, last_text = self._last_progress.get(stage, (float("-inf"), ""))
                if text != last_text and (now - last_at >= PROGRESS_EVERY or fraction == 1.0):
                    self._last_progress[stage] = (now, text)
                    self._line(stage, f"... {text}")
            case StageFinished(stage=stage, status=status, seconds=seconds, error=error, hint=hint):
                if status is Status.FAILED:
                    self._line(stage, f"FAILED after {seconds:.1f} s: {error}")
                    if hint:
                        self._line(stage, f"what to do: {hint}")
                elif error:
                    self._line(stage, f"{status.value}: {error}")
                else:
                    self._line(stage, f"{status.value} ({seconds:.1f} s)")
            case RunFinished():
                pass

    def summary(self, result: RunResult) -> None:
        w = self.width
        out = self.out
        out.write("\nSummary\n")
        for stage in result.stages:
            status = "skipped" if stage.status is Status.PENDING else stage.status.value
            note = f"  {stage.error}" if stage.error else ""
            out.write(f"  {stage.name:<{w}} {status:<10} {stage.seconds:6.1f} s{note.splitlines()[0] if note else ''}\n")
        if result.federation:
            verdict = "passed" if result.federation.get("ok") else "FAILED"
            out.write(f"  federation test for {result.federation.get('server_name')}: {verdict}\n")
        for check in result.checks:
            out.write(f"  {'✓' if check['ok'] else '✗'} {check['name']}  {check['detail']}\n")
        for label, url in result.links if not result.dry_run else ():
            out.write(f"  Open {label}: {url}\n")
        failed = [s.name for s in result.stages if s.status is Status.FAILED]
        if result.interrupted:
            out.write("\nInterrupted. State is saved: rerun the same command to resume.\n")
        elif not result.ok:
            what = f"failed: {', '.join(failed)}" if failed else "the federation test failed"
            again = "run the check again" if result.mode == "check" else "rerun the same command to resume"
            out.write(f"\nNot finished ({what}). Fix what is shown above and {again}.\n")
        elif result.dry_run:
            out.write(f"\nDry run: {plural(len(result.stages), 'stage')} planned; nothing was contacted or changed.\n")
        else:
            out.write("\nAll stages finished.\n")
        out.flush()

    def show_once(self, result: RunResult) -> None:
        """Generated secrets, shown this once (never logged): the user must store them now."""
        if not result.shown_once:
            return
        target = self.out
        try:
            target = open("/dev/tty", "w")  # noqa: SIM115 - a log file catching stdout must not get them
        except OSError:
            pass
        target.write("\nShown once, never in a log - keep these now:\n")
        for label, value in result.shown_once:
            target.write(f"  {label}: {value}\n")
        target.flush()
        if target is not self.out:
            target.close()
            self.out.write("\n(Generated secrets were shown on the terminal, not in this output.)\n")
