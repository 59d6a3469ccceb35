"""Who can make accounts: the registration policy, the admin account, tokens."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.markup import escape
from textual.widgets import Input, Static

from installer.answers import Answers, check_field
from screens.form import FormScreen
from screens.widgets import FormField


class RegistrationScreen(FormScreen):
    """Registration policy, admin user and password source, token count; the password's status."""

    STEP = "Accounts"
    HEADING = "Who can create accounts?"

    def compose_form(self) -> ComposeResult:
        yield from self.declared_fields()
        yield Static("", id="password-status", classes="status-line")

    @on(FormField.Changed, "#field-registration-policy")
    def _offer_a_token(self, event: FormField.Changed) -> None:
        """The token policy with no token lets nobody in: offer one rather than an error at once."""
        tokens = self.query_one("#field-registration-tokens", FormField)
        if event.field.value == "token" and tokens.value == 0 and not tokens.touched:
            with tokens.control.prevent(Input.Changed):
                tokens.set_text("1")

    def step_problems(self, answers: Answers) -> list[tuple[str, str]]:
        """An admin password the server would refuse, checked as the headless run checks it."""
        from installer.readiness import admin_password_problem

        problem = admin_password_problem(answers, self.installer.options, self.installer.env)
        return [("registration.admin_password_env", problem)] if problem else []

    def update_aside(self) -> None:
        answers = self.draft()
        env = answers.registration.admin_password_env
        user = f"@{answers.registration.admin_user}:{answers.domain.server_name}"
        for admin in self.query("#field-registration-admin_user").results(FormField):
            admin.set_help(f"the admin's user ID will be {user}")
        problems = self.step_problems(answers)
        if check_field("registration.admin_user", answers.registration.admin_user) or check_field("registration.admin_password_env", env):
            text = ""  # the field says what it needs
        elif problems:
            text = f"[$text-error]✗[/] {escape(problems[0][1])}"
        elif self.installer.env_is_set(env):
            text = f"[$text-success]✓[/] {escape(env)} is set: {escape(user)} gets that password"
        else:
            text = f"[$text-primary]+[/] {escape(env)} is not set: a password for {escape(user)} is generated and shown once at the end"
        self.query_one("#password-status", Static).update(text)
