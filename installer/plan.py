"""Which stages run, in which order, for each mode: the one list both front-ends show. The
deployment (installer.deployment) asks each enabled component and the provider for their stages;
stage bodies are imported only when a plan is made, so `--help` and the first screen do not pay
for asyncssh, the oci SDK or httpx."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from installer.answers import Answers
from installer.engine import Stage, check_plan


def plan_for(mode: str, answers: Answers, facts: Mapping[str, Any] | None = None) -> list[Stage]:
    """`facts`: what the state knows of the deployment as it is (upgrade mode works on that)."""
    from installer.deployment import Deployment

    return check_plan(Deployment.build(answers, mode, facts).stages())


def install_plan(answers: Answers) -> list[Stage]:
    return plan_for("install", answers)


def upgrade_plan(answers: Answers, facts: Mapping[str, Any] | None = None) -> list[Stage]:
    return plan_for("upgrade", answers, facts)
