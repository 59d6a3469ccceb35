"""Reusable pieces of the guided setup's screens."""

from screens.widgets.field import FormField, label_for
from screens.widgets.stage_list import StageList, StageRow, format_seconds
from screens.widgets.steps import Steps

__all__ = ["FormField", "StageList", "StageRow", "Steps", "format_seconds", "label_for"]
