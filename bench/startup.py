"""Start-up: `--help` against importing Textual, the guided setup's first frame against a hello app."""

from __future__ import annotations

from bench.common import PYTHON, Row, paired_medians, print_rows

RUNS = 21


def measure() -> list[Row]:
    help_ours, import_textual = paired_medians([PYTHON, "-m", "installer", "--help"], [PYTHON, "-c", "import textual.app"], RUNS)
    frame_ours, frame_hello = paired_medians([PYTHON, "-m", "bench.first_frame", "bench.first_frame:guided_app"],
                                             [PYTHON, "-m", "bench.first_frame", "bench.hello_app:build_app"], RUNS)
    return [
        Row("matrix-installer --help vs import textual.app", help_ours, import_textual, "s", help_ours / import_textual, "<= 1.0x"),
        Row("guided setup first frame vs a hello app", frame_ours, frame_hello, "s", frame_ours / frame_hello, "<= 1.2x"),
    ]


def main() -> None:
    print_rows(f"Start-up (median of {RUNS} alternating runs, wall time of the whole process)", measure())


if __name__ == "__main__":
    main()
