"""Every answer on one page, the stages that will run, Save answers, and Install."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.widgets import Button, Footer, Static

from installer.answers import FIELDS, FIELDS_BY_PATH, SECTIONS, AnswersError, check_field, cross_problems, in_words, save_answers
from screens.base import StepScreen, stylesheet
from screens.dialogs import ConfirmDialog, ErrorDialog, PathDialog
from screens.widgets import label_for


def _save_problem(path: Path) -> str | None:
    """What stops saving the answers at `path` (a folder or a link there), shown in the dialog."""
    from installer.files import output_problem

    return output_problem(path, make_parents=True)


def _missing_folder(folder: Path) -> Path | None:
    """The topmost folder of `folder` that does not exist yet (saving would make it), or None."""
    missing = None
    for above in (folder, *folder.parents):
        if above.exists():
            break
        missing = above
    return missing


class ReviewScreen(StepScreen):
    """Check everything before anything happens; save the answers to replay them headless."""

    CSS_PATH = stylesheet("review")

    STEP = "Review"
    blocked = True
    HEADING = "Review, then install"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "save", "Save answers"),
        # One key, worded for the mode (check_action shows the one that applies).
        Binding("ctrl+n", "start('install')", "Install"),
        Binding("ctrl+n", "start('upgrade')", "Upgrade"),
        # Not ready: the footer offers no Install, and the key says why instead of nothing.
        Binding("ctrl+n", "not_ready", "Not ready", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield from self.compose_steps()
        # Above the scrolling answers, not among them: what stops the install stays in sight.
        with VerticalScroll(id="problems-box", can_focus=False):
            yield Static("", id="problems")
        with VerticalScroll(id="form"):
            with Horizontal(id="review-columns"):
                yield Static("", id="answers-table")
                yield Static("", id="plan")
        with Horizontal(id="nav"):
            yield Button("← Back", id="back", compact=True)
            yield Button("Save answers…", id="save", compact=True)
            yield Static("", id="nav-status")
            verb = "Upgrade" if self.installer.options.mode == "upgrade" else "Install"
            yield Button(f"{verb} (dry run)" if self.installer.options.dry_run else verb, id="install", variant="primary", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_review()
        self.query_one("#install", Button).focus()

    def on_screen_resume(self) -> None:
        self.refresh_review()

    def problems(self) -> list[tuple[str, str]]:
        """(path, message) for every answer that is wrong, alone or together."""
        answers = self.installer.answers
        found = []
        for spec in FIELDS:
            value = getattr(getattr(answers, spec.section), spec.key)
            if message := check_field(spec.path, value):
                found.append((spec.path, message))
        return found + cross_problems(answers) if not found else found

    def machine_problems(self) -> list[str]:
        """What this machine or the state lacks for the run, checked as the headless path does
        (installer.readiness): what the provider needs, or the address of the server to upgrade."""
        from installer.readiness import problems_before_run

        return problems_before_run(self.installer.answers, self.installer.options, self.installer.provider_check,
                                   self.installer.env)

    def warnings(self) -> list[str]:
        """What the components say of these choices before anything runs (SQLite is for tests)."""
        from installer.deployment import Deployment

        return Deployment.build(self.installer.answers, self.installer.options.mode, self.installer.known_facts()).warnings()

    def refresh_review(self) -> None:
        answers = self.installer.answers
        problems = self.problems()
        machine = self.machine_problems()
        dry_run = self.installer.options.dry_run
        lines: list[str] = []
        if problems:
            lines.append(f"[b $text-error]✗ {len(problems)} answer{'s' if len(problems) != 1 else ''} to fix (Back to change):[/]")
            for path, message in problems:
                spec = FIELDS_BY_PATH.get(path)
                where = spec.step if spec else ""
                lines.append(f"  {escape(where)} › {escape(label_for(path))}: {escape(in_words(message, form=True))}")
        if machine:
            heading = "Not ready (a real run stops here):" if dry_run else "Not ready yet:"
            lines.append(f"[b $text-warning]! {heading}[/]")
            lines += [f"  {escape(in_words(p, form=True))}" for p in machine]
        if not problems:
            lines += [f"[b $text-warning]![/] {escape(in_words(w, form=True))}" for w in self.warnings()]
        self.query_one("#problems", Static).update("\n".join(lines))
        self.query_one("#problems-box").display = bool(lines)
        self.blocked = bool(problems) or (bool(machine) and not dry_run)
        self.query_one("#install", Button).disabled = self.blocked
        status = self.query_one("#nav-status", Static)
        if not self.blocked and status.has_class("-invalid"):  # fixed since Ctrl+N said it was not ready
            status.update("")
            status.remove_class("-invalid")
        self.refresh_bindings()

        rows = []
        mode = self.installer.options.mode
        for section in SECTIONS:
            listed = [s for s in FIELDS if s.section == section and s.applies(answers, mode)]
            if not listed:
                continue
            rows.append(f"[b $accent]{section}[/]")
            for spec in listed:
                value = getattr(getattr(answers, section), spec.key)
                words = dict(spec.declared.options).get(value, value)  # a choice as its form offered it
                shown = escape(str(words).lower() if isinstance(words, bool) else str(words)) if value != "" else "[$text-muted]—[/]"
                changed = "" if value == spec.default else " [$text-primary]•[/]"
                rows.append(f"  {escape(label_for(spec.path)):<22} {shown}{changed}")
        rows.append("[$text-muted](• = not the default)[/]")
        self.query_one("#answers-table", Static).update("\n".join(rows))

        plan_view = self.query_one("#plan", Static)
        if problems:
            plan_view.update("")
            return
        stages = self.installer.plan_stages()
        lines = [f"[b $accent]The plan: {len(stages)} stages[/]"]
        lines += [f"  {i:>2}. {escape(s.title)} [$text-muted]({escape(s.name)})[/]" for i, s in enumerate(stages, start=1)]
        from installer.cloud.notices import IDLE_TITLE, idle_reclaim_notice  # not before the first form: see test_hygiene

        if notice := idle_reclaim_notice(answers):
            lines += ["", f"[b $text-warning]! {IDLE_TITLE}[/]"] + [f"  {escape(line)}" for line in notice]
        plan_view.update("\n".join(lines))

    # --- actions ----------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_save(self) -> None:
        default = self.installer.answers_path or self.installer.default_answers_path
        note = "The answers file replays this setup headless (matrix-installer --answers FILE). It holds no secrets; it is written with mode 0600."
        self.app.push_screen(PathDialog("Save answers", default, note, check=_save_problem), self._save_to)

    def _save_to(self, path: Path | None) -> None:
        """Ask before replacing a file, and before making a folder; then write."""
        if path is None:
            return
        missing = _missing_folder(path.parent)
        if missing is not None:
            self.app.push_screen(ConfirmDialog("Create the folder?", f"{missing} does not exist. Create it (mode 0700) and "
                                               f"save the answers in it?", "Create"),
                                 lambda yes: self._write(path, made=missing) if yes else None)
            return
        if path.exists() and path != self.installer.answers_path:
            self.app.push_screen(ConfirmDialog("Replace the file?", f"{path} already exists. Replace it with these answers?", "Replace"),
                                 lambda yes: self._write(path) if yes else None)
            return
        self._write(path)

    def _write(self, path: Path, *, made: Path | None = None) -> None:
        try:
            save_answers(self.installer.answers, path)
        except (OSError, AnswersError) as exc:
            self.app.push_screen(ErrorDialog("Could not save the answers", f"{path}: {exc}", "pick another folder, one you can write to"))
            return
        self.installer.answers_path = path
        from installer.discovery import home_relative

        # Said on the status line only: a toast would cover it. The file's name first, as the line is short.
        folder = f", new folder {home_relative(made, self.installer.home)}" if made else ""
        self.query_one("#nav-status", Static).update(f"✓ saved {path.name} (0600) in {home_relative(path.parent, self.installer.home)}{folder}")

    def heading(self) -> str:
        return "Review, then upgrade" if self.installer.options.mode == "upgrade" else self.HEADING

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            return parameters[0] == self.installer.options.mode and not self.blocked
        if action == "not_ready":
            return self.blocked
        return True

    def action_not_ready(self) -> None:
        """Ctrl+N while something stops the install: say so where the user looks, beside the dimmed button."""
        status = self.query_one("#nav-status", Static)
        status.update("✗ Not ready: fix what the box at the top lists (Back to change answers)")
        status.add_class("-invalid")
        self.query_one("#problems-box").scroll_home(animate=False)

    def action_start(self, mode: str) -> None:
        self.action_install()

    def action_install(self) -> None:
        """A dry run starts at once; a real one asks first (Ctrl+N meant Next on every step before)."""
        if self.blocked:
            self.action_not_ready()
            return
        if self.installer.options.dry_run:
            self.installer.start_run()
            return
        answers, upgrading = self.installer.answers, self.installer.options.mode == "upgrade"
        where = (f"the server {answers.ssh.host}" if answers.ssh.host
                 else "a new Oracle Cloud VM" if answers.cloud.provider == "oci" else "the server")
        verb = "Upgrade" if upgrading else "Install"
        cloud = "your Oracle Cloud account, " if answers.cloud.provider == "oci" else ""
        question = (f"{verb} {answers.domain.server_name} on {where} now? This changes "
                    + ("the server (a backup of Synapse's data is made first)." if upgrading
                       else f"{cloud}the server and DNS, as the plan shows."))
        self.app.push_screen(ConfirmDialog(verb, question, verb),
                             lambda yes: self.installer.start_run() if yes else None)

    @on(Button.Pressed, "#back")
    def _back(self) -> None:
        self.action_back()

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#install")
    def _install(self) -> None:
        self.action_install()
