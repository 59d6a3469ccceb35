"""Everything written on this machine goes only over regular files of ours: a link, FIFO, device
node or folder where the report, the state, the run's log or the key pair goes is refused (exit 2
before anything runs), and left exactly as it was. Loose state folders are tightened when ours,
refused when shared or another user's."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from installer.answers import Answers, in_words, load_answers
from installer.cli import UsageError, _parser, options_from_args
from installer.files import write_private
from installer.options import RunOptions
from installer.readiness import readiness
from installer.report import RunLog
from installer.session import open_session
from installer.state import StateError
from tests.fixtures.cli import assert_refused_up_front, existing_server_answers, run

OUTSIDE_TEXT = "a file that is not ours\n"


def planted(folder: Path, kind: str, name: str = "target") -> tuple[Path, Path]:
    """(path, outside): a symlink to an outside file, a FIFO, a character device or a folder at `path`."""
    folder.mkdir(parents=True, exist_ok=True)
    outside = folder / "outside.txt"
    outside.write_text(OUTSIDE_TEXT)
    outside.chmod(0o644)
    path = folder / name
    if kind == "symlink":
        path.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own (needs root)
    elif kind == "folder":
        path.mkdir()
    return path, outside


def assert_untouched(path: Path, kind: str, outside: Path) -> None:
    mode = os.lstat(path).st_mode
    expected = {"symlink": stat.S_ISLNK, "fifo": stat.S_ISFIFO, "device": stat.S_ISCHR, "folder": stat.S_ISDIR}[kind]
    assert expected(mode), f"{path} is no longer a {kind}"
    assert outside.read_text() == OUTSIDE_TEXT
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644


KINDS = ["symlink", "fifo", "device", "folder"]


@pytest.mark.parametrize("kind", KINDS)
def test_report_over_a_link_fifo_device_or_folder_exits_2_and_leaves_it(tmp_path: Path, kind: str) -> None:
    path, outside = planted(tmp_path, kind, "report.json")
    result = run("--check", "example.org", "--dry-run", "--report", str(path), cwd=tmp_path)
    assert_refused_up_front(result, "--report")
    assert_untouched(path, kind, outside)


@pytest.mark.parametrize("report", ["/dev/null", "/proc/matrix-report.json", "/sys/report.json"])
def test_report_in_a_kernel_folder_is_refused_before_anything_runs(report: str) -> None:
    """As root, `--report /dev/null` once replaced /dev/null. Checked in-process: the flags are
    refused before any run (so this never writes there, whatever the code under test does)."""
    args = _parser().parse_args(["--check", "example.org", "--report", report])
    with pytest.raises(UsageError) as refused:
        options_from_args(args)
    assert any(p.startswith(f"--report {report}:") for p in refused.value.problems)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_report_under_proc_or_below_a_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    for report in ("/proc/nope/report.json", str(tmp_path / "a-file" / "report.json"), str(tmp_path / "a-file" / "sub" / "r.json")):
        result = run("--check", "example.org", "--dry-run", "--report", report, cwd=tmp_path)
        assert_refused_up_front(result, "--report")
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "device"])
def test_write_private_refuses_what_is_not_a_regular_file_of_ours(tmp_path: Path, kind: str) -> None:
    path, outside = planted(tmp_path, kind)
    with pytest.raises(OSError) as refused:  # UnsafePathError
        write_private(path, b"secret state")
    assert str(path) in str(refused.value)
    assert_untouched(path, kind, outside)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.txt", "target"]  # no temp file left


def test_write_private_refuses_another_users_file(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.json"
    theirs.write_text(OUTSIDE_TEXT)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(OSError, match="belongs to another user"):
        write_private(theirs, b"x")
    assert theirs.read_text() == OUTSIDE_TEXT


def test_write_private_still_replaces_our_own_file_atomically(tmp_path: Path) -> None:
    ours = tmp_path / "state.json"
    ours.write_text("old")
    write_private(ours, b"new")
    assert ours.read_text() == "new" and stat.S_IMODE(ours.stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["symlink", "device"])
def test_run_log_never_writes_through_what_is_planted(tmp_path: Path, kind: str) -> None:
    path, outside = planted(tmp_path, kind, "last-run.log")
    with pytest.raises(OSError):
        RunLog(path)
    assert_untouched(path, kind, outside)


def test_run_log_replaces_its_own_previous_log_private(tmp_path: Path) -> None:
    path = tmp_path / "last-run.log"
    path.write_text("the last run")
    path.chmod(0o644)
    log = RunLog(path)
    log.close()
    assert path.read_text() == "" and stat.S_IMODE(path.stat().st_mode) == 0o600


def answers_for(tmp_path: Path) -> Answers:
    return load_answers(existing_server_answers(tmp_path))


@pytest.mark.parametrize("name", ["last-run.log", "state.json", "answers.toml", "report.json"])
def test_a_link_planted_in_the_state_folder_stops_the_run_before_it_starts(tmp_path: Path, name: str) -> None:
    state_dir = tmp_path / "state"
    path, outside = planted(state_dir / "example.org", "symlink", name)
    with pytest.raises((StateError, OSError)) as refused:
        open_session(answers_for(tmp_path), RunOptions(state_dir=state_dir))
    assert "symbolic link" in str(refused.value)
    assert_untouched(path, "symlink", outside)


def test_the_command_refuses_a_planted_run_log_with_exit_2(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    path, outside = planted(state_dir / "example.org", "symlink", "last-run.log")
    # A host that cannot be reached fast: if the run started, it would fail at host.ssh, exit 1.
    answers = existing_server_answers(tmp_path, host="127.0.0.1")
    result = run("--answers", str(answers), "--state-dir", str(state_dir), cwd=tmp_path)
    assert_refused_up_front(result, "last-run.log", "symbolic link")
    assert_untouched(path, "symlink", outside)
    assert not (tmp_path / ".ssh").exists()  # no stage ran: no key pair made


def test_a_state_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "example.org").symlink_to(elsewhere)
    with pytest.raises(StateError, match="symbolic link"):
        open_session(answers_for(tmp_path), RunOptions(state_dir=tmp_path / "state"))
    assert list(elsewhere.iterdir()) == []


def test_a_loose_state_root_of_ours_is_tightened_and_said(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    root.chmod(0o777)
    (root / "example.org").mkdir()
    (root / "example.org").chmod(0o777)
    session = open_session(answers_for(tmp_path), RunOptions(state_dir=root))
    session.run_log.close()
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "example.org").stat().st_mode) == 0o700
    assert any("made it 0755" in note for note in session.state.notices)
    assert any("made it 0700" in note for note in session.state.notices)


@pytest.mark.parametrize("owner_and_mode", [(0, 0o1777), (65534, 0o777)], ids=["sticky-shared", "another-users"])
def test_a_loose_state_root_not_ours_to_tighten_is_refused_with_exit_2(tmp_path: Path, owner_and_mode) -> None:
    owner, mode = owner_and_mode
    root = tmp_path / "shared"
    root.mkdir()
    os.chown(root, owner, owner)
    root.chmod(mode)
    answers = existing_server_answers(tmp_path)
    result = run("--answers", str(answers), "--dry-run", "--state-dir", str(root), cwd=tmp_path)
    assert_refused_up_front(result, "--state-dir", "other users can write to it")
    assert stat.S_IMODE(root.stat().st_mode) == mode and list(root.iterdir()) == []
    with pytest.raises(StateError):  # and the session's own door, for the guided setup
        open_session(load_answers(answers), RunOptions(state_dir=root))
    assert list(root.iterdir()) == []


def test_a_key_pair_path_taken_by_a_link_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    path, outside = planted(ssh, "symlink", "id_ed25519")
    path.unlink()
    path.symlink_to(ssh / "missing-target")  # dangling: a key "to be made" there would land elsewhere
    answers = answers_for(tmp_path).replace("ssh", private_key=str(path))
    errors, _ = readiness(answers, RunOptions(state_dir=tmp_path / "state"))
    assert any(in_words(e).startswith("ssh.private_key:") and "symbolic link" in e for e in errors)
    _, warnings = readiness(answers, RunOptions(state_dir=tmp_path / "state", dry_run=True))
    assert any("symbolic link" in w and "(a real run stops here)" in w for w in warnings)
    assert not (ssh / "missing-target").exists()
