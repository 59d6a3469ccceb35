"""Start-up: `--help` against importing Textual, the guided setup's first frame against a hello app.

Both sides run from bytecode, as pip leaves an installed package (this checkout's .pyc files are
compiled first: with PYTHONDONTWRITEBYTECODE set, our modules would otherwise be compiled from
source on every start while Textual's come precompiled)."""

from __future__ import annotations

import compileall
import tempfile

from bench.common import PYTHON, ROOT, Row, paired_medians, print_rows
from bench.first_frame import paired as paired_first_frames

RUNS = 21


def measure() -> list[Row]:
    for package in ("installer", "screens", "bench", "tests"):
        compileall.compile_dir(ROOT / package, quiet=1)
    help_ours, import_textual = paired_medians([PYTHON, "-m", "installer", "--help"], [PYTHON, "-c", "import textual.app"], RUNS)
    with tempfile.TemporaryDirectory() as home:
        frame_ours, frame_hello = paired_first_frames(RUNS, home)
    return [
        Row("matrix-installer --help vs import textual.app", help_ours, import_textual, "s", help_ours / import_textual, "<= 1.0x"),
        Row("guided setup first frame vs a hello app (in a terminal)", frame_ours, frame_hello, "s", frame_ours / frame_hello, "<= 1.2x"),
    ]


def main() -> None:
    print_rows(f"Start-up (median of {RUNS} alternating runs; --help: the whole process; first frame: until it is on the terminal)", measure())


if __name__ == "__main__":
    main()
