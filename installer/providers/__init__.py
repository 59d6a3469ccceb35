"""Where the host comes from: a new Oracle Cloud VM, or a server the user already has. Adding a
provider is a package here (see base.py) and one line in REGISTRY."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from installer.sections import Part, key

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.providers.base import Provider

REGISTRY = (
    "installer.providers.oci",
    "installer.providers.existing",
)


@functools.cache
def registered() -> tuple[Provider, ...]:
    return tuple(importlib.import_module(name).PROVIDER for name in REGISTRY)


def provider_for(answers: Answers) -> Provider:
    return next(p for p in registered() if p.name == answers.cloud.provider)


def _choices() -> tuple[tuple[str, str], ...]:
    return tuple((p.name, p.choice) for p in registered())


@dataclass(frozen=True)
class Choice:
    provider: str = key(
        "oci", "Where", 'where the server runs: "oci" (a new Oracle Cloud VM) | "existing" (any Ubuntu/Debian host reachable over SSH)',
        step="Cloud", choices=tuple(value for value, _ in _choices()), options=_choices(),
        guide="Oracle Cloud: the installer makes the VM, its network and both firewalls. Your own server: Ubuntu "
              "or Debian, reachable over SSH, with sudo that needs no password",
        option_guides=(("oci", "the installer makes the VM, its network and both firewalls, in your Oracle Cloud account"),
                       ("existing", "Ubuntu or Debian, reachable over SSH, with sudo that needs no password")),
    )


ANSWERS = (Part("cloud", Choice),)
