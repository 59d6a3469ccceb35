"""The `matrix-installer` command: the engine's command line with the guided setup plugged in.

Textual is imported only when the guided setup actually starts, so `--help` and headless runs
never pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from installer.cli import entry as cli_entry

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.options import RunOptions


def run_guided(answers: Answers | None, options: RunOptions) -> int:
    from screens.app import run_guided as run_app

    return run_app(answers, options)


def entry() -> None:
    cli_entry(guided=run_guided)
