"""Secrets known to this run, and the one place they are masked before anything is shown or stored.

A secret is not only printed as itself: a command's output can show it JSON-escaped (`\\"`,
`\\\\`, `\\u00e9`), shell-quoted, as Python's repr, URL-encoded, or broken across two lines.
Each secret's written forms are worked out once, when it is added; masking a line then costs a
few substring searches per secret (most lines are ruled out by one search: see `_Secret`).
"""

from __future__ import annotations

import json
import re
import shlex
from urllib.parse import quote, quote_plus

MASK = "********"
MIN_LENGTH = 4
"""Shorter values are not masked: masking "abc" everywhere would hide more than it protects."""
MIN_FRAGMENT = 4
"""The shortest start of a secret masked at the end of a line, when the next line may finish it."""

_PLAIN = re.compile(r"[A-Za-z0-9_.~-]+")
"""Characters every form below leaves as they are (none of them escapes or quotes these)."""
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
"""Where str.splitlines() breaks a text, and so where a log line ends."""


def written_forms(value: str) -> list[str]:
    """The ways `value` can appear in text: as itself, JSON-escaped (ASCII or not, once or twice),
    Python's repr (either quote), shell-quoted (whole, or inside a longer quoted word),
    double-quoted for a shell, YAML single-quoted, URL-encoded. Longest first."""
    json_ascii = json.dumps(value)[1:-1]
    forms = {
        value,
        json_ascii,
        json.dumps(value, ensure_ascii=False)[1:-1],
        json_ascii.replace("/", "\\/"),
        json.dumps(json_ascii)[1:-1],  # JSON inside JSON
        repr(value)[1:-1],
        repr('"' + value)[2:-1],  # repr in single quotes, when the text also holds a double quote
        ascii(value)[1:-1],
        repr(value.encode())[2:-1],
        shlex.quote(value),
        value.replace("'", "'\"'\"'"),
        value.replace("'", "'\\''"),
        re.sub(r'([\\"$`])', r"\\\1", value),
        value.replace("'", "''"),
        quote(value, safe=""),
        quote_plus(value, safe=""),
    }
    return sorted((f for f in forms if len(f) >= MIN_LENGTH), key=len, reverse=True)


class _Secret:
    """One secret's forms, and the longest run of plain characters they all contain: when that
    run is not in a text, no form is (the one search most lines need)."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.forms = written_forms(value)
        runs = _PLAIN.findall(value)
        self.anchor = max(runs, key=len) if runs else ""

    def mask(self, text: str) -> str:
        if self.anchor not in text:
            return text
        for form in self.forms:
            if form in text:
                text = text.replace(form, MASK)
        return text


class Secrets:
    """Every secret the run handles is registered here; `redact` masks them all in any text."""

    def __init__(self) -> None:
        self._secrets: dict[str, _Secret] = {}
        self._ordered: list[_Secret] = []
        self._starts: dict[str, list[tuple[str, str]]] = {}

    def add(self, value: str) -> str:
        if value and len(value) >= MIN_LENGTH and value not in self._secrets:
            self._secrets[value] = _Secret(value)
            # A secret inside a longer one is masked after it, so the longer one goes whole.
            self._ordered = sorted(self._secrets.values(), key=lambda s: len(s.value), reverse=True)
            self._starts = _starts_by_last_chars({f for s in self._ordered for f in s.forms})
        return value

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def mask_whole(self, text: str) -> str:
        """Every form of every secret that appears whole in `text`, masked."""
        for secret in self._ordered:
            if secret.anchor in text:  # inlined: this runs for every log line
                text = secret.mask(text)
        return text

    def redact(self, text: str) -> str:
        """`text` with every secret masked: whole, in any of its forms, and broken across a line
        break (both parts masked)."""
        if not self._secrets or not text:
            return text
        text = self.mask_whole(text)
        if _LINE_BREAK.search(text):
            text = self._mask_across_breaks(text)
        return text

    def _mask_across_breaks(self, text: str) -> str:
        """Both parts of a secret broken at a line break of `text` (a break inside a log message,
        or one that the secret itself holds), masked."""
        lines = text.splitlines(keepends=True)
        bodies = [_LINE_BREAK.split(line, maxsplit=1)[0] for line in lines]
        starts = [0] * len(lines)
        ends = [len(body) for body in bodies]
        for i in range(len(lines) - 1):
            begun, finish = finished_by(self.open_starts(bodies[i]), bodies[i + 1])
            if finish:
                ends[i] = min(ends[i], len(bodies[i]) - begun)
                starts[i + 1] = max(starts[i + 1], finish)
        out = []
        for line, body, start, end in zip(lines, bodies, starts, ends, strict=True):
            end = max(start, end)
            out.append((MASK if start else "") + body[start:end] + (MASK if end < len(body) else "") + line[len(body):])
        return "".join(out)

    def open_starts(self, line: str) -> list[tuple[str, str]]:
        """(form, start) for each form of a secret whose start (not all of it) ends `line`."""
        starts = self._starts
        return [(form, start) for key in {line[-3:], line[-2:], line[-1:]} for form, start in starts.get(key, ())
                if line.endswith(start)]

    def stream(self) -> LineMasker:
        """A masker for consecutive lines of one output (a command's stdout, say)."""
        return LineMasker(self)


_CONTINUED = re.compile(r"[ \t]*(?:[|>][ \t]*)?")
"""What may stand before the rest of a secret on its next line: indentation, and the "  | " that
quotes a command's output in an error."""


def finished_by(open_starts: list[tuple[str, str]], line: str) -> tuple[int, int]:
    """(characters of the secret on the line before, characters of `line` up to its end) for
    the secret whose start ended the line before and whose rest starts `line` (after what may
    stand before it, see _CONTINUED); (0, 0) when none does."""
    if not open_starts:
        return 0, 0
    indents = {0, len(line) - len(line.lstrip(" \t")), _CONTINUED.match(line).end()}  # type: ignore[union-attr]
    best = (0, 0)
    for indent in indents:
        for form, start in open_starts:
            if line.startswith(form[len(start):], indent) and indent + len(form) - len(start) > best[1]:
                best = (len(start), indent + len(form) - len(start))
    return best


def _starts_by_last_chars(forms: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Every proper start of every form, filed under its last three characters (all of it, when
    shorter): a line's end picks the few starts it might end with."""
    starts: dict[str, list[tuple[str, str]]] = {}
    for form in forms:
        for size in range(1, len(form)):
            starts.setdefault(form[max(0, size - 3) : size], []).append((form, form[:size]))
    return starts


class LineMasker:
    """Masks the lines of one output in order, catching a secret broken across two of them:
    the end of a line that starts a secret (MIN_FRAGMENT characters or more) is masked, and so
    is the start of the next line that finishes it, however short. What the last line left open
    is kept (in memory only) to recognise that finish."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets
        self._open: list[tuple[str, str]] = []

    def mask(self, line: str) -> str:
        secrets = self.secrets
        if not secrets._ordered:
            return line
        starts = secrets._starts
        if not self._open and line[-3:] not in starts and line[-2:] not in starts and line[-1:] not in starts:
            # Most lines: no secret is broken at either end. Inlined mask_whole: this runs per line.
            for secret in secrets._ordered:
                if secret.anchor in line:
                    line = secret.mask(line)
            return line
        head = self._finished_here(line) if self._open else 0
        self._open = [(form, start) for form, start in secrets.open_starts(line) if len(start) <= len(line) - head]
        longest = max((len(start) for _, start in self._open), default=0)
        end = len(line) - longest if longest >= MIN_FRAGMENT else len(line)
        middle = secrets.mask_whole(line[head:end])
        return (MASK if head else "") + middle + (MASK if end < len(line) else "")

    def _finished_here(self, line: str) -> int:
        """How much of the start of `line` finishes a secret the last line began (0: none)."""
        return finished_by(self._open, line)[1]
