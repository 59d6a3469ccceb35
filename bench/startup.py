"""Start-up: `--help` against importing Textual, the guided setup's first frame against a hello app."""

from __future__ import annotations

from bench.common import PYTHON, Row, median_seconds, print_rows

RUNS = 7


def measure() -> list[Row]:
    help_ours = median_seconds([PYTHON, "-m", "installer", "--help"], RUNS)
    import_textual = median_seconds([PYTHON, "-c", "import textual.app"], RUNS)
    frame_ours = median_seconds([PYTHON, "-m", "bench.first_frame", "bench.first_frame:guided_app"], RUNS)
    frame_hello = median_seconds([PYTHON, "-m", "bench.first_frame", "bench.hello_app:build_app"], RUNS)
    return [
        Row("matrix-installer --help vs import textual.app", help_ours, import_textual, "s", help_ours / import_textual, "<= 1.0x"),
        Row("guided setup first frame vs a hello app", frame_ours, frame_hello, "s", frame_ours / frame_hello, "<= 1.2x"),
    ]


def main() -> None:
    print_rows("Start-up (median of 7 runs, wall time of the whole process)", measure())


if __name__ == "__main__":
    main()
