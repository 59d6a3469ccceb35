"""The `matrix-installer` command: the engine's command line with the guided setup plugged in.

Textual is imported only when the guided setup actually starts, so `--help` and headless runs
never pay for it; and a bare `matrix-installer` in a terminal (nothing to parse) goes straight to
the guided setup without loading the flag parser, so its first frame does not wait for it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from installer.exit_codes import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.options import RunOptions


def run_guided(answers: Answers | None, options: RunOptions) -> int:
    from screens.app import run_guided as run_app

    return run_app(answers, options)


def entry() -> None:
    if len(sys.argv) > 1 or not (sys.stdin.isatty() and sys.stdout.isatty()):
        from installer.cli import entry as cli_entry

        cli_entry(guided=run_guided)  # flags to check, or no terminal to draw on (it says so)
        return
    from installer.options import RunOptions

    try:
        sys.exit(run_guided(None, RunOptions()))  # every flag at its default (state_dir: resolved when needed)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
