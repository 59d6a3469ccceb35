"""Who can make accounts: the registration policy, the admin account, tokens; Synapse extras."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.widgets import Collapsible, Static

from installer.answers import Answers
from screens.form import FormScreen
from screens.widgets import FormField

POLICIES = [
    ("closed", "closed (recommended)"),
    ("token", "with a registration token"),
    ("open-until-admin", "open until the admin exists"),
]
POLICY_HELP = ("closed: only the admin creates accounts (Synapse's admin API); token: people sign up "
               "with a token you hand out; open-until-admin: the guide's open, register, close; the admin is "
               "made without opening it, so it ends as closed")


class RegistrationScreen(FormScreen):
    """Registration policy, admin user and password source, token count, and Synapse options."""

    STEP = "Accounts"
    HEADING = "Who can create accounts?"

    def compose_form(self) -> ComposeResult:
        yield self.field("registration.policy", options=POLICIES, help=POLICY_HELP)
        with Vertical(id="tokens-group", classes="group"):
            yield self.field("registration.tokens", help="registration tokens to create; shown once at the end")
        yield self.field("registration.admin_user")
        yield self.field("registration.admin_password_env", help="the environment variable holding the admin's password")
        yield Static("", id="password-status", classes="status-line")
        with Collapsible(title="Synapse and upgrades", collapsed=True):
            yield self.field("synapse.image")
            yield self.field("synapse.max_upload_size")
            yield self.field("synapse.report_stats")
            yield self.field("upgrade.reboot")
            yield self.field("upgrade.keep_backups")

    def draft(self) -> Answers:
        """Tokens only exist with the token policy: a hidden count means none."""
        answers = super().draft()
        if answers.registration.policy != "token":
            answers = answers.replace("registration", tokens=0)
        return answers

    def update_visibility(self) -> None:
        policy = self.query_one("#field-registration-policy").value  # type: ignore[attr-defined]
        self.query_one("#tokens-group").set_class(policy != "token", "-na")

    def update_aside(self) -> None:
        answers = self.draft()
        env = answers.registration.admin_password_env
        user = f"@{answers.registration.admin_user}:{answers.domain.server_name}"
        self.query_one("#field-registration-admin_user", FormField).set_help(f"the admin's user ID will be {user}")
        if not env or not answers.registration.admin_user:
            text = ""  # the empty field says what it needs
        elif self.installer.env_is_set(env):
            text = f"[$text-success]✓[/] {escape(env)} is set: {escape(user)} gets that password"
        else:
            text = f"[$text-primary]+[/] {escape(env)} is not set: a password for {escape(user)} is generated and shown once at the end"
        self.query_one("#password-status", Static).update(text)
