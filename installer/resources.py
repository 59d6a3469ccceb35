"""Where the shipped data lives: `templates/` and `assets/` beside the packages in a checkout
(and an editable install), or under the environment's share/matrix-installer/ in a wheel install."""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
INSTALLED = Path(sys.prefix) / "share" / "matrix-installer"


def data_dir(name: str) -> Path:
    """`templates` or `assets`: the checkout's copy if there is one, else the installed one."""
    here = CHECKOUT / name
    return here if here.is_dir() else INSTALLED / name
