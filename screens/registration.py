"""Who can make accounts: the registration policy, the admin account, tokens."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.markup import escape
from textual.widgets import Static

from screens.form import FormScreen
from screens.widgets import FormField


class RegistrationScreen(FormScreen):
    """Registration policy, admin user and password source, token count; the password's status."""

    STEP = "Accounts"
    HEADING = "Who can create accounts?"

    def compose_form(self) -> ComposeResult:
        yield from self.declared_fields()
        yield Static("", id="password-status", classes="status-line")

    def update_aside(self) -> None:
        answers = self.draft()
        env = answers.registration.admin_password_env
        user = f"@{answers.registration.admin_user}:{answers.domain.server_name}"
        for admin in self.query("#field-registration-admin_user").results(FormField):
            admin.set_help(f"the admin's user ID will be {user}")
        if not env or not answers.registration.admin_user:
            text = ""  # the empty field says what it needs
        elif self.installer.env_is_set(env):
            text = f"[$text-success]✓[/] {escape(env)} is set: {escape(user)} gets that password"
        else:
            text = f"[$text-primary]+[/] {escape(env)} is not set: a password for {escape(user)} is generated and shown once at the end"
        self.query_one("#password-status", Static).update(text)
