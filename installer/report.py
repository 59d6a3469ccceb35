"""The JSON report of SPEC.md, and the run's log file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO

from installer.events import Event, RunResult, StageFinished, StageLog, StageProgress, StageStarted, Status
from installer.files import open_private_log, write_private


def build_report(result: RunResult) -> dict[str, Any]:
    stages = []
    for stage in result.stages:
        status, error = stage.status, stage.error
        if status in (Status.PENDING, Status.RUNNING):  # never reached: the run stopped first
            status, error = Status.SKIPPED, error or "not run: the run stopped before this stage"
        stages.append(
            {"name": stage.name, "title": stage.title, "status": status.value, "seconds": round(stage.seconds, 2),
             "error": error, "hint": stage.hint}
        )
    return {
        "ok": result.ok,
        "mode": result.mode,
        "dry_run": result.dry_run,
        "interrupted": result.interrupted,
        "stages": stages,
        "federation": result.federation,
        "checks": list(result.checks),
        "links": [{"label": label, "url": url} for label, url in result.links],
    }


def write_report(result: RunResult, path: Path) -> None:
    write_private(path, (json.dumps(build_report(result), indent=2) + "\n").encode(), mode=0o644)


class RunLog:
    """Every event, timestamped, in the state folder (last-run.log): what support asks for.
    Lines arrive already masked by the engine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = open_private_log(path)  # never through a link planted there; closed by close()

    def __call__(self, event: Event) -> None:
        stamp = time.strftime("%H:%M:%S")
        match event:
            case StageStarted(stage=stage, title=title):
                text = f"{stage} started: {title}"
            case StageLog(stage=stage, line=line, kind=kind):
                text = f"{stage} [{kind}] {line}"
            case StageProgress(stage=stage, text=progress):
                text = f"{stage} progress: {progress}"
            case StageFinished(stage=stage, status=status, seconds=seconds, error=error):
                text = f"{stage} {status.value} in {seconds:.2f} s" + (f": {error}" if error else "")
            case _:
                return
        self._file.write(f"{stamp} {text}\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
