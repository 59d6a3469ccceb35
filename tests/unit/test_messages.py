"""What the messages say: values escaped and shortened, encodings named, the right line, advice
that fits (AAAA for IPv6, a DNS server that does not answer), plain words for failures, and the
small things (--help's headings, "1 stage")."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from pathlib import Path

import pytest

from installer.events import RunResult, StageResult, Status
from installer.headless import HeadlessReporter
from tests.fixtures.cli import EXAMPLE, HOST_KEY, assert_refused_up_front, existing_server_answers, raw_controls, run


def dry_run(answers: Path, tmp_path: Path, *extra: str):
    return run("--answers", str(answers), "--dry-run", "--state-dir", str(tmp_path / "state"), *extra, cwd=tmp_path)


def write(tmp_path: Path, text: str, name: str = "answers.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_domain(tmp_path: Path, lines: str) -> Path:
    """The example answers with `lines` added at the top of [domain]."""
    return write(tmp_path, EXAMPLE.read_text().replace("[domain]\n", f"[domain]\n{lines}\n", 1))


# --- raw and huge values -----------------------------------------------------------------------


def test_control_and_bidi_characters_are_shown_escaped(tmp_path: Path) -> None:
    # TOML escapes put a newline, NUL and U+202E into key names and values.
    answers = with_domain(tmp_path, '"forged\\nline\\u202e\\u0000" = 1').read_text()
    answers = answers.replace('private_key = "~/.ssh/id_ed25519"', 'private_key = "~/.ssh/id\\u0000\\u202e"')
    result = dry_run(write(tmp_path, answers), tmp_path)
    assert_refused_up_front(result, "domain.forged\\nline\\u202e\\x00: unknown key", "ssh.private_key", "\\u202e")
    for line in result.stderr.splitlines()[1:]:
        assert line.startswith("  "), f"a value started a line of its own: {line!r}"


def test_control_characters_in_flags_are_shown_escaped() -> None:
    result = run("--check", "example.org", "--dry-run", "--connect-to", "example.org:443:\u202eevil\nwhat to do: x:1")
    assert_refused_up_front(result, "--connect-to")
    assert len(result.stderr.splitlines()) == 2


def test_huge_values_are_shortened(tmp_path: Path) -> None:
    long_host = "M" * 100_000
    long_key = "k" * 100_000
    answers = with_domain(tmp_path, f'"{long_key}" = 1').read_text().replace(
        'matrix_host = "matrix.example.org"', f'matrix_host = "{long_host}"')
    result = dry_run(write(tmp_path, answers), tmp_path)
    assert_refused_up_front(result, "domain.matrix_host", "domain.kkkk")
    assert "100,000" in result.stderr  # says how long it was instead


def test_a_flood_of_problems_is_summed_up(tmp_path: Path) -> None:
    unknown = "\n".join(f"unknown_{i} = 1" for i in range(2000))
    result = dry_run(with_domain(tmp_path, unknown), tmp_path)
    assert result.returncode == 2 and "more problems" in result.stderr
    assert len(result.stderr.encode()) < 16 * 1024


# --- encodings --------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "words"), [
    (b"\xef\xbb\xbf" + EXAMPLE.read_bytes(), "starts with a byte-order mark (BOM): save it as UTF-8 without BOM"),
    (EXAMPLE.read_text().encode("utf-16"), "is not UTF-8 text"),
    (EXAMPLE.read_text().encode("utf-16-le"), "is not UTF-8 text"),
    (bytes(range(256)) * 4, "is not UTF-8 text"),
    (EXAMPLE.read_text().encode("latin-1").replace(b"example.org", b"\xe9xample.org"), "is not UTF-8 text"),
], ids=["bom", "utf-16", "utf-16-no-bom", "binary", "latin-1"])
def test_files_that_are_not_utf8_text_are_named_so(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "answers.toml"
    path.write_bytes(data)
    result = dry_run(path, tmp_path)
    assert_refused_up_front(result, words)
    assert "Invalid statement" not in result.stderr and "codec" not in result.stderr


# --- lines --------------------------------------------------------------------------------------


def test_an_array_of_tables_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'version = 1\n[[domain]]\nserver_name = "example.org"\n')
    result = dry_run(path, tmp_path)
    assert_refused_up_front(result, f"{path}:2: domain: must be a table")
    assert f"{path}:1:" not in result.stderr


def test_a_dotted_table_header_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'version = 1\n\n[domain.extra]\nx = 1\n')
    result = dry_run(path, tmp_path)
    assert_refused_up_front(result, f"{path}:3: domain.extra: unknown key")


# --- advice -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "..."])
def test_a_name_of_dots_is_not_told_to_write_nothing(tmp_path: Path, name: str) -> None:
    answers = EXAMPLE.read_text().replace('server_name = "example.org"', f'server_name = "{name}"')
    result = dry_run(write(tmp_path, answers), tmp_path)
    assert_refused_up_front(result, "domain.server_name")
    assert 'write ""' not in result.stderr


@pytest.mark.parametrize(("name", "advice"), [
    (".example.org", 'starts with a dot: write "example.org"'),
    ("Example.ORG.", 'must be lowercase: write "example.org"'),
])
def test_advice_for_a_name_is_the_whole_fix(tmp_path: Path, name: str, advice: str) -> None:
    answers = EXAMPLE.read_text().replace('server_name = "example.org"', f'server_name = "{name}"')
    result = dry_run(write(tmp_path, answers), tmp_path)
    assert_refused_up_front(result, f"domain.server_name: {advice}")


def test_a_trailing_dot_is_still_advised_when_that_is_all(tmp_path: Path) -> None:
    answers = EXAMPLE.read_text().replace('server_name = "example.org"', 'server_name = "example.org."')
    result = dry_run(write(tmp_path, answers), tmp_path)
    assert_refused_up_front(result, 'drop the trailing dot: write "example.org"')


def test_an_ipv6_server_address_gets_aaaa_records(tmp_path: Path) -> None:
    result = dry_run(existing_server_answers(tmp_path, host="2001:DB8:0::7"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "matrix.example.org. 300 IN AAAA 2001:db8::7" in result.stdout
    assert " IN A 2001" not in result.stdout


def test_an_ipv4_server_address_still_gets_a_records(tmp_path: Path) -> None:
    result = dry_run(existing_server_answers(tmp_path), tmp_path)
    assert "matrix.example.org. 300 IN A 203.0.113.7" in result.stdout


async def test_a_dns_server_that_does_not_answer_is_not_told_to_add_a_record() -> None:
    from installer.federation import run_check

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        report = await run_check("example.org", dns_server=silent.getsockname(), timeout=1)
    finally:
        silent.close()
    assert not report.ok
    text = "\n".join(report.summary_lines())
    assert "add an A record" not in text, text
    assert "did not answer" in text and "DNS server" in text
    for name in ("LifetimeTimeout", "NoNameservers", "Timeout)"):
        assert name not in text


# --- internal names -----------------------------------------------------------------------------


async def test_a_dropped_ssh_connection_is_said_in_words(tmp_path: Path) -> None:
    """A server that sends its banner and hangs up: asyncssh's ConnectionLost must not show."""
    import asyncssh

    from installer.engine import StageError
    from installer.ssh import SshRemote, SshTarget

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        try:
            while await asyncio.wait_for(reader.read(65536), 0.2):
                pass
        except asyncio.TimeoutError:
            pass
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    key = tmp_path / "id_ed25519"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    remote = SshRemote(SshTarget("127.0.0.1", port, "ubuntu", key, HOST_KEY), connect_timeout=2)
    try:
        with pytest.raises(StageError) as stopped:
            await remote.wait_until_up(deadline=time.monotonic() + 1.0, every=0.3)
    finally:
        server.close()
    message = str(stopped.value)
    assert "the connection was lost" in message
    assert "ConnectionLost" not in message and "Error:" not in message


# --- small things -------------------------------------------------------------------------------


def test_help_has_one_options_heading() -> None:
    help_text = run("--help").stdout
    assert help_text.count("options:") == 1
    assert "-h, --help" in help_text.split("options:")[1]


def test_one_stage_is_one_stage() -> None:
    out = io.StringIO()
    result = RunResult(mode="check", dry_run=True, stages=[StageResult("federation.check", "Federation test", Status.PLANNED)])
    HeadlessReporter(out).summary(result)
    assert "Dry run: 1 stage planned;" in out.getvalue()


def test_answers_problems_count_in_words(tmp_path: Path) -> None:
    answers = EXAMPLE.read_text().replace("port = 22", "port = 0")
    result = dry_run(write(tmp_path, answers), tmp_path)
    assert "has 1 problem;" in result.stderr and "problem(s)" not in result.stderr


def test_raw_controls_finds_what_a_terminal_would_act_on() -> None:
    assert raw_controls("fine\nlines") == []
    assert raw_controls("a\u202eb\x00c\rd") == ["'\\u202e'", "'\\x00'", "'\\r'"]


def test_what_a_command_prints_cannot_drive_the_terminal() -> None:
    """Escape sequences, carriage returns and bidi controls in output are shown, not obeyed: an
    instruction printed before cannot be rewritten from the host or the network."""
    from installer.answers import Answers
    from installer.engine import Session, Stage, StageContext
    from installer.state import RunState

    out = io.StringIO()
    session = Session(Answers(), RunState(None), listeners=[HeadlessReporter(out)])
    ctx = StageContext(session, Stage("host.caddy", "Caddy", lambda ctx: Status.DONE))
    ctx.log("\x1b[1A\x1b[2Kdns.records    create: evil.example. IN A 6.6.6.6\x07", "out")
    ctx.log("tab\tseparated \u202eevil", "out")
    ctx.progress("50%\x1b[2J")
    printed = out.getvalue()
    assert not raw_controls(printed.replace("\t", ""))
    assert "\\x1b[1A" in printed and "tab\tseparated \\u202eevil" in printed
