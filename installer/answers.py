"""The answers model: every choice the installer needs, loaded from TOML, validated, saved.

The sections are declared by the providers and components that own them (installer.sections);
this module merges them into one model. One schema serves both front-ends: the headless
`--answers FILE` path and the guided forms (which draw every field, its label, help and step
from `FIELDS`, and validate with `check_field`). Secrets are never part of the answers: only the
names of the environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

from installer import checks
from installer.files import write_private
from installer.sections import Key, Part, merge


def _parts() -> list[Part]:
    """Every declared part, in answers-file order: the providers' first (the guided setup opens on
    where the server runs), then the components', in the order they are registered."""
    from installer import components, providers

    found = list(providers.ANSWERS)
    for owner in (*providers.registered(), *components.registered()):
        found += owner.answers
    return found


def _sections() -> dict[str, type]:
    grouped: dict[str, list[type]] = {}
    for part in _parts():
        grouped.setdefault(part.section, []).append(part.keys)
    return {name: merge(name, keys) for name, keys in grouped.items()}


SECTIONS: dict[str, type] = _sections()
"""Section name -> its frozen dataclass (declared by its owners, merged)."""


class Answers:
    """Every choice the installer needs: one frozen value per section (`answers.domain.server_name`)."""

    __slots__ = ("_sections", "version")

    def __init__(self, version: int = 1, **sections: Any) -> None:
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise TypeError(f"no such answers section: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "_sections", {name: sections.get(name) or cls() for name, cls in SECTIONS.items()})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (a copy being made): never a section
            raise AttributeError(name)
        try:
            return self._sections[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"answers are frozen: use replace() ({name})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Answers) and (self.version, self._sections) == (other.version, other._sections)

    def __hash__(self) -> int:
        return hash((self.version, *self._sections.values()))

    def __repr__(self) -> str:
        return f"Answers({', '.join(f'{k}={v!r}' for k, v in self._sections.items())})"

    def replace(self, section: str, **changes: Any) -> Answers:
        """A copy with some keys of one section changed."""
        sections = dict(self._sections)
        sections[section] = dataclasses.replace(sections[section], **changes)
        return Answers(self.version, **sections)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **{name: dataclasses.asdict(value) for name, value in self._sections.items()}}

    @property
    def federation_port(self) -> int:
        """Where other servers connect: 443 with .well-known delegation; 8448, the spec's default,
        with an SRV record or no delegation at all."""
        return 443 if self.domain.delegation == "well-known" else 8448

    @property
    def serves_server_name(self) -> bool:
        """Whether this box's Caddy has a site for server_name besides the Matrix host."""
        return self.domain.serve_server_name and self.domain.server_name != self.domain.matrix_host


@dataclass(frozen=True)
class FieldSpec:
    """One answers key as the answers file, the forms and Review see it."""

    section: str
    key: str
    default: Any
    declared: Key

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def help(self) -> str:
        return self.declared.help

    @property
    def check(self) -> checks.Check | None:
        return self.declared.check

    @property
    def choices(self) -> tuple[str, ...]:
        return self.declared.choices

    @property
    def label(self) -> str:
        return self.declared.label

    @property
    def step(self) -> str:
        return self.declared.step

    def applies(self, answers: Answers, mode: str = "install") -> bool:
        return self.declared.applies_to(answers, mode)


FIELDS: tuple[FieldSpec, ...] = tuple(
    FieldSpec(name, f.name, f.default, f.metadata["key"])
    for name, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
)
FIELDS_BY_PATH = {spec.path: spec for spec in FIELDS}


class AnswersError(Exception):
    """The answers are invalid; `problems` lists every one, formatted for the user."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _type_problem(spec: FieldSpec, value: Any) -> str | None:
    want = type(spec.default)
    if want is bool and not isinstance(value, bool):
        return "must be true or false (no quotes)"
    if want is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "must be a whole number (no quotes)"
    if want is str and not isinstance(value, str):
        return "must be a quoted string"
    return None


def check_field(path: str, value: Any) -> str | None:
    """What is wrong with one value on its own (type and format), or None."""
    spec = FIELDS_BY_PATH[path]
    if problem := _type_problem(spec, value):
        return problem
    return spec.check(value) if spec.check else None


def parse_field_text(path: str, text: str) -> tuple[Any, str | None]:
    """Turn what a person typed into a form field into a value of the key's type."""
    want = type(FIELDS_BY_PATH[path].default)
    if want is int:
        try:
            return int(text.strip()), None
        except ValueError:
            return text, "must be a whole number"
    if want is bool:
        return text.strip().lower() in ("1", "true", "yes", "on"), None
    return text, None


def cross_problems(answers: Answers) -> list[tuple[str, str]]:
    """Problems that involve more than one key, as the providers and components declare them:
    (path, message) pairs."""
    from installer import components, providers

    return [problem for owner in (*providers.registered(), *components.registered()) for problem in owner.problems(answers)]


_HEADER = re.compile(r'^\s*\[\s*([A-Za-z0-9_-]+)\s*\]')
_KEY = r'(?:[A-Za-z0-9_-]+|"[^"]*")'
_ASSIGN = re.compile(rf'^\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=')  # also dotted: domain.server_name = ...


def _key_lines(text: str) -> dict[str, int]:
    """Map "section.key" (and "section") to the 1-based line where it is written."""
    lines: dict[str, int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            section = m.group(1)
            lines.setdefault(section, number)
        elif m := _ASSIGN.match(line):
            parts = [part.strip().strip('"') for part in re.findall(rf"{_KEY}", m.group(1))]
            path = ".".join([section, *parts] if section else parts)
            if not section and len(parts) > 1:
                lines.setdefault(parts[0], number)
            lines.setdefault(path, number)
    return lines


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def parse_answers(text: str, source: str = "answers") -> Answers:
    """Validate TOML text into Answers, or raise AnswersError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{source}:{m.group(1)}" if m else source
        reason = re.sub(r"\s*\(at line.*\)", "", str(exc))
        column = f" (column {m.group(2)})" if m else ""
        raise AnswersError([f"{where}: syntax: {reason}{column}: fix the TOML syntax"]) from None

    lines = _key_lines(text)
    found: list[tuple[int, str, str]] = []

    def problem(path: str, message: str) -> None:
        section = path.split(".")[0]
        line = lines.get(path) or lines.get(section) or 1
        found.append((line, path, message))

    version = data.pop("version", 1)
    if version != 1:
        problem("version", f"must be 1 (this installer reads answers version 1, got {version!r})")

    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name not in SECTIONS:
            hint = _suggest(name, list(SECTIONS))
            problem(name, f"unknown section{hint}; sections are {', '.join(SECTIONS)}")
            continue
        if not isinstance(table, dict):
            problem(name, f"must be a table: write [{name}] on its own line")
            continue
        cls = SECTIONS[name]
        known = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in table.items():
            path = f"{name}.{key}"
            if key not in known:
                hint = _suggest(key, known)
                if not hint:
                    elsewhere = [s for s, c in SECTIONS.items() if key in [f.name for f in dataclasses.fields(c)]]
                    hint = f" (it belongs in [{elsewhere[0]}])" if elsewhere else f"; [{name}] has {', '.join(known)}"
                problem(path, f"unknown key{hint}")
                continue
            if msg := check_field(path, value):
                problem(path, msg)
                continue
            values[key] = value
        sections[name] = cls(**values)

    answers = Answers(**sections)
    for key in ("server_name", "matrix_host"):  # the only keys without a usable default
        if not getattr(answers.domain, key) and not any(p == f"domain.{key}" for _, p, _ in found):
            problem(f"domain.{key}", "is required")
    # Keys with a problem of their own were left at their defaults: what involves them is not said twice.
    bad = {path for _, path, _ in found}
    for path, message in cross_problems(answers):
        if path not in bad:
            problem(path, message)
    if found:
        found.sort(key=lambda item: item[0])
        raise AnswersError([f"{source}:{line}: {path}: {message}" for line, path, message in found])
    return answers


def load_answers(path: Path) -> Answers:
    """Read and validate an answers file; every problem is reported at once."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnswersError([f"{path}: not found: check the path given to --answers"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnswersError([f"{path}: cannot read: {exc}"]) from None
    return parse_answers(text, str(path))


def dump_answers(answers: Answers) -> str:
    """The answers as annotated TOML, in the same shape as assets/example-answers.toml."""
    out = [
        "# matrix-installer answers: replay with `matrix-installer --answers THIS_FILE`.",
        "# Secrets are not stored here: the admin password comes from the environment variable",
        "# named in [registration], or is generated and shown once.",
        "version = 1",
    ]
    for name in SECTIONS:
        out.append(f"\n[{name}]")
        section = getattr(answers, name)
        for spec in (s for s in FIELDS if s.section == name):
            rendered = tomli_w.dumps({spec.key: getattr(section, spec.key)}).strip()
            out.append(f"{rendered:<40} # {spec.help}")
    return "\n".join(out) + "\n"


def save_answers(answers: Answers, path: Path) -> None:
    """Write the answers file atomically, mode 0600 (it names hosts and key paths)."""
    write_private(path, dump_answers(answers).encode())
