"""What this machine and the state must hold before a run starts, checked alike by both
front-ends: the OCI profile, for an install on Oracle Cloud; the server's address, for an upgrade."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from installer.state import RunState, StateError

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.options import RunOptions


def oci_profile_problems(answers: Answers, options: RunOptions,
                         check: Callable[[str, str], list[str]] | None = None) -> list[str]:
    """The OCI profile's problems when this run launches on Oracle Cloud (`check`: the guided
    setup's own, which its tests replace)."""
    if answers.cloud.provider != "oci" or options.mode != "install":
        return []
    if check is None:
        from installer.cloud.config import check_oci_config as check

    return check(answers.cloud.oci_config, answers.cloud.oci_profile)


def upgrade_target_problem(answers: Answers, options: RunOptions) -> str | None:
    """An upgrade works on a server that exists: its address is in the answers, or in the state
    of the run that made it."""
    if options.mode != "upgrade" or answers.ssh.host:
        return None
    state_dir = options.state_root
    try:
        known = RunState.load(state_dir, answers.domain.server_name).facts.get("host.address")
    except StateError as exc:
        return str(exc)
    if known:
        return None
    return (f"no earlier run for {answers.domain.server_name} in {state_dir} knows the server's address: "
            "run the upgrade with the state of the run that installed it (--state-dir), or give its address "
            '(provider = "existing", ssh.host and ssh.host_key)')


def problems_before_run(answers: Answers, options: RunOptions,
                        oci_check: Callable[[str, str], list[str]] | None = None) -> list[str]:
    """Everything that stops a real run before it starts, in the words shown to the user."""
    problems = oci_profile_problems(answers, options, oci_check)
    if problem := upgrade_target_problem(answers, options):
        problems.append(problem)
    return problems


def readiness(answers: Answers, options: RunOptions) -> tuple[list[str], list[str]]:
    """(errors, dry-run warnings): a dry run shows what a real run would stop on, and goes on."""
    problems = problems_before_run(answers, options)
    if options.dry_run:
        return [], [f"{p} (a real run stops here)" for p in problems]
    return problems, []
