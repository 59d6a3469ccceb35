"""Upgrade mode on the lab host, over the real SSH layer.

The lab host (its own, for this module: these tests change its packages and its Synapse) gets
Docker, an SQLite Synapse deployment made by the install's own stages (synapse.config, services.start) on
the stand-in image 1.163.1, and a local apt repository with an upgradable package (whose new
version asks for a reboot and ships a changed config file) and a held one. Then, in order:

1. an upgrade to the stand-in 1.163.2: backup, packages, Synapse recreated, old image pruned;
2. a rerun with nothing new: every stage unchanged, the reboot skipped;
3. a broken new image: Synapse is rolled back to 1.163.2 and the stage says so;
4. the backup from step 1 restored: the same signing key and users come back.

No registry is reachable from the lab, so "a pull brought a new image" is played by loading
the image into the lab host's Docker and moving the deployment's tag onto it (the pull itself
fails, and the upgrade carries on with the image already on the host, as it says it does).
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
import time

import pytest

from installer.answers import Answers
from installer.engine import Engine, RunOptions, Session, Stage
from installer.events import StageFinished, StageLog, Status
from installer.headless import HeadlessReporter
from installer.plan import install_plan, upgrade_plan
from installer.state import RunState
from installer.host.containers import human_size
from installer.host.layout import BACKUP_SCRIPT, RESTORE_SCRIPT
from tests.lab import lab as _lab

pytestmark = pytest.mark.lab

TAG = "matrix-installer-lab/synapse:current"
OLD_VERSION = "1.163.1"
NEW_VERSION = _lab.SYNAPSE_VERSION
SERVER_NAME = "example.test"
USERS = ("admin", "alice")


# --- the lab host, set up as an install leaves it -------------------------------------------

@pytest.fixture(scope="module")
def images(lab_docker):
    try:
        return {
            "old": _lab.build_synapse_image(version=OLD_VERSION),
            "new": _lab.build_synapse_image(version=NEW_VERSION),
            "broken": _lab.build_synapse_image(version=NEW_VERSION, broken=True),
        }
    except _lab.LabError as exc:
        pytest.fail(f"the stand-in Synapse images could not be built: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def host(lab_host_image, lab_session_key):
    try:
        lab = _lab.LabHost.start(lab_host_image, lab_session_key, name=None)
    except _lab.LabError as exc:
        pytest.fail(f"the lab host could not be started: {exc}", pytrace=False)
    try:
        lab.preinstall_docker()
        yield lab
    finally:
        lab.stop()


def sh(lab: _lab.LabHost, script: str, **kw) -> str:
    result = lab.exec(textwrap.dedent(script), **kw)
    assert result.returncode == 0, f"{script}\n{result.stdout}{result.stderr}"
    return result.stdout


def image_id(lab: _lab.LabHost, ref: str) -> str:
    return sh(lab, f"docker image inspect --format '{{{{.Id}}}}' {ref}").strip()


def bring_image(lab: _lab.LabHost, runner_tag: str) -> str:
    """What a pull that found a new image leaves on the host: the deployment's tag on it, and
    the image it replaced untagged."""
    lab.load_image(runner_tag, as_tag=TAG)
    sh(lab, f"docker image rm {runner_tag} >/dev/null")  # only the tag: TAG still names it
    return image_id(lab, TAG)


def synapse_version(lab: _lab.LabHost) -> str:
    out = sh(lab, "curl -fsS http://localhost:8008/_matrix/federation/v1/version")
    return json.loads(out)["server"]["version"]


def wait_health(lab: _lab.LabHost, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.exec("curl -fsS http://localhost:8008/health").stdout.strip() == "OK":
            return
        time.sleep(1)
    raise AssertionError("Synapse did not answer /health:\n" + lab.exec("docker logs --tail 40 synapse").stdout)


def users(lab: _lab.LabHost) -> list[str]:
    out = sh(lab, """docker exec synapse python3 -c 'import sqlite3; print("\\n".join(r[0] for r in sqlite3.connect("/data/homeserver.db").execute("select name from users order by name")))'""")
    return out.split()


APT_PACKAGES = r"""
set -eu
make_deb() {  # name version postinst-line conf-text
    root=/tmp/debs/$1_$2
    mkdir -p "$root/DEBIAN" "$root/etc"
    printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: lab <lab@example.test>\nDescription: matrix-installer lab package\n' "$1" "$2" > "$root/DEBIAN/control"
    echo "/etc/$1.conf" > "$root/DEBIAN/conffiles"
    echo "$4" > "$root/etc/$1.conf"
    printf '#!/bin/sh\nset -e\n%s\n' "$3" > "$root/DEBIAN/postinst"
    chmod 0755 "$root/DEBIAN/postinst"
    dpkg-deb --build --root-owner-group "$root" "/srv/lab-repo/$1_$2_all.deb" >/dev/null
}
mkdir -p /srv/lab-repo
make_deb matrix-lab-tool 1.0 true "setting = 1.0"
make_deb matrix-lab-tool 1.1 "touch /var/run/reboot-required; echo matrix-lab-tool >> /var/run/reboot-required.pkgs" "setting = 1.1"
make_deb matrix-lab-held 1.0 true "held = 1.0"
make_deb matrix-lab-held 1.1 true "held = 1.1"
dpkg -i /srv/lab-repo/matrix-lab-tool_1.0_all.deb /srv/lab-repo/matrix-lab-held_1.0_all.deb >/dev/null
rm /srv/lab-repo/*_1.0_all.deb
# The admin edited the tool's config file: the upgrade must keep the edit.
echo "setting = edited by the admin" > /etc/matrix-lab-tool.conf
apt-mark hold matrix-lab-held >/dev/null
cd /srv/lab-repo
for deb in *.deb; do
    dpkg-deb -f "$deb"
    echo "Filename: ./$deb"
    echo "Size: $(stat -c %s "$deb")"
    echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
    echo
done > Packages
echo 'deb [trusted=yes] file:/srv/lab-repo ./' > /etc/apt/sources.list.d/lab-repo.list
"""


@pytest.fixture(scope="module")
def deployment(host, images, tmp_path_factory):
    """Synapse 1.163.1 deployed by the install's own stages, two users, and the apt repository."""
    import asyncio

    bring_image(host, images["old"])
    answers = lab_answers(host)
    install = ("local.ssh_key", "host.ssh", "host.docker", "synapse.config", "services.start")
    finished, logs, _ = asyncio.run(run_stages(install_plan(answers), install, answers, tmp_path_factory.mktemp("install")))
    assert all(e.status in (Status.DONE, Status.UNCHANGED) for e in finished.values()), explain(finished, logs)
    wait_health(host)
    for user in USERS:
        sh(host, f"docker exec synapse register_new_matrix_user -u {user} -p pw-{user}-123 "
                 f"{'-a' if user == 'admin' else '--no-admin'} -c /data/homeserver.yaml http://localhost:8008")
    sh(host, APT_PACKAGES)
    key = sh(host, "cat /opt/matrix/synapse/data/*.signing.key")
    return {"answers": answers, "signing_key": key, "old_id": image_id(host, TAG)}


def lab_answers(host: _lab.LabHost) -> Answers:
    return (
        Answers()
        .replace("domain", server_name=SERVER_NAME, matrix_host=f"matrix.{SERVER_NAME}")
        .replace("cloud", provider="existing")
        .replace("packages", source="distro")
        .replace("ssh", host=host.host, port=host.ssh_port, user=host.user,
                 private_key=str(host.private_key_path), host_key=host.host_key)
        .replace("synapse", image=TAG)
        .replace("database", engine="sqlite")  # how every server was installed before Postgres was the default
        .replace("upgrade", reboot="no", keep_backups=2)
        .replace("element", enabled=False)  # Element Web and TURN have their own lab test
        .replace("calls", turn=False)
    )


# --- running the upgrade stages ------------------------------------------------------------

UPGRADE = ("local.ssh_key", "host.ssh", "upgrade.preflight", "upgrade.backup", "upgrade.packages",
           "upgrade.reboot", "upgrade.images", "upgrade.prune")
"""The upgrade plan without its federation test, which needs DNS and Caddy this lab host lacks."""


async def run_stages(plan: list[Stage], names: tuple[str, ...], answers: Answers, tmp_path
                     ) -> tuple[dict[str, StageFinished], list[StageLog], Session]:
    """Run the named stages of a plan, as the command line would, with the SSH stage connecting."""
    stages = [dataclasses.replace(s, needs=tuple(n for n in s.needs if n in names)) for s in plan if s.name in names]
    session = Session(answers, RunState.load(tmp_path / "state", SERVER_NAME), RunOptions(mode="upgrade"))
    events: list = []
    session.listeners += [events.append, HeadlessReporter()]  # the reporter's lines show when a test fails
    try:
        await Engine(stages, session).run()
    finally:
        if session.remote is not None:
            await session.remote.close()
    finished = {e.stage: e for e in events if isinstance(e, StageFinished)}
    logs = [e for e in events if isinstance(e, StageLog)]
    return finished, logs, session


async def run_upgrade(host: _lab.LabHost, answers: Answers, tmp_path):
    finished, logs, session = await run_stages(upgrade_plan(answers), UPGRADE, answers, tmp_path)
    for name in ("local.ssh_key", "host.ssh"):
        assert finished[name].status in (Status.DONE, Status.UNCHANGED), explain(finished, logs)
        del finished[name]
    return finished, logs, session


def statuses(finished: dict[str, StageFinished]) -> dict[str, str]:
    return {name: e.status.value for name, e in finished.items()}


def explain(finished: dict[str, StageFinished], logs: list[StageLog]) -> str:
    """The failed stages' errors and logs, for an assertion message."""
    failed = [name for name, e in finished.items() if e.status is Status.FAILED]
    return "\n".join(f"{name}: {finished[name].error}\n{said(logs, name)}" for name in failed)


def said(logs: list[StageLog], stage: str) -> str:
    return "\n".join(e.line for e in logs if e.stage == stage)


def backups(host: _lab.LabHost) -> list[str]:
    return sorted(sh(host, "ls -1 /opt/matrix/backups").split())


# --- the tests, in order -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def upgraded(host, images, deployment, tmp_path_factory):
    """Step 1, shared by the tests that look at its results."""
    import asyncio

    new_id = bring_image(host, images["new"])
    finished, logs, session = asyncio.run(run_upgrade(host, deployment["answers"], tmp_path_factory.mktemp("upgrade")))
    return {"finished": finished, "logs": logs, "session": session, "new_id": new_id}


def test_upgrade_moves_synapse_to_the_new_image_after_a_backup(host, deployment, upgraded):
    finished, logs = upgraded["finished"], upgraded["logs"]
    assert statuses(finished) == {
        "upgrade.preflight": "done", "upgrade.backup": "done", "upgrade.packages": "done",
        "upgrade.reboot": "skipped", "upgrade.images": "done", "upgrade.prune": "done",
    }, explain(finished, logs)
    preflight = said(logs, "upgrade.preflight")
    assert "What the upgrade will change:" in preflight
    assert "matrix-lab-tool 1.0 -> 1.1" in preflight
    assert "held (left as they are): matrix-lab-held" in preflight
    assert f"Synapse: {OLD_VERSION} ({TAG}" in preflight and "-> new image" in preflight
    assert "could not pull the newest images" in preflight  # no registry in the lab
    # Synapse: the new image runs, healthy, and the log says old -> new.
    assert f"Synapse {OLD_VERSION} -> {NEW_VERSION}" in said(logs, "upgrade.images")
    assert synapse_version(host) == NEW_VERSION
    running = sh(host, "docker inspect --format '{{.Image}}' synapse").strip()
    assert running == upgraded["new_id"]
    # The previous image was pruned.
    assert host.exec(f"docker image inspect {deployment['old_id']}").returncode != 0
    assert "reclaimed" in said(logs, "upgrade.prune")


def test_packages_upgraded_keeping_config_edits_and_holds(host, upgraded):
    versions = dict(line.split() for line in sh(host, "dpkg-query -W matrix-lab-tool matrix-lab-held").splitlines())
    assert versions == {"matrix-lab-tool": "1.1", "matrix-lab-held": "1.0"}
    assert sh(host, "cat /etc/matrix-lab-tool.conf").strip() == "setting = edited by the admin"
    # The new version asked for a reboot; the answers said no, and the stage said so.
    assert host.exec("test -f /var/run/reboot-required").returncode == 0
    reboot = said(upgraded["logs"], "upgrade.reboot")
    assert "the OS asks for a reboot (for matrix-lab-tool)" in reboot and 'reboot = "no"' in reboot


def test_backup_is_a_private_archive_reported_in_the_log(host, upgraded):
    [archive] = backups(host)
    assert re.fullmatch(r"synapse-\d{8}T\d{6}Z\.tar\.gz", archive)
    path = f"/opt/matrix/backups/{archive}"
    assert sh(host, f"stat -c '%a %U %G' {path}").split() == ["600", "root", "root"]
    assert sh(host, "stat -c '%a' /opt/matrix/backups").strip() == "700"
    listing = sh(host, f"tar -tzf {path}").split()
    for member in ("synapse/docker-compose.yml", "synapse/data/homeserver.yaml",
                   f"synapse/data/{SERVER_NAME}.signing.key", "synapse/data/homeserver.db"):
        assert member in listing
    assert not [m for m in listing if m.endswith(("-wal", "-shm", "-journal"))]
    log = said(upgraded["logs"], "upgrade.backup")
    size = int(sh(host, f"stat -c %s {path}"))
    assert f"backup: {path} ({human_size(size)}, mode 0600, owner root)" in log
    assert "online copy" in log and f"sudo {RESTORE_SCRIPT} {path}" in log


async def test_rerun_with_nothing_new_changes_nothing(host, deployment, upgraded, tmp_path):
    before = backups(host)
    finished, logs, _ = await run_upgrade(host, deployment["answers"], tmp_path)
    assert statuses(finished) == {
        "upgrade.preflight": "unchanged", "upgrade.backup": "unchanged", "upgrade.packages": "unchanged",
        "upgrade.reboot": "skipped", "upgrade.images": "unchanged", "upgrade.prune": "unchanged",
    }, explain(finished, logs)
    assert "Nothing to upgrade." in said(logs, "upgrade.preflight")
    assert backups(host) == before
    assert synapse_version(host) == NEW_VERSION


async def test_a_broken_new_image_is_rolled_back(host, images, deployment, upgraded, tmp_path):
    good_id = upgraded["new_id"]
    broken_id = bring_image(host, images["broken"])
    assert broken_id != good_id
    finished, logs, _ = await run_upgrade(host, deployment["answers"], tmp_path)
    result = statuses(finished)
    assert result["upgrade.backup"] == "done" and result["upgrade.images"] == "failed"
    assert result["upgrade.prune"] == "skipped"  # nothing removed: the failed image stays to look at
    error = finished["upgrade.images"].error
    assert f"rolled back to Synapse {NEW_VERSION}" in error and "running and healthy" in error, error
    assert "deliberately broken" in said(logs, "upgrade.images")  # the failed container's log was shown
    # Synapse runs the previous image again, and the tag names it again.
    assert sh(host, "docker inspect --format '{{.Image}}' synapse").strip() == good_id
    assert image_id(host, TAG) == good_id
    wait_health(host, 30)
    assert synapse_version(host) == NEW_VERSION
    # keep_backups = 2: the upgrade's and this one's.
    assert len(backups(host)) == 2


def test_older_backups_beyond_keep_backups_are_removed(host, upgraded):
    before = backups(host)
    out = sh(host, BACKUP_SCRIPT)
    after = backups(host)
    assert len(after) == 2 and after[0] == before[1] and before[0] not in after
    assert f"removed /opt/matrix/backups/{before[0]}" in out


def test_a_backup_restores_the_same_signing_key_and_users(host, deployment):
    # Changes after the backup: a new user, and a damaged signing key.
    sh(host, "docker exec synapse register_new_matrix_user -u bob -p pw-bob-123 --no-admin "
             "-c /data/homeserver.yaml http://localhost:8008")
    assert users(host) == sorted(f"@{u}:{SERVER_NAME}" for u in (*USERS, "bob"))
    newest = backups(host)[-1]
    key_before = json.loads(sh(host, "curl -fsS http://localhost:8008/_matrix/key/v2/server"))["verify_keys"]
    sh(host, f"echo damaged > /opt/matrix/synapse/data/{SERVER_NAME}.signing.key")
    sh(host, f"{RESTORE_SCRIPT} /opt/matrix/backups/{newest}")
    wait_health(host)
    assert sh(host, "cat /opt/matrix/synapse/data/*.signing.key") == deployment["signing_key"]
    assert json.loads(sh(host, "curl -fsS http://localhost:8008/_matrix/key/v2/server"))["verify_keys"] == key_before
    assert users(host) == sorted(f"@{u}:{SERVER_NAME}" for u in USERS)
    assert sh(host, "ls -d /opt/matrix/synapse.before-restore-*").strip()
