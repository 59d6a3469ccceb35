"""Element Web's release, fetched and verified by the element stages' own commands (curl, gpg,
tar), run here on this machine as if it were the host, against releases in Element's published
format served over HTTP (tests/fixtures/element_release.py says what differs from a real one).

A release signed by Element's key is unpacked and served; a tampered archive, a release signed by
another key and an archive that reaches outside its folder are refused before anything is
unpacked; a newer release replaces the served one and the previous one is kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from installer.answers import Answers
from installer.components.element import stages as element_stages
from installer.engine import Session, Stage, StageContext, StageError
from installer.events import StageLog, Status
from installer.options import RunOptions
from installer.remote import CommandResult, RemoteCommandError
from installer.state import RunState
from tests.fixtures.element_release import Releases, ReleaseServer, archive_bytes, make_key

pytestmark = pytest.mark.skipif(not (shutil.which("gpg") and shutil.which("curl") and shutil.which("tar")),
                                reason="needs gpg, curl and tar")


class LocalHost:
    """A Remote that runs each command here with sh (as the host would with sudo)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def run(self, command, *, log, sudo=False, check=True, timeout=900, input=None, quiet=False, dry_output=""):
        self.commands.append(command)
        done = await asyncio.to_thread(subprocess.run, ["sh", "-c", command], input=input, capture_output=True,
                                       text=True, timeout=timeout)
        for line in done.stdout.splitlines():
            log(line, "out")
        result = CommandResult(done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            raise RemoteCommandError(command, result, done.stderr.splitlines()[-3:])
        return result

    async def probe(self, command, *, log, sudo=False):
        return (await self.run(command, log=log, check=False)).ok

    async def read_file(self, path, *, log=None, sudo=True):
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    async def put_file(self, path, data, *, log, mode=0o644, owner="root:root", backup=True, secret=False):
        target = Path(path)
        if target.exists() and target.read_bytes() == data:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
        return True

    async def close(self):
        return None


@pytest.fixture
def releases(tmp_path: Path):
    made = Releases.make(tmp_path / "gnupg")
    made.add("v1.11.90")
    server = ReleaseServer(made)
    yield made, server
    server.close()


@pytest.fixture
def element_home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "host" / "element"
    monkeypatch.setattr(element_stages, "HOME", str(home))
    monkeypatch.setattr(element_stages, "CURRENT", str(home / "current"))
    monkeypatch.setattr(element_stages, "CONFIG", str(home / "config.json"))
    return home


def context(tmp_path: Path, version: str = "latest", *, mode: str = "install") -> tuple[StageContext, list[str]]:
    answers = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    answers = answers.replace("element", version=version)
    session = Session(answers=answers, state=RunState(None, {"facts": {}}), options=RunOptions(mode=mode), remote=LocalHost())
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(e.line) if isinstance(e, StageLog) else None)
    return StageContext(session, Stage("element.files", "t", lambda ctx: None)), lines


def served(home: Path) -> str:
    return os.readlink(home / "current")


async def test_a_signed_release_is_unpacked_and_served_with_our_config(tmp_path, releases, element_home, monkeypatch):
    made, server = releases
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    ctx, lines = context(tmp_path)
    assert await element_stages.install_release(ctx) is Status.DONE
    assert served(element_home) == "element-v1.11.90"
    app = element_home / "current"
    assert "stand-in Element Web v1.11.90" in (app / "index.html").read_text()
    assert json.loads((app / "config.json").read_text())["default_server_config"]["m.homeserver"]["server_name"] == "example.org"
    assert os.readlink(app / "config.json") == "../config.json"
    assert not list(element_home.glob(".download-*")), "the download folder is removed"
    assert any(f"good signature by {made.fingerprint}" in line for line in lines)
    assert ctx.facts["element.version"] == "v1.11.90" and ctx.session.links == [("Element Web", "https://element.example.org")]
    # A rerun finds it in place and asks nobody.
    asked = len(server.requests)
    ctx, _ = context(tmp_path)
    assert await element_stages.install_release(ctx) is Status.UNCHANGED
    assert len(server.requests) == asked


async def test_a_newer_release_replaces_the_served_one_and_the_previous_is_kept(tmp_path, releases, element_home, monkeypatch):
    made, server = releases
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    ctx, _ = context(tmp_path)
    await element_stages.install_release(ctx)
    made.add("v1.11.91")
    ctx, lines = context(tmp_path, mode="upgrade")
    assert await element_stages.upgrade_release(ctx) is Status.DONE
    assert served(element_home) == "element-v1.11.91"
    assert sorted(p.name for p in element_home.glob("element-v*")) == ["element-v1.11.90", "element-v1.11.91"]
    assert any("sudo ln -sfn element-v1.11.90" in line for line in lines), "the way back is said"
    ctx, _ = context(tmp_path, mode="upgrade")
    assert await element_stages.upgrade_release(ctx) is Status.UNCHANGED
    # One more: the oldest goes, the one before the served one stays.
    made.add("v1.11.92")
    ctx, _ = context(tmp_path, mode="upgrade")
    await element_stages.upgrade_release(ctx)
    assert sorted(p.name for p in element_home.glob("element-v*")) == ["element-v1.11.91", "element-v1.11.92"]


@pytest.mark.parametrize("case", ["tampered", "other key", "key swapped", "outside its folder"])
async def test_a_release_that_does_not_verify_is_never_unpacked(tmp_path, releases, element_home, monkeypatch, case):
    made, server = releases
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    if case == "tampered":  # the archive changed after it was signed
        made.replace_archive("v1.11.90", archive_bytes("v1.11.90", extra={"index.html": b"<script>evil()</script>"}))
    elif case in ("other key", "key swapped"):  # signed by a key with Element's name, not the pinned one
        other = tmp_path / "other-gnupg"
        make_key(other, "Element Releases <releases@riot.im>")
        made.add("v1.11.90", signed_by=other)
        if case == "key swapped":  # ... and served as the release key: its fingerprint still gives it away
            from tests.fixtures.element_release import gpg

            made.files["/key.asc"] = gpg(other, "--armor", "--export").stdout
    else:  # signed, but with a link pointing out of the release
        made.add("v1.11.90", data=archive_bytes("v1.11.90", symlink="passwd"))
    ctx, _ = context(tmp_path)
    with pytest.raises(StageError) as caught:
        await element_stages.install_release(ctx)
    said = str(caught.value)
    assert "nothing was unpacked" in said
    expected = {"tampered": "a bad signature", "other key": "a key it does not have",
                "key swapped": "not the release key", "outside its folder": "link"}[case]
    assert expected in said, said
    assert not (element_home / "current").exists() and not list(element_home.glob("element-v*"))
    assert not list(element_home.glob(".download-*"))
