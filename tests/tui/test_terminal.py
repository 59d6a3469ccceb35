"""The `matrix-installer` command in a real terminal (a pseudo-terminal read through a VT100
emulator): what a person sees when they type it, and how it leaves."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.fixtures.terminal import Terminal

ROOT = Path(__file__).resolve().parents[2]
COMMAND = shutil.which("matrix-installer", path=str(Path(sys.executable).parent)) or ""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def start(home: Path, *args: str) -> Terminal:
    assert COMMAND, "the console script is installed with the package (pip install -e .)"
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "LANG": "C.UTF-8"}
    return Terminal([COMMAND, *args], cwd=home, env=env)


def test_the_bare_command_opens_welcome_shows_what_it_found_and_quits_cleanly(home: Path) -> None:
    with start(home) as term:
        screen = term.wait_for_text("Set up your own Matrix homeserver")
        steps = screen.splitlines()[0]  # 80 columns: every step named, the arrows closer together
        assert steps.split() == ["Welcome", "›Cloud›Domain›Keys›Accounts›Server›Review›Install›Done"]
        # Discovery, right after the first frame. (A frame can arrive in several reads: wait for
        # its last line before reading the others.)
        screen = term.wait_for_text("no previous runs")
        assert "no OCI config at" in screen and "no SSH key pair in ~/.ssh" in screen
        term.press("ctrl+q")
        screen = term.wait_for_text("Quit the guided setup?")
        term.press("tab", "enter")  # from Cancel (focused: the safe choice) to Quit
        assert term.wait_exit() == 0  # nothing ran: 130 would say a run was interrupted
        assert b"\x1b[?1049l" in term.output[-200:]  # the alternate screen is left: the terminal is given back
    assert sorted(p.name for p in home.iterdir()) == []  # nothing written: no state, no key, no answers


def test_flags_go_through_the_parser_to_the_same_guided_setup(home: Path) -> None:
    with start(home, "--dry-run", "--upgrade") as term:
        screen = term.wait_for_text("Upgrade your Matrix homeserver")
        assert "DRY RUN" in screen.splitlines()[0] and "Upgrade" in screen.splitlines()[0]
        term.press("ctrl+q")
        term.wait_for_text("Quit the guided setup?")
        term.press("escape")  # Esc means no: back to Welcome
        term.wait_for_text("Upgrade your Matrix homeserver")
        assert term.process.poll() is None


def test_a_bad_flag_in_a_terminal_still_exits_2_before_drawing(home: Path) -> None:
    with start(home, "--dns-server", "nowhere") as term:
        assert term.wait_exit() == 2
        assert "--dns-server nowhere: must be an IP address" in term.text()
        assert b"\x1b[?1049h" not in term.output  # no full-screen app was started
