"""Form steps: collect the fields into the answers and refuse to go on while one is wrong."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Collapsible, Footer, Input, Static

from installer.answers import FIELDS, FIELDS_BY_PATH, Answers, FieldSpec, cross_problems
from screens.base import StepScreen, stylesheet
from screens.widgets import FormField


class FormScreen(StepScreen):
    """A form over some answers keys: Back keeps what was typed, Next only when all is well."""

    CSS_PATH = stylesheet("forms")
    INTRO = ""
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+n", "next", "Next"),
    ]

    def compose(self) -> ComposeResult:
        yield from self.compose_steps()
        with Horizontal(id="body"):
            with VerticalScroll(id="form", can_focus=False):
                if self.INTRO:
                    yield Static(self.INTRO, classes="intro")
                yield from self.compose_form()
            yield from self.compose_aside()
        with Horizontal(id="nav"):
            # Esc goes back; Tab from the last field should land on Next, not Back.
            back = Button("← Back", id="back", compact=True)
            back.can_focus = False
            yield back
            yield Static("", id="nav-status")
            yield Button("Next →", id="next", variant="primary", compact=True)
        yield Footer()

    def compose_form(self) -> ComposeResult:
        """Every key the components declare for this step (installer.sections)."""
        yield from self.declared_fields()

    def compose_aside(self) -> ComposeResult:
        """Anything shown beside (wide) or under (narrow) the form, such as a live preview."""
        yield from ()

    def asked(self) -> list[FieldSpec]:
        """This step's keys, in declaration order, leaving out those this mode does not ask
        (an upgrade does not ask again for a VM's shape; an install has no old database to move)."""
        mode = self.installer.options.mode
        return [s for s in FIELDS if s.step == self.STEP and mode in s.declared.modes]

    def declared_fields(self, *, skip: tuple[str, ...] = ()) -> ComposeResult:
        """The fields for this step's keys: ungrouped first, then each group folded (keys most
        people leave alone)."""
        groups: dict[str, list[FieldSpec]] = {}
        for spec in self.asked():
            if spec.path not in skip:
                groups.setdefault(spec.declared.group, []).append(spec)
        for spec in groups.pop("", []):
            yield self.field(spec.path)
        for title, specs in groups.items():
            with Collapsible(title=title, collapsed=True, classes="fold"):
                for spec in specs:
                    yield self.field(spec.path)

    def field_options(self, path: str) -> dict[str, Any]:
        """What this step words its own way for a key (help naming what it found, say)."""
        return {}

    def field(self, path: str, **kwargs: Any) -> FormField:
        """A form field for `path`, prefilled from the answers so far."""
        section, key = path.split(".")
        return FormField(path, getattr(getattr(self.installer.answers, section), key), **{**self.field_options(path), **kwargs})

    def on_mount(self) -> None:
        self.update_visibility()
        self.update_aside()
        first = next(iter(self.shown_fields()), None)
        if first is not None:
            first.control.focus()

    # --- the answers these fields make ------------------------------------------------
    def shown_fields(self) -> list[FormField]:
        """The fields that apply (a group hidden by a choice, class "-na", does not)."""
        return [f for f in self.query(FormField) if not any(a.has_class("-na") for a in f.ancestors_with_self)]

    def draft(self) -> Answers:
        """The answers with every readable value on this screen applied; a key that does not
        apply to them (OCPUs for a fixed shape) keeps its default."""
        answers = self.installer.answers
        for item in self.query(FormField):
            if item.parsed:
                section, key = item.path.split(".")
                answers = answers.replace(section, **{key: item.value})
        for item in self.query(FormField):
            spec = FIELDS_BY_PATH[item.path]
            if spec.declared.applies is not None and not spec.declared.applies(answers):
                section, key = item.path.split(".")
                answers = answers.replace(section, **{key: spec.default})
        return answers

    def check_cross(self, answers: Answers, *, only_touched: bool) -> list[str]:
        """Show problems involving several keys on the fields here; return them."""
        fields = {f.path: f for f in self.shown_fields()}
        found: dict[str, str] = {}
        for path, message in [*cross_problems(answers), *self.step_problems(answers)]:
            if path in fields and path not in found:
                found[path] = message
        shown = []
        for path, item in fields.items():
            problem = found.get(path)
            if only_touched and problem and not item.touched:
                problem = None
            item.set_cross_problem(problem)
            if problem:
                shown.append(problem)
        return shown

    def step_problems(self, answers: Answers) -> list[tuple[str, str]]:
        """(path, message) for what this step finds wrong beyond the answers file's own checks
        (an admin password in the environment that the server would refuse): shown on the field,
        and Next refuses, as for any other problem."""
        return []

    def update_visibility(self) -> None:
        """Show only the fields that apply to the answers as they stand (their declarations say
        when: the OCI settings for Oracle Cloud, OCPUs for a Flex shape); a fold with none goes too."""
        draft = self.draft()
        mode = self.installer.options.mode
        for item in self.query(FormField):
            item.set_class(not FIELDS_BY_PATH[item.path].applies(draft, mode), "-na")
        for fold in self.query(Collapsible):
            inside = list(fold.query(FormField))
            if inside:
                fold.set_class(all(f.has_class("-na") for f in inside), "-na")

    def update_aside(self) -> None:
        """Redraw anything computed from the answers (a preview, a status line)."""

    @on(FormField.Changed)
    def _field_changed(self, event: FormField.Changed) -> None:
        self.update_visibility()
        self.update_aside()
        if event.final:
            self.check_cross(self.draft(), only_touched=True)
        if self.query_one("#nav-status", Static).has_class("-invalid"):  # the count Next showed follows the fixes
            self.show_fix_count()

    def show_fix_count(self) -> int:
        """"✗ N fields to fix" beside Next (nothing when none); returns N."""
        count = len({f.path for f in self.shown_fields() if f.problem})
        status = self.query_one("#nav-status", Static)
        status.update(f"✗ {count} field{'s' if count != 1 else ''} to fix" if count else "")
        status.set_class(bool(count), "-invalid")
        return count

    @on(Input.Submitted)
    def _enter_moves_on(self, event: Input.Submitted) -> None:
        """Enter in a field goes to the next one (Tab does too); in the last one, it means Next."""
        fields = self.shown_fields()
        if fields and event.input is fields[-1].control:
            self.action_next()
        else:
            self.focus_next()

    # --- leaving ----------------------------------------------------------------------
    def action_back(self) -> None:
        self.installer.answers = self.draft()
        self.app.pop_screen()

    def action_next(self) -> None:
        problems = [f for f in self.shown_fields() if f.check()]
        answers = self.draft()
        cross = self.check_cross(answers, only_touched=False)
        if problems or cross:
            self.show_fix_count()
            bad = next((f for f in self.shown_fields() if f.problem), None)
            if bad is not None:
                for ancestor in bad.ancestors:
                    if isinstance(ancestor, Collapsible):
                        ancestor.collapsed = False
                bad.control.focus()
                bad.scroll_visible()
            return
        self.show_fix_count()  # none left: clears it
        self.installer.answers = answers
        self.installer.go_next(self)

    @on(Button.Pressed, "#back")
    def _back_pressed(self) -> None:
        self.action_back()

    @on(Button.Pressed, "#next")
    def _next_pressed(self) -> None:
        self.action_next()
