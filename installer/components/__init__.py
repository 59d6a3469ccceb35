"""The components a deployment is made of. Adding one is a package here (see base.py for the
contract, the README for a walk through one) and one line in REGISTRY.

The order is the order of the answers file's sections and of stages that do not depend on each
other; dependencies between stages are declared by the stages themselves.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from installer.components.base import Component

REGISTRY = (
    "installer.components.dns",
    "installer.components.access",
    "installer.components.firewall",
    "installer.components.caddy",
    "installer.components.docker",
    "installer.components.registration",
    "installer.components.synapse",
    "installer.components.postgres",
    "installer.components.workers",
    "installer.components.element",
    "installer.components.calls",
    "installer.components.tuning",
    "installer.components.backup",
    "installer.components.upgrade",
    "installer.components.selftest",
    "installer.components.federation",
)


@functools.cache
def registered() -> tuple[Component, ...]:
    """Every component, enabled or not (each package's COMPONENT)."""
    return tuple(importlib.import_module(name).COMPONENT for name in REGISTRY)
