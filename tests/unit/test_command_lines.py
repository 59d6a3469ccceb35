"""No answer ever reaches a command line as an option (issue 14, security 2): each string key
refuses a value that starts with "-", and the values that do reach a command (read off the dry
run's commands, for every mode and provider) come after `--` or inside an `--option=value`."""

from __future__ import annotations

import asyncio
import shlex

import pytest

from installer.answers import FIELDS, AnswersError, parse_answers
from installer.engine import Engine, RunOptions, Session
from installer.plan import plan_for
from installer.remote import RecordingRemote
from installer.state import RunState
from tests.fixtures.cli import HOST_KEY

# Distinct values, so that a command holding one can only have it from the answers.
VALUES = {
    "ssh.user": "operator7",
    "registration.admin_user": "chief7",
    "synapse.image": "registry.example:5000/team/synapse:v1",
    "database.image": "registry.example:5000/team/postgres:17-alpine",
    "cloud.instance_name": "matrixbox7",
}


def answers_text(provider: str, **changed: str) -> str:
    values = {
        "domain.server_name": "example.org", "domain.matrix_host": "matrix.example.org", "cloud.provider": provider,
        "ssh.host": "203.0.113.7", "ssh.host_key": HOST_KEY, "ssh.private_key": "/nonexistent/id_ed25519",
        **VALUES, **changed,
    }
    sections: dict[str, list[str]] = {}
    for path, value in values.items():
        section, key = path.split(".")
        sections.setdefault(section, []).append(f"{key} = {toml_string(value)}")
    return "version = 1\n" + "".join(f"[{name}]\n" + "\n".join(keys) + "\n" for name, keys in sections.items())


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _commands(text: str, mode: str) -> list[str]:
    answers = parse_answers(text)
    # An upgrade of a deployment made before Postgres: the move to it runs too.
    facts = {"host.address": "203.0.113.7", "homeserver.database": "sqlite"}
    if mode == "upgrade":
        answers = answers.replace("database", migrate="yes")
    session = Session(answers, RunState(None, {"facts": facts}), RunOptions(mode=mode, dry_run=True), remote=RecordingRemote())
    result = await Engine(plan_for(mode, answers, facts), session).run()
    # The whole plan is shown: a dry run stops nowhere (the move to Postgres included).
    assert not [s.name for s in result.stages if s.error], [(s.name, s.error) for s in result.stages if s.error]
    assert isinstance(session.remote, RecordingRemote)
    return session.remote.commands


def dry_run_commands(text: str) -> list[str]:
    return [command for mode in ("install", "upgrade") for command in asyncio.run(_commands(text, mode))]


def command_words(command: str) -> list[str]:
    """The words the program gets (what `sudo sh -c '...'` runs, for a command shown that way)."""
    split = shlex.split(command)
    if split[:3] == ["sudo", "sh", "-c"]:
        split = shlex.split(split[3])
    return split


def before_double_dash(command: str, matches) -> list[str]:
    """The words of `command` that `matches` and stand before any `--` (where a program reads options)."""
    found = []
    for word in command_words(command):
        if word == "--":
            break
        if matches(word):
            found.append(word)
    return found


STRING_KEYS = [spec.path for spec in FIELDS if isinstance(spec.default, str)]
OPTION_LIKE = ("-v/host/x", "--help", "-oProxyCommand=touch /tmp/x")


@pytest.mark.parametrize("path", STRING_KEYS)
def test_an_option_like_value_is_refused_or_never_reaches_a_command(path: str) -> None:
    provider = "existing"
    for value in OPTION_LIKE:
        try:
            text = answers_text(provider, **{path: value})
            parse_answers(text)
        except AnswersError as exc:
            assert any(path in problem for problem in exc.problems), exc.problems
            continue
        for command in dry_run_commands(text):
            assert not before_double_dash(command, lambda word: word.startswith(value)), (path, command)


@pytest.mark.parametrize("path", STRING_KEYS)
def test_every_string_key_refuses_a_leading_dash(path: str) -> None:
    """Stronger than the dry run alone: a value that reaches no command today may reach one later."""
    from installer.answers import check_field

    for value in OPTION_LIKE:
        assert check_field(path, value), f"{path} accepts {value!r}"


@pytest.mark.parametrize("provider", ["existing", "oci"])
def test_answers_on_a_command_line_come_after_double_dash(provider: str) -> None:
    commands = dry_run_commands(answers_text(provider))
    reached = {value: [c for c in commands if value in c] for value in VALUES.values()}
    assert reached["operator7"] and reached["chief7"] and reached[VALUES["synapse.image"]], reached
    for value, found in reached.items():
        for command in found:
            # A word of its own (not inside --opt=value or NAME=value) is read as an option if it starts with "-".
            assert not before_double_dash(command, lambda word: word == value), command
