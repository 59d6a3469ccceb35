"""Masking: a secret is masked in every form it takes in text (JSON, shell quoting, repr,
URL-encoding), and when a line break splits it, in a single message or across the lines a command
prints; in what the user sees (the headless lines) and what is kept (last-run.log, the report)."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from urllib.parse import quote

import pytest

from installer.answers import Answers
from installer.engine import Session, Stage, StageContext
from installer.events import Status
from installer.headless import HeadlessReporter
from installer.report import RunLog
from installer.secrets import MASK, Secrets
from installer.state import RunState

PASSWORDS = [
    'p@ss"w\\ord\'42',  # both quotes and a backslash
    "correct horse € battery",  # a space and non-ASCII
    "$(reboot)`id`;x&y|z",  # shell metacharacters
    "ñandú-😀-secret",  # beyond the BMP: JSON writes a surrogate pair
    "tab\tand\u0001ctl",  # control characters JSON and repr escape
]


def written(value: str) -> list[str]:
    """How programs print a secret: what a log line may hold."""
    return [
        json.dumps({"password": value}),
        json.dumps({"password": value}, ensure_ascii=False),
        json.dumps(json.dumps({"password": value})),
        repr({"password": value}),
        repr([value, '"']),  # repr picks single quotes here and escapes them
        str(value.encode()),
        f"sh -c {shlex.quote(value)}",
        f"sh -c {shlex.quote('echo ' + value + ' > /tmp/x')}",
        f"https://user:{quote(value, safe='')}@example.org/",
        value,
    ]


@pytest.mark.parametrize("password", PASSWORDS)
def test_every_written_form_is_masked(password: str) -> None:
    secrets = Secrets()
    secrets.add(password)
    for text in written(password):
        masked = secrets.redact(text)
        assert MASK in masked, text
        assert password not in masked
        # What is left is the surrounding text only: no half of the secret survives.
        for part in (password[: len(password) // 2], password[len(password) // 2 :]):
            if len(part) >= 4:
                assert part not in masked, (text, masked)


def log_lines(password: str, *messages: str, kind: str = "out") -> list[str]:
    """The lines the user (headless), last-run.log and the engine's events would hold."""
    session = Session(Answers(), RunState(None))
    events: list = []
    out = io.StringIO()
    session.listeners += [events.append, HeadlessReporter(out)]
    ctx = StageContext(session, Stage("synapse.admin", "Admin", lambda ctx: Status.DONE))
    ctx.secret(password)
    for message in messages:
        ctx.log(message, kind)
    return [e.line for e in events] + out.getvalue().splitlines()


def assert_no_part_shown(lines: list[str], password: str, split: int) -> None:
    text = "\n".join(lines)
    assert password not in text
    for part in (password[:split], password[split:]):
        if len(part) >= 4:
            assert part not in text, text
    assert "".join(lines).count(MASK) >= 1


@pytest.mark.parametrize("split", [4, 8, 12])
def test_a_secret_split_by_a_line_break_in_one_message(split: int) -> None:
    password = "hunter2-correct-horse"
    lines = log_lines(password, f"password: {password[:split]}\n{password[split:]} (keep it)")
    assert_no_part_shown(lines, password, split)


@pytest.mark.parametrize("split", [4, 8, 12, 20])
def test_a_secret_a_command_prints_across_two_lines(split: int) -> None:
    password = "hunter2-correct-horse"
    lines = log_lines(password, f"password: {password[:split]}", f"{password[split:]} (keep it)", "next line")
    assert lines[0] == f"password: {MASK}" and lines[1] == f"{MASK} (keep it)" and lines[2] == "next line"
    assert_no_part_shown(lines, password, split)


def test_the_rest_of_a_secret_is_masked_however_short_and_however_indented() -> None:
    password = "hunter2-correct-horse"
    lines = log_lines(password, f"key: {password[:-1]}", f"    {password[-1]}", "1 2 3 h", "unter2-correct-horse")
    assert lines[:2] == [f"key: {MASK}", MASK]
    assert lines[3] == MASK  # one character at the end of a line cannot be told from text; its rest can


def test_a_secret_holding_a_newline_is_masked_whole() -> None:
    password = "first-half\nsecond-half"
    lines = log_lines(password, f"the password is {password}, keep it")
    assert "first-half" not in "\n".join(lines) and "second-half" not in "\n".join(lines)


def test_lines_without_secrets_are_left_as_they_are() -> None:
    lines = log_lines("hunter2-correct-horse", "apt-get install -y caddy", "hunter2 is a film", "  42")
    assert lines[:3] == ["apt-get install -y caddy", "hunter2 is a film", "  42"]
    # A line that ends as a secret starts (4 characters or more) may go on in the next: masked.
    assert log_lines("hunter2-correct-horse", "the hunter")[0] == f"the {MASK}"


def test_the_run_log_keeps_no_part_of_a_split_secret(tmp_path: Path) -> None:
    password = "registration-shared-secret-0123"
    session = Session(Answers(), RunState(None))
    log = RunLog(tmp_path / "last-run.log")
    session.listeners.append(log)
    ctx = StageContext(session, Stage("synapse.config", "Config", lambda ctx: Status.DONE))
    ctx.secret(password)
    ctx.log("registration_shared_secret: registration-shared-\n  secret-0123", "out")
    ctx.log(json.dumps({"registration_shared_secret": password}), "out")
    ctx.log(f"echo {shlex.quote(password)}", "command")
    log.close()
    kept = (tmp_path / "last-run.log").read_text()
    assert password not in kept and "registration-shared-" not in kept and "secret-0123" not in kept


def test_a_secret_split_across_the_quoted_output_of_a_failed_command() -> None:
    from installer.remote import CommandResult, RemoteCommandError

    password = "hunter2-correct-horse"
    secrets = Secrets()
    secrets.add(password)
    error = str(RemoteCommandError("register", CommandResult(1, "", ""), ["password: hunter2-cor", "rect-horse", "done"]))
    masked = secrets.redact(error)
    assert "hunter2-cor" not in masked and "rect-horse" not in masked and "  | done" in masked


def test_errors_and_hints_are_masked_in_every_form() -> None:
    password = 'pa"ss\\word-42'
    secrets = Secrets()
    secrets.add(password)
    error = f"`register_new_matrix_user -p {shlex.quote(password)}` exited 1; last output:\n  | {json.dumps(password)}"
    assert password not in secrets.redact(error) and json.dumps(password)[1:-1] not in secrets.redact(error)


def test_short_values_are_not_secrets() -> None:
    secrets = Secrets()
    secrets.add("abc")
    assert secrets.redact("abc abc") == "abc abc"
