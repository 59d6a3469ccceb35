"""Reusable pieces of the guided setup's screens (loaded on first use: the Welcome screen needs
only the steps line, and the form fields bring in the answers model)."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "FormField": "screens.widgets.field",
    "label_for": "screens.widgets.field",
    "StageList": "screens.widgets.stage_list",
    "StageRow": "screens.widgets.stage_list",
    "format_seconds": "screens.widgets.stage_list",
    "Steps": "screens.widgets.steps",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'screens.widgets' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
