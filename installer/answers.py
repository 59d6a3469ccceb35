"""The answers model: every choice the installer needs, loaded from TOML, validated, saved.

The sections are declared by the providers and components that own them (installer.sections);
this module merges them into one model. One schema serves both front-ends: the headless
`--answers FILE` path and the guided forms (which draw every field, its label, help and step
from `FIELDS`, and validate with `check_field`). Secrets are never part of the answers: only the
names of the environment variables that hold them.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from installer import checks, shown
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


_MENTION = re.compile(r"\{\{([a-z_]+\.[a-z_]+)(?:=([^{}]*))?\}\}")


def in_words(text: str, *, form: bool = False) -> str:
    """A message with the keys it mentions (installer.sections.mention) worded for where it is
    shown: as the answers file writes them, or (`form`) as the guided setup's fields name them."""

    def say(match: re.Match[str]) -> str:
        path, value = match.group(1), match.group(2)
        spec = FIELDS_BY_PATH.get(path)
        if spec is None:
            return path if value is None else f"{path} = {value}"
        if not form:
            if value is None:
                return path
            return f"{spec.key} = {value}" if isinstance(spec.default, bool | int) else f'{spec.key} = "{value}"'
        if value is None:
            return spec.label
        if isinstance(spec.default, bool):
            return f'"{spec.label}" {"ticked" if value == "true" else "not ticked"}'
        words = dict(spec.declared.options).get(value, value)
        return f'"{words}"'

    return _MENTION.sub(say, text) if "{{" in text else text


def cross_problems(answers: Answers) -> list[tuple[str, str]]:
    """Problems that involve more than one key, as the providers and components declare them:
    (path, message) pairs."""
    from installer import components, providers

    return [problem for owner in (*providers.registered(), *components.registered()) for problem in owner.problems(answers)]


_KEY = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]")  # [table] and [[array of tables]]
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")  # also dotted: domain.server_name = ...


def _key_parts(dotted: str) -> list[str]:
    return [_key_name(part.strip()) for part in re.findall(_KEY, dotted)]


def _key_name(written: str) -> str:
    """A key as TOML reads it: quotes off, and escapes (\\n, \\u0000) in "..." decoded."""
    if written.startswith('"') and "\\" in written:
        try:
            return str(tomllib.loads(f"k = {written}")["k"])
        except tomllib.TOMLDecodeError:
            pass
    return written.strip("\"'")


KEY_DEPTH = 3
"""How deep _key_lines follows dotted names: sections and their keys (one more, for a table
written where a key belongs)."""


def _key_lines(text: str) -> dict[str, int]:
    """Map "section.key" (and "section") to the 1-based line where it is first written."""
    lines: dict[str, int] = {}
    section: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            section = _key_parts(m.group(1))[:KEY_DEPTH]
        elif m := _ASSIGN.match(line):
            parts = [*section, *_key_parts(m.group(1))][:KEY_DEPTH]
            for end in range(1, len(parts)):  # a dotted key written at the top also names its section
                lines.setdefault(".".join(parts[:end]), number)
            lines.setdefault(".".join(parts), number)
            continue
        else:
            continue
        for end in range(1, len(section) + 1):
            lines.setdefault(".".join(section[:end]), number)
    return lines


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    """The TOML document, or AnswersError saying what stops it being read at all: a BOM, NUL, a
    syntax error, or nesting and numbers beyond what Python parses."""
    if text.startswith("\ufeff"):
        raise AnswersError([f"{where}:1: starts with a byte-order mark (BOM): save it as UTF-8 without BOM"])
    if (nul := text.find("\0")) >= 0:
        raise AnswersError([f"{where}:{_line_of(text, nul)}: is not UTF-8 text (it holds NUL characters: "
                            "UTF-16 or a binary file?): save it as UTF-8"])
    if line := _deeply_dotted_line(text):
        raise AnswersError([f"{where}:{line}: syntax: keys nested hundreds deep (a.b.c...): an answers file has "
                            "a few flat tables"])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        at = f"{where}:{m.group(1)}" if m else where
        reason = re.sub(r"\s*\(at line.*\)", "", str(exc))
        column = f" (column {m.group(2)})" if m else ""
        problem = f"{at}: syntax: {reason}{column}: fix the TOML syntax"
    except RecursionError:
        problem = (f"{where}:{_deepest_line(text)}: syntax: nested too deeply (brackets or braces hundreds deep): "
                   "an answers file has a few flat tables")
    except ValueError:  # Python's limit on converting thousands of digits
        problem = f"{_where_digits(text, where)}: a number with thousands of digits: no answer takes one"
    raise AnswersError([problem])


DOTTED_WORK = 100_000
"""tomllib's time for a dotted key grows with the square of its parts (one key of 300,000 parts
takes minutes); this bounds the sum of those squares. Our keys have two parts."""
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _deeply_dotted_line(text: str) -> int | None:
    """The line where dotted keys (dots outside quoted strings, squared per line) exceed DOTTED_WORK."""
    if text.count(".") ** 2 <= DOTTED_WORK:
        return None
    work = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count(".") >= 16:  # shorter ones cost little however many there are
            dots = _QUOTED.sub("", line).count(".")
            work += dots * dots
            if work > DOTTED_WORK:
                return number
    return None


def _where_digits(text: str, where: str) -> str:
    """"FILE:LINE: section.key" of the first number thousands of digits long (as far as can be told)."""
    digits = re.search(r"[0-9_]{1000,}", text)
    if not digits:
        return f"{where}: syntax"
    line = _line_of(text, digits.start())
    keys = [path for path, number in _key_lines(text).items() if number == line]
    return f"{where}:{line}: {shown.value(max(keys, key=len), 120)}" if keys else f"{where}:{line}: syntax"


def _deepest_line(text: str, limit: int = 100) -> int:
    """The line where brackets and braces first nest `limit` deep (strings not told apart: a guess)."""
    depth = 0
    for offset, ch in enumerate(text):
        depth += ch in "[{"
        depth -= ch in "]}"
        if depth >= limit:
            return _line_of(text, offset)
    return 1


def parse_answers(text: str, source: str = "answers") -> Answers:
    """Validate TOML text into Answers, or raise AnswersError listing every problem."""
    where = shown.value(source, 200)
    data = _parse_toml(text, where)

    lines = _key_lines(text)
    found: list[tuple[int, str, str]] = []

    def problem(path: str, message: str) -> None:
        section = path.split(".")[0]
        line = lines.get(path) or lines.get(section) or 1
        found.append((line, path, message))

    version = data.pop("version", 1)
    if type(version) is not int or version != 1:  # true and 1.0 equal 1 in Python, but are not 1
        problem("version", f"must be 1 (this installer reads answers version 1, got {shown.value(version)})")

    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name not in SECTIONS:
            hint = _suggest(name, list(SECTIONS)) if len(found) < shown.MOST_PROBLEMS else ""
            problem(name, f"unknown section{hint}; sections are {', '.join(SECTIONS)}")
            continue
        if not isinstance(table, dict):
            problem(name, f"must be a table: write [{name}] on its own line (once)")
            continue
        cls = SECTIONS[name]
        known = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in table.items():
            path = f"{name}.{key}"
            if key not in known:
                hint = _suggest(key, known) if len(found) < shown.MOST_PROBLEMS else ""  # a flood is not listed whole
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
        if not getattr(answers.domain, key) and not any(p in (f"domain.{key}", "domain") for _, p, _ in found):
            problem(f"domain.{key}", "is required")
    # Keys with a problem of their own were left at their defaults: what involves them is not said twice.
    bad = {path for _, path, _ in found}
    for path, message in cross_problems(answers):
        if path not in bad:
            problem(path, in_words(message))
    if found:
        found.sort(key=lambda item: item[0])
        # A key's name comes from the file: shown escaped, like any value.
        raise AnswersError([f"{where}:{line}: {shown.value(path, 120)}: {message}" for line, path, message in found])
    return answers


MAX_ANSWERS_BYTES = 1024 * 1024
"""Read at most this much: an answers file is a few KB, and /dev/zero never ends."""

_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def _read_capped(path: Path, where: str) -> bytes:
    """The file's bytes: a regular file of at most MAX_ANSWERS_BYTES. Devices, pipes and folders
    are refused before they are opened (opening some devices does something)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AnswersError([f"{where}: not found: check the path given to --answers"]) from None
    except OSError as exc:
        raise AnswersError([f"{where}: cannot read: {exc.strerror}"]) from None
    if stat.S_ISDIR(info.st_mode):
        raise AnswersError([f"{where}: is a folder: give the path of the answers file (.toml) in it"])
    if not stat.S_ISREG(info.st_mode):
        raise AnswersError([f"{where}: is not a regular file (a device, pipe or socket): save the answers to a file and give its path"])
    too_big = AnswersError([f"{where}: is larger than {MAX_ANSWERS_BYTES // 1024} KB: is it the answers file? "
                            "(an answers file is a few KB)"])
    if info.st_size > MAX_ANSWERS_BYTES:
        raise too_big
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped since the look above
                raise AnswersError([f"{where}: is not a regular file: save the answers to a file and give its path"])
            data = handle.read(MAX_ANSWERS_BYTES + 1)
    except OSError as exc:
        raise AnswersError([f"{where}: cannot read: {exc.strerror or shown.error_words(exc)}"]) from None
    if len(data) > MAX_ANSWERS_BYTES:
        raise too_big
    return data


def _decode(data: bytes, where: str) -> str:
    """UTF-8 text, or the reason it is not, in words a person can act on."""
    if data.startswith(codecs.BOM_UTF8):
        raise AnswersError([f"{where}:1: starts with a byte-order mark (BOM): save it as UTF-8 without BOM"])
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise AnswersError([f"{where}: is not UTF-8 text ({name}, it starts with a byte-order mark): save it as UTF-8 without BOM"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AnswersError([f"{where}:{line}: is not UTF-8 text (byte 0x{data[exc.start]:02x}; a binary file, or another "
                            "encoding): save it as UTF-8"]) from None


def load_answers(path: Path | str) -> Answers:
    """Read and validate an answers file; every problem is reported at once."""
    where = shown.value(str(path), 200)
    if not str(path):
        raise AnswersError(["the answers file's path is empty: give the path of a .toml file"])
    text = _decode(_read_capped(Path(path), where), where)
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
