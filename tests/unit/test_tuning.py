"""The tuning component: the swap offer on small boxes (headless "ask" says no and why; "yes" adds
it once), and `--check`'s server health section (what is flagged for action; never failing the
federation test when the host cannot be reached or this machine does not know it)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

from installer.answers import Answers
from installer.components.tuning import health
from installer.components.tuning.stages import SWAPFILE, offer_swap
from installer.engine import Session, Stage, StageContext
from installer.events import StageLog, Status
from installer.host.connect import HostSize
from installer.host.saved import CONNECT_TIMEOUT
from installer.options import RunOptions
from installer.plan import plan_for
from installer.remote import CommandResult
from installer.state import RunState
from tests.unit.test_host_stages import ScriptedRemote

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024 * 1024 * 1024


def context(answers: Answers, remote, size: HostSize):
    session = Session(answers=answers, state=RunState(None, {"facts": {}}), options=RunOptions(), remote=remote)
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(e.line) if isinstance(e, StageLog) else None)
    ctx = StageContext(session, Stage("host.swap", "t", offer_swap, takes=(HostSize,), gives=(HostSize,)))
    ctx.give(size)
    return ctx, lines


async def test_a_small_box_without_swap_is_offered_one_and_headless_ask_says_no():
    remote = ScriptedRemote([(r"swapon --show", CommandResult(0, "", ""))])
    ctx, lines = context(Answers(), remote, HostSize(1024, 1))
    assert await offer_swap(ctx) is Status.SKIPPED
    assert any('no swap file: swap = "ask" and nobody to ask in a headless run' in line for line in lines)
    assert not any("mkswap" in c for c in remote.commands)


async def test_yes_adds_a_swap_file_once_with_low_swappiness():
    remote = ScriptedRemote([(r"swapon --show", CommandResult(0, "", "")), (r".", True)])
    ctx, lines = context(Answers().replace("tuning", swap="yes"), remote, HostSize(1024, 1, disk_free_mib=40000))
    assert await offer_swap(ctx) is Status.DONE
    made = next(c for c in remote.commands if "mkswap" in c)
    assert "fallocate -l 2048M /swapfile" in made and f"swapon {SWAPFILE}" in made
    assert any("/etc/fstab" in c for c in remote.commands)
    assert any("added a 2 GiB swap file" in line for line in lines)
    # A box with swap already, or a large box: nothing.
    remote = ScriptedRemote([(r"swapon --show", CommandResult(0, "/swapfile\n", ""))])
    ctx, _ = context(Answers().replace("tuning", swap="yes"), remote, HostSize(1024, 1, swap_mib=2048))
    assert await offer_swap(ctx) is Status.UNCHANGED
    ctx, lines = context(Answers().replace("tuning", swap="yes"), ScriptedRemote([]), HostSize(12288, 2))
    assert await offer_swap(ctx) is Status.SKIPPED and "no swap file offered" in lines[0]


def test_health_flags_what_needs_action():
    now = time.time()
    good = health.Health.parse(
        f"synapse_rss={300 * 2**20}\nsynapse_limit={GIB}\nsynapse_oom=0\nsynapse_state=running 0 false\n"
        "memory=2097152 1048576 0 0\ndisk=50000000 40000000\ndb=postgres 52428800\nmedia=10240 2048\nretention=90d\n"
        f"compress={now - 3600:.0f} ok 60000000 52428800\n")
    lines = health.findings(good, now=now)
    assert [act for _, act in lines] == [False] * len(lines)
    text = "\n".join(line for line, _ in lines)
    assert "Synapse memory: 300 MiB of its 1.0 GiB limit (29%)" in text
    assert "disk: 38.1 GiB free of 47.7 GiB" in text and "database (postgres): 50 MiB" in text
    assert "2 MiB cached from other servers (deleted after 90d unseen)" in text
    assert "state compression: last run 0.0 days ago, ok, database 57 MiB -> 50 MiB" in text
    bad = health.Health.parse(
        f"synapse_rss={980 * 2**20}\nsynapse_limit={GIB}\nsynapse_oom=2\nsynapse_state=running 2 false\n"
        "memory=1003520 40000 2097152 500000\ndisk=50000000 1000000\ndb=sqlite 5000000000\nmedia=1 2\nretention=\n"
        f"compress={now - 5 * 86400:.0f} failed\n")
    flagged = [line for line, act in health.findings(bad, now=now) if act]
    assert len(flagged) == 6, flagged
    assert any("near its limit" in f for f in flagged) and any("killed for memory (2 time(s))" in f for f in flagged)
    assert any("lives in swap" in f for f in flagged) and any("free some space" in f for f in flagged)
    assert any("a backup's dump would not fit" in f for f in flagged) and any("FAILED" in f for f in flagged)
    assert any("kept forever: no media_retention" in line for line, _ in health.findings(bad, now=now))
    fresh = health.Health.parse("media= \nretention=90d\n")  # no media stored yet: du finds no folder
    assert ("media: 0 MiB uploaded here (kept), 0 MiB cached from other servers (deleted after 90d unseen)", False) in \
        health.findings(fresh, now=now)
    untuned = health.Health.parse(f"synapse_rss={200 * 2**20}\nsynapse_limit=0\nsynapse_state=running 0 false\n")
    assert "no container limit" in health.findings(untuned)[0][0]


def test_check_mode_has_the_health_stage_before_the_federation_test():
    plan = plan_for("check", Answers().replace("domain", server_name="example.org", matrix_host="example.org"), {})
    names = [s.name for s in plan]
    assert names[0] == "host.health" and names[-1] == "federation.check"
    assert "host.health" in plan[-1].needs and plan[0].skippable


def test_check_without_state_or_host_skips_the_health_and_still_tests_federation(tmp_path: Path):
    """The host of a server this machine never installed cannot be asked: a note, then the test."""
    done = subprocess.run([sys.executable, "-m", "installer", "--check", "example.invalid", "--state-dir", str(tmp_path),
                           "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    out = done.stdout + done.stderr
    assert "host.health          no run of this machine's state knows example.invalid: its host is not asked" in out, out[-2000:]
    assert "host.health          skipped" in out
    assert "federation.check" in out or "Federation test" in out


async def test_an_unreachable_host_is_a_note_not_a_failure(tmp_path: Path):
    from installer.discovery import ANSWERS_FILE

    folder = tmp_path / "example.org"
    folder.mkdir(mode=0o700)
    (folder / ANSWERS_FILE).write_text('version = 1\n[domain]\nserver_name = "example.org"\nmatrix_host = "matrix.example.org"\n'
                                       '[cloud]\nprovider = "existing"\n[ssh]\nhost = "127.0.0.1"\nport = 9\n'
                                       'host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"\n')
    (folder / ANSWERS_FILE).chmod(0o600)
    RunState.load(tmp_path, "example.org").remember("host.address", "127.0.0.1")  # a run from here knows it
    answers = Answers().replace("domain", server_name="example.org", matrix_host="example.org")
    session = Session(answers=answers, state=RunState(None), options=RunOptions(mode="check", state_dir=tmp_path))
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(e.line) if isinstance(e, StageLog) else None)
    ctx = StageContext(session, Stage("host.health", "t", health.server_health))
    assert await health.server_health(ctx) is Status.SKIPPED
    assert any(line.startswith("server health not checked: the server could not be asked over SSH") for line in lines), lines
    assert session.checks == []  # a note, not a failed check


def saved_server(tmp_path: Path, backup: str = "s3") -> Session:
    """A server this machine installed (its answers in the state folder; an S3 backup target), and a --check session."""
    from installer.discovery import ANSWERS_FILE

    folder = tmp_path / "example.org"
    folder.mkdir(mode=0o700, parents=True)
    (folder / ANSWERS_FILE).write_text(
        'version = 1\n[domain]\nserver_name = "example.org"\nmatrix_host = "matrix.example.org"\n'
        '[cloud]\nprovider = "existing"\n[ssh]\nhost = "192.0.2.7"\n'
        'host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"\n'
        f'[backup]\ntarget = "{backup}"\n' + ('s3_endpoint = "https://s3.example.org"\ns3_access_key_env = "K"\ns3_secret_key_env = "S"\n' if backup == "s3" else ''))
    (folder / ANSWERS_FILE).chmod(0o600)
    RunState.load(tmp_path, "example.org").remember("host.address", "192.0.2.7")  # a run from here knows it
    answers = Answers().replace("domain", server_name="example.org", matrix_host="example.org")
    return Session(answers=answers, state=RunState(None), options=RunOptions(mode="check", state_dir=tmp_path))


class FakeSsh:
    """Stands in for installer.ssh.SshRemote: counts connections, answers the health and backup commands."""
    made: list[FakeSsh] = []
    refuse = False

    def __init__(self, target, *, connect_timeout: float, **kwargs) -> None:
        self.target, self.commands, self.closed, self.waits = target, [], False, connect_timeout
        FakeSsh.made.append(self)

    async def connect_once(self) -> None:
        await __import__("asyncio").sleep(0.05)  # both stages ask while the first connects
        if FakeSsh.refuse:
            from installer.ssh import Unreachable

            raise Unreachable(f"SSH on {self.target.host}:{self.target.port} did not answer in time (connection refused)")

    async def run(self, command: str, *, log, **kwargs) -> CommandResult:
        self.commands.append(command)
        if "synapse_rss" in command:
            return CommandResult(0, f"synapse_rss={300 * 2**20}\nsynapse_limit={2**30}\nsynapse_oom=0\n"
                                    "synapse_state=running 0 false\nmemory=1003520 501056 0 0\n"
                                    "disk=48254668 40000000\ndb=postgres 52428800\nmedia=10 2\nretention=90d\n"
                                    f"compress={time.time():.0f} ok 100 90\n", "")
        return CommandResult(0, "\n--\n\n--\n1700000000\n", "")

    async def close(self) -> None:
        self.closed = True


async def test_check_reads_health_and_backups_over_one_connection_from_the_saved_state(tmp_path: Path, monkeypatch):
    """installer.host.saved is the one way --check reaches the host: the two stages that read it,
    run side by side as the engine does, share one connection to the pinned key; the health is the
    report's check "host-health"."""
    import asyncio

    import installer.ssh
    from installer.components.backup.stages import check_mode_age

    monkeypatch.setattr(installer.ssh, "SshRemote", FakeSsh)
    FakeSsh.made, FakeSsh.refuse = [], False
    session = saved_server(tmp_path)
    results = await asyncio.gather(health.server_health(StageContext(session, Stage("host.health", "t", health.server_health))),
                                   check_mode_age(StageContext(session, Stage("backup.age", "t", check_mode_age))))
    assert results == [Status.DONE, Status.DONE]
    assert len(FakeSsh.made) == 1 and session.remote is FakeSsh.made[0]  # the engine closes it at the end
    assert FakeSsh.made[0].target.host == "192.0.2.7" and "pinned" in FakeSsh.made[0].target.host_key_source
    assert FakeSsh.made[0].waits <= CONNECT_TIMEOUT  # --check waits briefly for SSH, not an install's minutes
    assert len(FakeSsh.made[0].commands) == 2
    checks = {c["name"]: c for c in session.checks}
    assert checks["host-health"]["ok"] is True and "Synapse memory: 300 MiB of its 1.0 GiB limit" in checks["host-health"]["detail"]
    assert checks["backup-age"]["ok"] is False  # no backup has run on the (fake) host

    # A host that does not answer: tried once, said by both (the health as a note, the backup as a failed check).
    FakeSsh.made, FakeSsh.refuse = [], True
    session = saved_server(tmp_path / "again")
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(e.line) if isinstance(e, StageLog) else None)
    results = await asyncio.gather(health.server_health(StageContext(session, Stage("host.health", "t", health.server_health))),
                                   check_mode_age(StageContext(session, Stage("backup.age", "t", check_mode_age))))
    assert results == [Status.SKIPPED, Status.DONE] and len(FakeSsh.made) == 1 and FakeSsh.made[0].closed
    assert any("server health not checked: the server could not be asked over SSH (SSH on 192.0.2.7:22 did not "
               "answer in time (connection refused))" in line
               for line in lines), lines
    assert [(c["name"], c["ok"]) for c in session.checks] == [("backup-age", False)]
    assert "could not be asked over SSH" in session.checks[0]["detail"]


async def test_health_that_needs_action_fails_the_check_and_says_what_to_do(tmp_path: Path, monkeypatch):
    import installer.ssh

    class Full(FakeSsh):
        async def run(self, command: str, *, log, **kwargs) -> CommandResult:
            return CommandResult(0, "synapse_state=running 3 true\nsynapse_oom=3\ndisk=48254668 1000\n", "")

    monkeypatch.setattr(installer.ssh, "SshRemote", Full)
    FakeSsh.refuse = False
    session = saved_server(tmp_path, backup="none")
    assert await health.server_health(StageContext(session, Stage("host.health", "t", health.server_health))) is Status.DONE
    [check] = session.checks
    assert check["name"] == "host-health" and check["ok"] is False
    assert "killed for memory (3 time(s))" in check["fix"] and "grow the volume" in check["fix"]
