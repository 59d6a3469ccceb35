"""One answers key as a form row: label, an input fitting its type, help text, and its problem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, RadioButton, RadioSet, Select, Static

from installer.answers import FIELDS_BY_PATH, check_field, in_words, parse_field_text

_PREDICATES = ("is ", "must ", "contains ", "has ", "looks ", "points ", "only ")


def label_for(path: str) -> str:
    """The words a person sees for an answers key (its declaration's label)."""
    spec = FIELDS_BY_PATH.get(path)
    return spec.label if spec else path


class MarkedCheckbox(Checkbox):
    """A checkbox whose mark shows its state by shape (✓ or empty), not by colour alone."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "✓" if self.value else " "


class MarkedRadioButton(RadioButton):
    """A radio button whose mark shows its state by shape (● or empty), not by colour alone."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "●" if self.value else " "


class FormField(Vertical):
    """A labelled input for one answers key, checked as the user types and when they leave it."""

    @dataclass
    class Changed(Message):
        """The field's value changed (`final` when the user left the field)."""

        field: FormField
        final: bool

        @property
        def control(self) -> FormField:
            return self.field

    def __init__(
        self,
        path: str,
        value: Any,
        *,
        options: list[tuple[str, str]] | None = None,
        help: str | None = None,
        option_guides: list[tuple[str, str]] | None = None,
        placeholder: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id or f"field-{path.replace('.', '-')}", classes="form-field")
        self.path = path
        self.spec = FIELDS_BY_PATH[path]
        declared = self.spec.declared
        self._initial = value
        self._options = options if options is not None else list(declared.options) or None
        self._option_guides = dict(option_guides if option_guides is not None else declared.option_guides)
        self._help = self._help_of(value) if help is None else help
        self._help_given = help is not None
        """Help worded by the step itself: it stays as the step words it."""
        self._placeholder = declared.placeholder if placeholder is None else placeholder
        self._cross_problem: str | None = None
        self._own_problem: str | None = None
        self._filled_in = False
        """The program wrote the value (set_text), and the user has not typed in it since."""
        self.touched = False

    # --- composition ------------------------------------------------------------------
    @property
    def kind(self) -> str:
        if isinstance(self.spec.default, bool):
            return "bool"
        if self._options:
            return "radio"
        if self.spec.choices:
            return "select"
        return "text"

    def compose(self) -> ComposeResult:
        with Horizontal(classes="field-row"):
            yield Label(label_for(self.path), classes="field-label")
            control_id = "control"
            if self.kind == "bool":
                yield MarkedCheckbox(self.spec.declared.checkbox or "yes", bool(self._initial), id=control_id, compact=True)
            elif self.kind == "radio":
                with RadioSet(id=control_id, compact=True):
                    for value, text in self._options or []:
                        yield MarkedRadioButton(text, value == self._initial, name=value)
            elif self.kind == "select":
                yield Select([(c, c) for c in self.spec.choices], value=self._initial, allow_blank=False, id=control_id, compact=True)
            else:
                yield Input(str(self._initial), placeholder=self._placeholder, id=control_id, compact=True, select_on_focus=False)
        if self._help:
            yield Static(self._help, classes="field-help", markup=False)
        yield Static("", classes="field-problem", markup=False)

    def _help_of(self, value: object) -> str:
        """The help with `value` chosen: its own words when the choice has them."""
        return self._option_guides.get(str(value), self.spec.declared.form_help)

    def set_help(self, text: str) -> None:
        """Word the help for what has been typed (user IDs with the server name, say)."""
        for help_line in self.query(".field-help").results(Static):
            help_line.update(text)

    # --- value ------------------------------------------------------------------------
    @property
    def control(self) -> Input | Checkbox | RadioSet | Select[str]:
        return self.query_one("#control")  # type: ignore[return-value]

    def raw(self) -> tuple[Any, str | None]:
        """The value in the key's type, and why it could not be read (None when it could)."""
        control = self.control
        if isinstance(control, Checkbox):
            return control.value, None
        if isinstance(control, RadioSet):
            pressed = control.pressed_button
            return (pressed.name if pressed else self._initial), None
        if isinstance(control, Select):
            return control.value, None
        return parse_field_text(self.path, control.value)

    @property
    def value(self) -> Any:
        """The parsed value, or the initial one when the text is not of the key's type yet."""
        value, problem = self.raw()
        return self._initial if problem else value

    @property
    def parsed(self) -> bool:
        return self.raw()[1] is None

    def set_text(self, text: str) -> None:
        """Fill the field in for the user (a suggestion): the cursor goes to its end, and entering
        the field selects it all, so what the user types replaces it rather than landing inside it."""
        control = self.control
        if isinstance(control, Input):
            control.value = text
            control.cursor_position = len(text)
            self._filled_in = True

    # --- problems ---------------------------------------------------------------------
    def check(self) -> str | None:
        """Check the value on its own; show and return what is wrong."""
        value, problem = self.raw()
        self._own_problem = problem or check_field(self.path, value)
        self._show()
        return self._own_problem

    def set_cross_problem(self, problem: str | None) -> None:
        """A problem involving other keys too (from installer.answers.cross_problems), in the form's words."""
        self._cross_problem = in_words(problem, form=True) if problem else None
        self._show()

    @property
    def problem(self) -> str | None:
        return self._own_problem or self._cross_problem

    def _sentence(self, problem: str) -> str:
        """Prefix the label when the problem reads as a predicate ("is required")."""
        if problem.startswith(_PREDICATES):
            return f"{label_for(self.path)} {problem}"
        return problem[:1].upper() + problem[1:]

    def _show(self) -> None:
        problem = self.problem
        target = self.query_one(".field-problem", Static)
        target.update(f"✗ {self._sentence(problem)}" if problem else "")
        self.set_class(bool(problem), "-invalid")

    # --- events -----------------------------------------------------------------------
    def _changed(self, final: bool) -> None:
        self.check()
        self.post_message(self.Changed(self, final))

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        # The Input says its first value changed too, as it mounts: that is not the user's doing.
        if event.value == str(self._initial) and not self.touched:
            return
        self.touched = True
        self._filled_in = False
        self._changed(final=False)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        control = self.control
        if self._filled_in and isinstance(control, Input) and control.value:
            # After the Input's own focus handling, which would otherwise keep the old cursor.
            self.call_after_refresh(control.select_all)

    @on(Input.Blurred)
    def _input_left(self, event: Input.Blurred) -> None:
        event.stop()
        self._changed(final=True)

    @on(Checkbox.Changed)
    @on(RadioSet.Changed)
    @on(Select.Changed)
    def _choice_changed(self, event: Message) -> None:
        event.stop()
        self.touched = True
        if self._option_guides and not self._help_given:
            self.set_help(self._help_of(self.value))  # the help of the choice made
        self._changed(final=True)
