"""The first frame as a person sees it: the command started in an 80x24 pseudo-terminal, timed
until the first frame's own text arrives on the terminal (teardown and what happens after the
first frame, such as Welcome's look around this machine, are not counted).

Usage: python -m bench.first_frame [ours|hello]
"""

from __future__ import annotations

import os
import statistics
import sys

from bench.common import PYTHON, ROOT
from tests.fixtures.terminal import Terminal

# What each one shows in its first frame, and the command that shows it.
COMMANDS = {
    "ours": ([PYTHON, "-m", "screens"], b"Set up your own Matrix homeserver"),  # = the matrix-installer console script
    "hello": ([PYTHON, "-m", "bench.hello_app"], b"Hello"),
}


def first_frame_seconds(which: str, home: str) -> float:
    argv, marker = COMMANDS[which]
    env = {"PATH": os.environ["PATH"], "HOME": home, "XDG_STATE_HOME": f"{home}/state", "LANG": "C.UTF-8"}
    with Terminal(argv, cwd=ROOT, env=env) as term:
        return term.wait_for_bytes(marker)


def paired(runs: int, home: str) -> tuple[float, float]:
    """Medians of both, run alternately so that drift in the machine's load touches both alike."""
    for which in COMMANDS:  # warm-up: file cache
        first_frame_seconds(which, home)
    times: dict[str, list[float]] = {which: [] for which in COMMANDS}
    for _ in range(runs):
        for which in COMMANDS:
            times[which].append(first_frame_seconds(which, home))
    return statistics.median(times["ours"]), statistics.median(times["hello"])


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        print(f"{first_frame_seconds(sys.argv[1] if len(sys.argv) > 1 else 'ours', home):.3f} s")
