"""What this machine and the state must hold before a run starts, checked alike by both
front-ends: what the provider needs (the OCI profile, for an install on Oracle Cloud); the
server's address, for an upgrade; an admin password in the environment that will be accepted."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from installer.sections import mention
from installer.state import RunState, StateError

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.options import RunOptions

EnvLookup = Callable[[str], "str | None"]
"""An environment variable's value by name (os.environ.get; the guided setup's tests give their own)."""


def provider_problems(answers: Answers, options: RunOptions) -> list[str]:
    """What the provider needs of this machine for the run (Oracle Cloud: a working OCI profile)."""
    from installer.providers import provider_for

    return provider_for(answers).problems_before_run(answers, options)


def component_problems(answers: Answers, options: RunOptions) -> list[str]:
    """What the enabled components need of this machine (a secret's environment variable)."""
    from installer.components import registered

    if options.mode == "check":
        return []
    return [p for c in registered() if c.enabled(answers, options.mode) for p in c.problems_before_run(answers, options)]  # type: ignore[arg-type]


def upgrade_target_problem(answers: Answers, options: RunOptions) -> str | None:
    """An upgrade (or a backup) works on a server that exists: its address is in the answers, or
    in the state of the run that made it."""
    if options.mode not in ("upgrade", "backup") or answers.ssh.host:
        return None
    state_dir = options.state_root
    try:
        known = RunState.load(state_dir, answers.domain.server_name).facts.get("host.address")
    except StateError as exc:
        return str(exc)
    if known:
        return None
    return (f"no earlier run for {answers.domain.server_name} in {state_dir} knows the server's address: "
            f"run the {options.mode} with the state of the run that installed it (--state-dir), or give its address "
            f"({mention('cloud.provider', 'existing')}, {mention('ssh.host')} and {mention('ssh.host_key')})")


NO_KEY_TO_UPGRADE_WITH = ("does not exist: an upgrade logs in with the key the server already accepts (the one that "
                          "installed it); give its path")


def key_pair_problems(answers: Answers, options: RunOptions) -> list[str]:
    """Where the SSH key pair is to be made (ssh.private_key and its .pub), a link, pipe, device or
    folder in the way stops the run now rather than at its first stage. An upgrade makes no key:
    the server accepts only the one it has."""
    from pathlib import Path

    from installer.files import output_problem

    if options.mode == "check" or not answers.ssh.private_key:
        return []
    private = Path(answers.ssh.private_key).expanduser()
    if options.mode == "upgrade" and not private.exists():
        return [f"{mention('ssh.private_key')}: {private} {NO_KEY_TO_UPGRADE_WITH}"]
    public = private.with_name(private.name + ".pub")
    to_write = [public] if private.is_file() else [private, public]
    return [f"{mention('ssh.private_key')}: {path} {problem}" for path in to_write
            if (problem := output_problem(path, make_parents=True))]


def admin_password_problem(answers: Answers, options: RunOptions, env: EnvLookup = os.environ.get) -> str | None:
    """An admin password set in the environment that the homeserver would refuse (too short), found
    before the VM, Docker and Synapse are made rather than at the admin's stage. Only an install
    makes the admin."""
    from installer.components.homeserver import short_password_problem

    if options.mode != "install":
        return None
    variable = answers.registration.admin_password_env
    return short_password_problem(variable, (env(variable) or "").strip())


def problems_before_run(answers: Answers, options: RunOptions,
                        provider_check: Callable[[Answers, RunOptions], list[str]] = provider_problems,
                        env: EnvLookup = os.environ.get) -> list[str]:
    """Everything that stops a real run before it starts, in the words shown to the user
    (`provider_check` and `env`: the guided setup's own, which its tests replace)."""
    problems = provider_check(answers, options)
    problems += component_problems(answers, options)
    problems += key_pair_problems(answers, options)
    if problem := upgrade_target_problem(answers, options):
        problems.append(problem)
    if problem := admin_password_problem(answers, options, env):
        problems.append(f"{mention('registration.admin_password_env')}: {problem}")
    return problems


def readiness(answers: Answers, options: RunOptions) -> tuple[list[str], list[str]]:
    """(errors, dry-run warnings): a dry run shows what a real run would stop on, and goes on."""
    problems = problems_before_run(answers, options)
    if options.dry_run:
        return [], [f"{p} (a real run stops here)" for p in problems]
    return problems, []
