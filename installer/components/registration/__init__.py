"""Who may create accounts: the registration policy, the admin account's name and password
source, and registration tokens. The policy is a setting the homeserver applies; the stage
proves it on the running server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from installer import checks
from installer.components.base import Component
from installer.components.homeserver import RegistrationPolicy
from installer.sections import Part, key, mention

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage

POLICIES = (
    ("closed", "closed (recommended)"),
    ("token", "with a registration token"),
    ("open-until-admin", "open until the admin exists"),
)


PURPOSE_WORDS = ("MATRIX", "ADMIN")


def password_variable(value: object) -> str | None:
    """The name of the environment variable holding the admin's password: a variable name that
    says what it is for. The password goes to the server the answers name, so a shared answers
    file naming PATH or AWS_SECRET_ACCESS_KEY would send this machine's other secrets there."""
    if problem := checks.pattern(r"[A-Za-z_][A-Za-z0-9_]{0,63}", "an environment variable name (letters, digits, _)")(value):
        return problem
    assert isinstance(value, str)
    if not any(word in value.upper() for word in PURPOSE_WORDS):
        return ('must say what it is for: put MATRIX or ADMIN in its name, e.g. "MATRIX_ADMIN_PASSWORD". Its value '
                "becomes the admin's password on the server these answers name: a variable kept for something else "
                "(PATH, a cloud key) must never be sent there")
    return None


def _token_policy(answers: Answers) -> bool:
    return answers.registration.policy == "token"


@dataclass(frozen=True)
class RegistrationKeys:
    policy: str = key(
        "closed", "Registration", '"closed" | "token" | "open-until-admin"', step="Accounts",
        choices=tuple(value for value, _ in POLICIES), options=POLICIES, install_only=True,
        guide="closed: only the admin creates accounts (Synapse's admin API); token: people sign up with a token "
              "you hand out; open until the admin exists: the admin is made without ever opening registration, "
              "so it ends as closed",
        option_guides=(("closed", "only the admin creates accounts (with Synapse's admin API)"),
                       ("token", "people sign up with a registration token you hand out"),
                       ("open-until-admin", "the admin is made without ever opening registration, so it ends as closed")),
    )
    admin_user: str = key(
        "admin", "Admin user", "the admin's user ID is @admin_user:server_name", step="Accounts", install_only=True,
        check=checks.name(r"[a-z0-9][a-z0-9._=-]{0,63}", "a Matrix user name: lowercase ASCII letters, digits and . _ = - "
                          "(starting with a letter or digit)"),
        guide="the admin's user name: its user ID is @name:server name",
    )
    admin_password_env: str = key(
        "MATRIX_ADMIN_PASSWORD", "Password variable",
        "MATRIX or ADMIN in its name; 8 characters or more; unset: generate one, show it once", step="Accounts",
        check=password_variable,
        guide="the environment variable holding the admin's password (its name says so: MATRIX or ADMIN in it)",
    )
    tokens: int = key(0, "Tokens to create", 'registration tokens to create with policy "token"', step="Accounts",
                      check=checks.int_range(0, 100), applies=_token_policy, install_only=True,
                      guide="registration tokens to create; shown once at the end")


class Registration(Component):
    name = "registration"
    title = "Registration"
    answers = (Part("registration", RegistrationKeys),)

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        r = answers.registration
        if r.policy == "token" and r.tokens < 1:
            return [("registration.tokens", f"registration {mention('registration.policy', 'token')} needs at least one "
                                            "token, or nobody can register")]
        if r.policy != "token" and r.tokens:
            return [("registration.tokens", f"tokens are only created with {mention('registration.policy', 'token')} "
                                            f"(it is {mention('registration.policy', r.policy)})")]
        return []

    def homeserver_settings(self, d: Deployment) -> list[object]:
        return [RegistrationPolicy(d.answers.registration.policy)]

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "install":
            return []
        from installer.components.homeserver import AdminCredentials
        from installer.components.registration.stages import apply_policy
        from installer.engine import Stage

        return [Stage("registration.policy", "Registration policy", apply_policy, takes=(AdminCredentials,))]


COMPONENT = Registration()
