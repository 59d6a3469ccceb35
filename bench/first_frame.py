"""Start an app headless and exit as soon as its first frame is drawn (timed from outside).

Usage: python -m bench.first_frame MODULE:FACTORY
"""

from __future__ import annotations

import importlib
import sys


def guided_app():
    """The guided setup as `matrix-installer` opens it: the command's own flag parsing and entry
    module, then Welcome (which looks around this machine right after its first frame)."""
    import screens.main  # noqa: F401 - what the console script imports
    from installer.cli import _parser, options_from_args
    from screens.app import InstallerApp

    return InstallerApp(None, options_from_args(_parser().parse_args([])))


def main(target: str) -> None:
    module_name, _, factory = target.partition(":")
    app = getattr(importlib.import_module(module_name), factory)()
    app.call_after_refresh(app.exit)
    app.run(headless=True, size=(80, 24))


if __name__ == "__main__":
    main(sys.argv[1])
