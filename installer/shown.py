"""How values from outside appear in what we print: escaped and shortened.

A value echoed raw in a message can forge lines (a newline, a carriage return), reorder what a
terminal shows (bidi controls such as U+202E) or bury the message (a 1 MB string). Every value
that reaches a message goes through `value`; every problem line printed goes through `line`.
"""

from __future__ import annotations

import math

VALUE_LIMIT = 80
"""Characters of one value shown in a message (the rest is counted, not shown)."""
LINE_LIMIT = 1000
"""Characters of one message line: well under 2 KB even when every character is escaped."""
MOST_PROBLEMS = 50
"""Problems listed at once; a flood of the same mistake is summed up after these."""

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped_char(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str, keep: str = "") -> str:
    """Control, format (bidi, zero-width), line-separator and surrogate characters written as
    escapes (\\n, \\x00, \\u202e), except those in `keep`; everything printable is kept as it
    is. Applied to what is printed, nothing received can forge a line or drive the terminal."""
    if text.isprintable():  # nearly every text: one check in C
        return text
    return "".join(ch if ch.isprintable() or ch in keep else _escaped_char(ch) for ch in text)


def _escaped_within(text: str, limit: int) -> str:
    """`escape`d and at most about `limit` characters: a long text keeps its start and says how
    long it was (without escaping more of a huge text than can be shown)."""
    shown = escape(text[: limit + 1])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(text):,} characters)"


def _int_text(number: int) -> str:
    # str() of an int over 4300 digits raises ValueError (Python's int-str limit): count instead.
    if number.bit_length() < 200:
        return str(number)
    digits = math.floor(number.bit_length() * math.log10(2)) + 1
    return f"a number of about {digits:,} digits"


def value(raw: object, limit: int = VALUE_LIMIT) -> str:
    """A value as a message shows it: a string escaped and shortened, anything else as Python
    writes it (a number never spelled out in thousands of digits)."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        text = repr(raw)
    elif isinstance(raw, int):
        text = _int_text(raw)
    else:
        text = raw
    return _escaped_within(text, limit)


def quoted(raw: object, limit: int = VALUE_LIMIT) -> str:
    """`value` in double quotes, as the messages write strings."""
    return f'"{value(raw, limit)}"'


def line(text: str, limit: int = LINE_LIMIT) -> str:
    """One message line as printed: escaped (no line can be forged) and at most `limit` characters."""
    return _escaped_within(text, limit)


def problem_lines(problems: list[str], most: int = MOST_PROBLEMS) -> list[str]:
    """Each problem as `line` shows it; beyond `most`, one line saying how many more there are."""
    shown = [line(p) for p in problems[:most]]
    if len(problems) > most:
        rest = len(problems) - most
        shown.append(f"... and {plural(rest, 'more problem')} of the same kinds: fix these first")
    return shown


def plural(count: int, word: str, words: str | None = None) -> str:
    """"1 stage", "2 stages" (`words` for irregular plurals)."""
    return f"{count} {word if count == 1 else words or word + 's'}"


# What went wrong, in words, for exceptions whose class name means nothing to a user. Matched by
# class name along the exception's bases, so no library has to be imported to know them.
_ERROR_WORDS = {
    "LifetimeTimeout": "no answer in time",
    "Timeout": "no answer in time",
    "TimeoutError": "no answer in time",
    "NoNameservers": "the DNS server refused or failed the query",
    "NoResolverConfiguration": "no DNS resolver is configured here",
    "ConnectionLost": "the connection was lost",
    "ConnectionResetError": "the connection was reset",
    "ConnectionRefusedError": "the connection was refused",
    "ConnectionAbortedError": "the connection was aborted",
    "BrokenPipeError": "the connection was closed",
    "DisconnectError": "the server closed the connection",
    "ChannelOpenError": "the server refused to open a session",
    "gaierror": "the name does not resolve",
}


def _known_words(exc: BaseException) -> str | None:
    for cls in type(exc).__mro__:
        if cls.__name__ in _ERROR_WORDS:
            return _ERROR_WORDS[cls.__name__]
    return None


def error_words(exc: BaseException) -> str:
    """What went wrong, in words: a known failure in our own words, an OS error by its reason,
    anything else by its message (escaped and shortened); never a bare class name."""
    if known := _known_words(exc):
        return known
    if isinstance(exc, OSError) and exc.strerror:
        return value(exc.strerror, 200)
    text = str(exc).strip()
    return value(text, 200) if text else _words_of(type(exc).__name__)


def error_summary(exc: BaseException) -> str:
    """An unforeseen error for a report: a known one in words, anything else with its class name
    (a bug report needs it), its message escaped and shortened."""
    if known := _known_words(exc):
        return known
    text = str(exc).strip()
    return f"{type(exc).__name__}: {value(text, 200)}" if text else type(exc).__name__


def _words_of(class_name: str) -> str:
    """"HostKeyNotVerifiable" -> "host key not verifiable": the last resort for an unknown error."""
    words, current = [], ""
    for ch in class_name.removesuffix("Error"):
        if ch.isupper() and current:
            words.append(current)
            current = ""
        current += ch.lower()
    words.append(current)
    return " ".join(w for w in words if w) or "an unknown error"
