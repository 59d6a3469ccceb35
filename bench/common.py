"""Timing helpers and the one table format every benchmark prints."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Row:
    """One measured figure next to its anchor, the ratio that the goal is stated in, and the verdict."""

    name: str
    ours: float
    anchor: float
    unit: str
    ratio: float
    goal: str

    @property
    def met(self) -> bool:
        op, target = self.goal.split()[0], float(self.goal.split()[1].rstrip("x"))
        return self.ratio <= target if op == "<=" else self.ratio >= target


def median_seconds(argv: list[str], runs: int, *, env: dict[str, str] | None = None) -> float:
    """Median wall time of a command, after one warm-up run (file cache, .pyc files)."""
    subprocess.run(argv, capture_output=True, check=True, cwd=ROOT, env=env)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, cwd=ROOT, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def paired_medians(ours: list[str], anchor: list[str], runs: int) -> tuple[float, float]:
    """Median wall times of two commands run alternately, so that drift in the machine's load
    touches both alike (a start-up figure is ~0.2 s: noise matters)."""
    for argv in (ours, anchor):
        subprocess.run(argv, capture_output=True, check=True, cwd=ROOT)
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(runs):
        for index, argv in enumerate((ours, anchor)):
            started = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True, cwd=ROOT)
            times[index].append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(f"  {'measure':<52} {'ours':>12} {'anchor':>12} {'ratio':>7}  goal")
    for r in rows:
        mark = "met" if r.met else "MISSED"
        print(f"  {r.name:<52} {r.ours:>9.3f} {r.unit:<2} {r.anchor:>9.3f} {r.unit:<2} {r.ratio:>6.2f}x  {r.goal} ({mark})")
