"""Whole run: a full headless install on the lab host, wall time against the critical path (the
longest chain of stage durations through the plan's dependencies). Close to 1.0x means the
independent stages really overlap; a sequential installer would score the sum of all stages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Row, print_rows

def critical_path(stages: list[dict], needs: dict[str, tuple[str, ...]]) -> tuple[float, list[str]]:
    """The longest chain of durations through the dependency graph (stages are in plan order)."""
    best: dict[str, tuple[float, list[str]]] = {}
    for stage in stages:
        before = max((best[n] for n in needs[stage["name"]]), default=(0.0, []), key=lambda item: item[0])
        best[stage["name"]] = (before[0] + stage["seconds"], [*before[1], stage["name"]])
    return max(best.values(), key=lambda item: item[0])


def measure() -> tuple[list[Row], list[str]]:
    from installer.answers import parse_answers
    from installer.plan import install_plan
    from tests.lab import lab

    from tests.lab.scenarios import existing_server_answers, ready_host

    lab.ensure_docker_engine()
    work = Path(tempfile.mkdtemp(prefix="mi-bench-run-"))
    try:
        with ready_host(lab.build_host_image(), lab.session_key(work), lab.build_synapse_image(),
                        postgres_image=lab.build_postgres_image()) as host:
            answers = work / "answers.toml"
            answers.write_text(existing_server_answers(host, registration='admin_password_env = "MI_BENCH_ADMIN_PASSWORD"'))
            report = work / "report.json"
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "installer", "--answers", str(answers), "--state-dir", str(work / "state"), "--report", str(report),
                 "--peer", "none"],
                cwd=ROOT, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
                env={**os.environ, "MI_BENCH_ADMIN_PASSWORD": "bench-password-123"},
            )
            wall = time.perf_counter() - started
            result = json.loads(report.read_text())
            plan = {s.name: s.needs for s in install_plan(parse_answers(answers.read_text()))}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The federation test cannot pass without DNS and the lab CA: measure the stages up to it.
    stages = [s for s in result["stages"] if s["name"] != "federation.check"]
    fed = next(s for s in result["stages"] if s["name"] == "federation.check")
    longest, chain = critical_path(stages, plan)
    wall_stages = wall - fed["seconds"]
    total = sum(s["seconds"] for s in stages)
    notes = [
        "stages: " + ", ".join(f"{s['name']} {s['status']} {s['seconds']:.1f}s" for s in result["stages"]),
        f"critical path: {' -> '.join(chain)} = {longest:.1f} s; sum of all stages (a sequential run) = {total:.1f} s",
    ]
    return [Row("install wall time vs critical path", wall_stages, longest, "s", wall_stages / longest, "<= 1.15x")], notes


def main() -> None:
    rows, notes = measure()
    print_rows("Whole run: headless install on the lab host (provider existing, distro packages)", rows)
    for note in notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
