"""How a component declares its part of the answers: each key with its default, check, and the
words and place the guided setup shows it in. The answers file, the forms and Review are all
drawn from these declarations (installer.answers merges them; screens only render them).

A section may be declared in parts by several owners ([cloud]: the provider choice, then each
provider's own keys); the parts are merged, in the order the owners are registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installer import checks

if TYPE_CHECKING:
    from installer.answers import Answers

Applies = Callable[["Answers"], bool]

STEPS = ("Cloud", "Domain", "Keys", "Accounts", "Server")
"""The guided setup's form steps, in order: every key names one of them."""


@dataclass(frozen=True)
class Key:
    """One answers key as a person meets it: in the answers file, a form and Review."""

    label: str
    help: str
    step: str
    check: checks.Check | None = None
    choices: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    """(value, words) for a choice shown as radio buttons; a plain select shows the values."""
    group: str = ""
    """A folded group of its step ("More Oracle Cloud settings"), for keys most people leave alone."""
    applies: Applies | None = None
    """Whether the key matters for these answers: the forms hide it and Review leaves it out when not."""
    guide: str = ""
    """The form's help when it says more than the answers file's comment (`help`) can."""
    option_guides: tuple[tuple[str, str], ...] = ()
    """(value, words): the form's help for the choice made, when each choice needs its own (the
    help for a server of your own says nothing of Oracle Cloud)."""
    placeholder: str = ""
    checkbox: str = ""
    """The words beside a true/false key's checkbox."""
    modes: tuple[str, ...] = ("install", "upgrade")
    """The modes whose forms ask it: a VM's shape is decided once, at install; moving an old
    database is a question for an upgrade only."""

    @property
    def form_help(self) -> str:
        return self.guide or self.help

    def applies_to(self, answers: Answers, mode: str = "install") -> bool:
        if mode not in self.modes:
            return False
        return self.applies is None or self.applies(answers)


def mention(path: str, value: object = None) -> str:
    """A key (and a value of it) named in a message, worded by whoever shows the message: the
    answers file's `ssh.host` and `provider = "existing"` headless, the form's "Server address" and
    "A server I already have" in the guided setup (installer.answers.in_words)."""
    return "{{" + path + ("" if value is None else "=" + (str(value).lower() if isinstance(value, bool) else str(value))) + "}}"


def key(default: Any, label: str, help: str, *, step: str, check: checks.Check | None = None,
        choices: tuple[str, ...] = (), **more: Any) -> Any:
    """A dataclass field for one answers key (choices without a check are checked as an enum)."""
    if step not in STEPS:
        raise ValueError(f"unknown guided step {step!r} for {label!r}")
    if choices and check is None:
        check = checks.one_of(*choices)
    if more.pop("install_only", False):
        more["modes"] = ("install",)
    return dataclasses.field(default=default, metadata={"key": Key(label, help, step, check, choices, **more)})


@dataclass(frozen=True)
class Part:
    """Keys an owner declares in a section (a frozen dataclass whose fields come from `key`)."""

    section: str
    keys: type


def merge(name: str, parts: list[type]) -> type:
    """One frozen dataclass for a section made of several owners' parts."""
    if len(parts) == 1:
        return parts[0]
    fields = []
    for part in parts:
        for f in dataclasses.fields(part):
            fields.append((f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata)))
    return dataclasses.make_dataclass(name.title().replace("_", ""), fields, frozen=True)
