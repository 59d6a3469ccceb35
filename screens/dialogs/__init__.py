"""Modal dialogs, each a ModalScreen returning a typed result."""

from screens.dialogs.error import ErrorDialog
from screens.dialogs.failure import Choice, FailureDialog
from screens.dialogs.prompts import ConfirmDialog, PathDialog

__all__ = ["Choice", "ConfirmDialog", "ErrorDialog", "FailureDialog", "PathDialog"]
