"""Upgrade mode: parsing what the host says, the dry-run plan, and each stage's decisions
(nothing to do, rollback, reboot with consent) against a scripted host."""

from __future__ import annotations

import json
import re

import pytest

import dataclasses

from installer.answers import Answers
from installer.components.synapse.api import parse_server_version
from installer.components.upgrade import stages as upgrade
from installer.components.upgrade.findings import (
    AptSummary,
    PackageUpgrade,
    parse_apt_simulation,
    parse_apt_summary,
    parse_apt_upgradable,
    parse_backup_output,
    parse_caddy_version,
    parse_held,
)
from installer.engine import ConnectionLost, Engine, RunOptions, Session, Stage
from installer.events import StageFinished, StageLog
from installer.host import containers, layout
from installer.host.containers import ContainerInfo, ImageInfo, human_size, parse_container, parse_image, parse_reclaimed
from installer.interaction import Headless
from installer.plan import upgrade_plan
from installer.remote import CommandResult, RecordingRemote, RemoteCommandError
from installer.state import RunState

# --- parsing ----------------------------------------------------------------------------------

APT_LIST = """\
Listing...
openssl/noble-updates,noble-security 3.0.13-0ubuntu3.5 amd64 [upgradable from: 3.0.13-0ubuntu3.4]
caddy/any-version 2.8.4 arm64 [upgradable from: 2.8.1]
linux-generic/noble-updates 6.8.0.50.50 amd64 [upgradable from: 6.8.0.49.49]
"""


def test_apt_list_upgradable() -> None:
    assert parse_apt_upgradable(APT_LIST) == [
        PackageUpgrade("openssl", "3.0.13-0ubuntu3.5", "3.0.13-0ubuntu3.4", "noble-updates,noble-security"),
        PackageUpgrade("caddy", "2.8.4", "2.8.1", "any-version"),
        PackageUpgrade("linux-generic", "6.8.0.50.50", "6.8.0.49.49", "noble-updates"),
    ]
    assert parse_apt_upgradable("Listing...\n") == []
    assert parse_apt_upgradable("WARNING: apt does not have a stable CLI interface.\n") == []


def test_apt_simulation_lists_upgrades_and_new_packages() -> None:
    text = """\
NOTE: This is only a simulation!
Reading package lists...
The following NEW packages will be installed:
  linux-image-6.8.0-50-generic
Inst openssl [3.0.13-0ubuntu3.4] (3.0.13-0ubuntu3.5 Ubuntu:24.04/noble-updates [amd64])
Inst linux-image-6.8.0-50-generic (6.8.0-50.51 Ubuntu:24.04/noble-updates [amd64])
Inst matrix-lab-tool [1.0] (1.1 localhost [all])
Conf openssl (3.0.13-0ubuntu3.5 Ubuntu:24.04/noble-updates [amd64])
2 upgraded, 1 newly installed, 0 to remove and 1 not upgraded.
"""
    assert parse_apt_simulation(text) == [
        PackageUpgrade("openssl", "3.0.13-0ubuntu3.5", "3.0.13-0ubuntu3.4", "Ubuntu:24.04/noble-updates"),
        PackageUpgrade("linux-image-6.8.0-50-generic", "6.8.0-50.51", "(new)", "Ubuntu:24.04/noble-updates"),
        PackageUpgrade("matrix-lab-tool", "1.1", "1.0", "localhost"),
    ]
    assert str(parse_apt_simulation(text)[0]) == "openssl 3.0.13-0ubuntu3.4 -> 3.0.13-0ubuntu3.5"
    assert parse_apt_summary(text) == AptSummary(2, 1, 0, 1)


def test_apt_summary() -> None:
    assert parse_apt_summary("0 upgraded, 0 newly installed, 0 to remove and 2 not upgraded.") == AptSummary(0, 0, 0, 2)
    assert not AptSummary(0, 0, 0, 2).changed and AptSummary(1, 0, 0, 0).changed
    assert parse_apt_summary("E: Could not get lock") is None


def test_held_packages() -> None:
    assert parse_held("docker.io\nlinux-image-generic\n\n") == ["docker.io", "linux-image-generic"]
    assert parse_held("") == []


@pytest.mark.parametrize(
    "text, version",
    [
        ('{"server_version": "1.163.2", "python_version": "3.12.3"}', "1.163.2"),
        ('{"server": {"name": "Synapse", "version": "1.163.2"}}', "1.163.2"),
        ('{"server_version": "1.99.0 (b=master,abcdef)"}', "1.99.0"),
        ('{"errcode": "M_UNRECOGNIZED"}', None),
        ("<html>502</html>", None),
        ("[]", None),
    ],
)
def test_server_version(text: str, version: str | None) -> None:
    assert parse_server_version(text) == version


def test_container_line() -> None:
    line = "c0ffee running healthy 2024-05-01T10:00:00.5Z 0 sha256:" + "a" * 64 + " matrixdotorg/synapse:latest\n"
    assert parse_container(line) == ContainerInfo("c0ffee", "running", "healthy", 1714557600.5, 0, "sha256:" + "a" * 64,
                                                  "matrixdotorg/synapse:latest")
    assert parse_container("c restarting none 2024-05-01T10:00:00Z 3 sha256:b x:y").restarts == 3
    assert not parse_container("c exited none 2024-05-01T10:00:00Z 0 sha256:b x:y").running
    assert parse_container("") is None
    assert parse_container("Error: No such object: synapse") is None


def test_image_line() -> None:
    digest = "sha256:" + "d" * 64
    line = (f'sha256:{"c" * 64} 412345678 ["matrixdotorg/synapse@{digest}"] '
            '{"org.opencontainers.image.version": "1.163.2", "other": "a | b"}')
    info = parse_image(line)
    assert info == ImageInfo("sha256:" + "c" * 64, (f"matrixdotorg/synapse@{digest}",), "1.163.2", 412345678)
    assert info.digest == digest
    assert info.describe() == f"image sha256:{'c' * 12}, digest sha256:{'d' * 12}"
    local = parse_image("sha256:abc 10 [] null")
    assert local == ImageInfo("sha256:abc", (), "", 10) and local.digest == ""
    assert parse_image("sha256:abc 10 null {}") == ImageInfo("sha256:abc", (), "", 10)
    assert parse_image("") is None and parse_image("Error: No such image") is None
    assert parse_image("template parsing error: template: :1:15: executing") is None


def test_caddy_version() -> None:
    assert parse_caddy_version("v2.8.4 h1:q3pe0wpBj1OcHFZ3n/1nl4V4bxBrYoSoab7rL9BMYNk=") == "2.8.4"
    assert parse_caddy_version("2.6.2") == "2.6.2"
    assert parse_caddy_version("sh: 1: caddy: not found") is None


def test_reclaimed_space_and_sizes() -> None:
    assert parse_reclaimed("Deleted Images:\ndeleted: sha256:x\n\nTotal reclaimed space: 412.3MB") == 412_300_000
    assert parse_reclaimed("Total reclaimed space: 0B") == 0
    assert parse_reclaimed("Total reclaimed space: 1.5GB") == 1_500_000_000
    assert parse_reclaimed("nothing") == 0
    assert human_size(0) == "0 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(412_300_000) == "393.2 MiB"


def test_backup_script_output() -> None:
    out = ("database homeserver.db: online copy (sqlite backup API)\n"
           "backup /opt/matrix/backups/synapse-20250102T030405Z.tar.gz 123456\n"
           "removed /opt/matrix/backups/synapse-20240101T000000Z.tar.gz\n")
    made = parse_backup_output(out)
    assert made is not None
    assert made.path == "/opt/matrix/backups/synapse-20250102T030405Z.tar.gz" and made.size == 123456
    assert made.removed == ("/opt/matrix/backups/synapse-20240101T000000Z.tar.gz",)
    assert parse_backup_output("no Synapse deployment at /opt/matrix/synapse") is None


def test_backup_script_holds_what_the_components_say_quoted_and_keeps_n(tmp_path) -> None:
    import subprocess

    from installer.components.base import BackupDump, BackupFiles, BackupSqlite
    from installer.deployment import Deployment
    from installer.render import render_backup_scripts

    sqlite = Answers().replace("database", engine="sqlite")
    backup, restore = render_backup_scripts(Deployment.build(sqlite).backup_items(), keep=5)
    assert "keep=5\n" in backup and "project=/opt/matrix/synapse\n" in backup
    assert "{{.State.Running}}" in backup  # Docker's template survives Jinja
    assert "container=synapse\n" in backup and '"$name/"docker-compose.yml' in backup and '"$name/"data' in backup
    assert "--exclude=\"$name/\"'data/*.db'" in backup and "pg_dump" not in backup
    # On Postgres: a pg_dump while it runs (one-time keys left out), no SQLite copy, the env file kept.
    backup, restore = render_backup_scripts(Deployment.build(Answers()).backup_items(), keep=5)
    assert "docker exec postgres pg_dump -Fc -U synapse -d synapse --exclude-table-data=e2e_one_time_keys_json" in backup
    assert "sqlite_backup" not in backup and "'data/*.db'" not in backup and '"$name/"postgres.env' in backup
    assert "pg_restore -U synapse -d synapse --no-owner --exit-on-error" in restore
    odd = [BackupFiles(("a b",), exclude=("x y/*",), required=("a b",)), BackupSqlite("c", "d e"),
           BackupDump("dump one.bin", 'echo made > "$out"', restore='cat "$dump"', note="a test dump")]
    backup, restore = render_backup_scripts(odd, keep=1)
    assert "folder='d e'\n" in backup and "\"$name/\"'a b'" in backup and "out=\"$snap/\"'dump one.bin'" in backup
    assert "dump=\"$project/\"'dump one.bin'" in restore and 'cat "$dump"' in restore
    for script in (backup, restore):  # both parse as shell
        (tmp_path / "s.sh").write_text(script)
        assert subprocess.run(["sh", "-n", str(tmp_path / "s.sh")], capture_output=True).returncode == 0


# --- a scripted host --------------------------------------------------------------------------

TAG = "matrixdotorg/synapse:latest"
OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64
BACKUP = "/opt/matrix/backups/synapse-20250102T030405Z.tar.gz"


class FakeHost:
    """Answers the upgrade stages' commands the way an Ubuntu host with Docker would."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.files: dict[str, bytes] = {}
        self.deployed = True
        self.container: dict | None = {"status": "running", "image": OLD, "restarts": 0}
        self.tags = {TAG: NEW}
        self.versions = {OLD: "1.162.0", NEW: "1.163.2"}
        self.broken: set[str] = set()
        self.rollback_breaks = False
        self.pull_ok = True
        self.apt_list = "Listing...\nopenssl/noble-updates 3.0.13-0ubuntu3.5 amd64 [upgradable from: 3.0.13-0ubuntu3.4]\n"
        self.apt_sim = "Inst openssl [3.0.13-0ubuntu3.4] (3.0.13-0ubuntu3.5 Ubuntu:24.04/noble-updates [amd64])\n"
        self.held = ""
        self.reboot_required = False
        self.boot_id = "boot-1"
        self.new_boot_id = True
        self.marker = False
        self.down_polls = 0
        self.dangling = "0123456789ab <none> 400MB\n"

    def _ok(self, out: str = "") -> CommandResult:
        return CommandResult(0, out, "")

    def _fail(self, err: str = "", status: int = 1) -> CommandResult:
        return CommandResult(status, "", err)

    def respond(self, command: str) -> CommandResult:
        c = self.container
        if command == f"test -f {layout.COMPOSE_FILE}":
            return self._ok() if self.deployed else self._fail()
        if command.startswith("docker inspect --format"):
            if c is None:
                return self._fail("Error: No such object: synapse")
            health = "healthy" if c["status"] == "running" and c["image"] not in self.broken else "starting"
            return self._ok(f"id-{c['image'][-4:]} {c['status']} {health} 2024-05-01T10:00:00Z {c['restarts']} {c['image']} {TAG}\n")
        if command.endswith("config --format json"):
            return self._ok(json.dumps({"name": "synapse", "services": {"synapse": {"image": TAG}}}))
        if command.startswith("curl -fsS -m 10"):
            if c is None or c["image"] in self.broken:
                return self._fail("curl: (7) Failed to connect", 7)
            return self._ok(json.dumps({"server_version": self.versions[c["image"]]}))
        if command.startswith("curl -fsS -m 5"):
            return self._ok("OK") if c and c["image"] not in self.broken else self._fail("", 7)
        if command.startswith("docker image inspect"):
            ref = command.rsplit(" ", 1)[1]
            image = self.tags.get(ref, ref)
            if image not in self.versions:
                return self._fail("Error: No such image")
            return self._ok(f'{image} 400000000 ["matrixdotorg/synapse@sha256:{image[-64:]}"] {{}}\n')
        if " pull " in command:
            return self._ok() if self.pull_ok else self._fail("Get https://registry-1.docker.io/v2/: dial tcp: timeout")
        if "apt-get" in command and command.endswith(" update"):
            return self._ok("Reading package lists...\n")
        if command == "apt list --upgradable":
            return self._ok(self.apt_list)
        if command == "apt-mark showhold":
            return self._ok(self.held)
        if "apt-get" in command and " -s --with-new-pkgs upgrade" in command:
            n = len(parse_apt_simulation(self.apt_sim))
            return self._ok(self.apt_sim + f"{n} upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
        if "apt-get" in command and command.endswith(" --with-new-pkgs upgrade"):
            n = len(parse_apt_simulation(self.apt_sim))
            self.apt_sim = ""
            return self._ok(f"{n} upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
        if command == "caddy version":
            return self._ok("v2.8.4 h1:abc=\n")
        if command == f"test -f {upgrade.REBOOT_REQUIRED}":
            return self._ok() if self.reboot_required else self._fail()
        if command == f"cat {upgrade.REBOOT_REQUIRED}.pkgs":
            return self._ok("linux-image-6.8.0-50-generic\n")
        if command == upgrade.BACKUP_SCRIPT:
            return self._ok(f"database homeserver.db: online copy (sqlite backup API)\nbackup {BACKUP} 123456\n")
        if " up -d " in command or command.endswith(" up -d --remove-orphans"):
            image = self.tags[TAG]
            self.container = {"status": "restarting" if image in self.broken else "running", "image": image,
                              "restarts": 2 if image in self.broken else 0}
            return self._ok()
        if command.startswith("docker tag "):
            _, _, source, target = command.split()
            self.tags[target] = source
            if self.rollback_breaks:
                self.broken.add(source)
            return self._ok()
        if " logs " in command:
            return self._ok("synapse: ImportError: the new image is broken\n")
        if command == upgrade.BOOT_STATE:
            if self.down_polls:
                self.down_polls -= 1
                raise ConnectionLost("the SSH connection dropped: Connection reset")
            return self._ok(self.boot_id + "\n" + ("pending\n" if self.marker else ""))
        if command == f"touch {upgrade.REBOOT_MARKER}":
            self.marker = True
            return self._ok()
        if command.startswith("systemd-run "):
            # A container host keeps its boot ID: only the marker in /run tells the reboot happened.
            self.down_polls, self.reboot_required, self.marker = 3, False, False
            if self.new_boot_id:
                self.boot_id = "boot-2"
            return self._ok("Running timer as unit: run-r1.timer\n")
        if command.startswith("docker image ls --filter dangling=true"):
            return self._ok(self.dangling)
        if command == "docker image prune -f":
            self.dangling = ""
            return self._ok("Deleted Images:\ndeleted: sha256:0123\n\nTotal reclaimed space: 400MB\n")
        raise AssertionError(f"the fake host does not know: {command}")

    async def run(self, command: str, *, log, sudo: bool = False, check: bool = True, timeout: float = 900,
                  input: str | None = None, quiet: bool = False, dry_output: str = "") -> CommandResult:
        self.commands.append(command)
        log(f"$ {'sudo ' if sudo else ''}{command}", "command")
        result = self.respond(command)
        for line in result.stdout.splitlines():
            log(line, "out")
        if check and not result.ok:
            raise RemoteCommandError(command, result, result.stderr.splitlines())
        return result

    async def probe(self, command: str, *, log, sudo: bool = False) -> bool:
        return (await self.run(command, log=log, sudo=sudo, check=False)).ok

    async def read_file(self, path: str, *, log=None, sudo: bool = True) -> bytes | None:
        return self.files.get(path)

    async def put_file(self, path: str, data: bytes, *, log, mode: int = 0o644, owner: str = "root:root",
                       backup: bool = True, secret: bool = False) -> bool:
        self.commands.append(f"write {path}")
        changed = self.files.get(path) != data
        self.files[path] = data
        return changed

    async def close(self) -> None:
        return None

    def ran(self, pattern: str) -> list[str]:
        return [c for c in self.commands if re.search(pattern, c)]


def upgrade_stages(answers: Answers) -> list[Stage]:
    """The upgrade stages alone (the SSH stages attach the remote; here the test does)."""
    stages = [s for s in upgrade_plan(answers) if s.name.startswith("upgrade.")]
    return [dataclasses.replace(s, needs=tuple(n for n in s.needs if n.startswith("upgrade."))) for s in stages]


class Asks(Headless):
    """Someone at the screen: `answer` says what they reply to a question."""

    asks = True

    def __init__(self, answer) -> None:
        self.answer = answer

    async def confirm(self, question: str, *, yes: str = "Yes", no: str = "No") -> bool | None:
        return await self.answer(question)


async def run_stages(remote, answers: Answers | None = None, *, dry_run: bool = False, ask=None):
    answers = answers or Answers().replace("ssh", host="203.0.113.7")
    session = Session(answers, RunState.in_memory(), RunOptions(mode="upgrade", dry_run=dry_run))
    session.remote = remote
    if ask is not None:
        session.interaction = Asks(ask)
    events: list = []
    session.listeners.append(events.append)
    await Engine(upgrade_stages(answers), session).run()
    finished = {e.stage: e for e in events if isinstance(e, StageFinished)}
    logs = {name: "\n".join(e.line for e in events if isinstance(e, StageLog) and e.stage == name) for name in finished}
    return {n: e.status.value for n, e in finished.items()}, finished, logs


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(containers, "POLL_SECONDS", 0.001)
    monkeypatch.setattr(upgrade, "REBOOT_GRACE", 0.001)


# --- the dry-run plan -------------------------------------------------------------------------

async def test_dry_run_prints_every_command_in_order_and_changes_nothing() -> None:
    remote = RecordingRemote()
    statuses, _, logs = await run_stages(remote, dry_run=True)
    assert statuses == {
        "upgrade.preflight": "planned", "upgrade.backup": "planned", "upgrade.packages": "planned",
        "upgrade.reboot": "skipped", "upgrade.images": "planned", "upgrade.prune": "planned",
    }
    commands = remote.commands
    expected_in_order = [
        "sudo test -f /opt/matrix/synapse/docker-compose.yml",
        "sudo docker compose -f /opt/matrix/synapse/docker-compose.yml config --format json",
        "sudo docker inspect --format",
        "sudo docker compose -f /opt/matrix/synapse/docker-compose.yml pull --quiet",
        "apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=600 update",
        "apt list --upgradable",
        "apt-mark showhold",
        "-s --with-new-pkgs upgrade",
        "caddy version",
        "write /opt/matrix/bin/matrix-backup",
        "write /opt/matrix/bin/matrix-restore",
        "sudo /opt/matrix/bin/matrix-backup",
        "-o DPkg::Lock::Timeout=600 --with-new-pkgs upgrade",
        "test -f /var/run/reboot-required",
        "sudo docker compose -f /opt/matrix/synapse/docker-compose.yml up -d --remove-orphans",
        "curl -fsS -m 10 http://127.0.0.1:8008/_synapse/admin/v1/server_version",
        "sudo docker image prune -f",
    ]
    at = 0
    for want in expected_in_order:
        at = next((i for i in range(at, len(commands)) if want in commands[i]), None)
        assert at is not None, f"{want!r} is missing or out of order in {commands}"
    assert any(c.startswith("sudo env DEBIAN_FRONTEND=noninteractive ") for c in commands)
    # A readable plan: the summary and the old -> new line appear with placeholders.
    assert "What the upgrade will change, as a dry run assumes it" in logs["upgrade.preflight"]
    assert "Synapse OLD-VERSION -> NEW-VERSION" in logs["upgrade.images"]
    assert 'reboot = "ask" and nobody to ask' in logs["upgrade.reboot"]


async def test_dry_run_with_reboot_yes_shows_the_reboot_and_the_wait() -> None:
    remote = RecordingRemote()
    answers = Answers().replace("ssh", host="203.0.113.7").replace("upgrade", reboot="yes")
    statuses, _, _ = await run_stages(remote, answers, dry_run=True)
    assert statuses["upgrade.reboot"] == "planned"
    assert any(c.startswith("sudo systemd-run ") and c.endswith("systemctl reboot") for c in remote.commands)
    assert any("boot_id" in c for c in remote.commands)
    assert f"sudo touch {upgrade.REBOOT_MARKER}" in remote.commands


# --- the stages against a scripted host -------------------------------------------------------

MUTATING = r"matrix-backup$|apt-get -y|up -d|docker tag|systemd-run|prune|image rm"


async def test_no_deployment_stops_before_anything_changes() -> None:
    host = FakeHost()
    host.deployed = False
    statuses, finished, _ = await run_stages(host)
    assert statuses["upgrade.preflight"] == "failed"
    assert finished["upgrade.preflight"].error == (
        "nothing to upgrade: no deployment found at /opt/matrix/synapse on 203.0.113.7; run the install first"
    )
    assert all(statuses[n] == "skipped" for n in statuses if n != "upgrade.preflight")
    assert not host.ran(MUTATING) and not host.ran("pull")


async def test_a_stopped_container_stops_the_upgrade() -> None:
    host = FakeHost()
    host.container = {"status": "exited", "image": OLD, "restarts": 0}
    statuses, finished, _ = await run_stages(host)
    assert statuses["upgrade.preflight"] == "failed"
    assert "is exited, not running" in finished["upgrade.preflight"].error
    assert "docker logs synapse" in finished["upgrade.preflight"].hint
    assert not host.ran(MUTATING)


async def test_upgrade_backs_up_first_then_upgrades_and_prunes() -> None:
    host = FakeHost()
    statuses, _, logs = await run_stages(host)
    assert statuses == {
        "upgrade.preflight": "done", "upgrade.backup": "done", "upgrade.packages": "done",
        "upgrade.reboot": "skipped", "upgrade.images": "done", "upgrade.prune": "done",
    }
    backup_at = host.commands.index(upgrade.BACKUP_SCRIPT)
    assert all(host.commands.index(c) > backup_at for c in host.ran(r"apt-get -y|up -d|prune"))
    assert "openssl 3.0.13-0ubuntu3.4 -> 3.0.13-0ubuntu3.5" in logs["upgrade.preflight"]
    assert "Caddy: 2.8.4" in logs["upgrade.preflight"]
    assert f"-> new image sha256:{'2' * 12}" in logs["upgrade.preflight"]
    assert f"backup: {BACKUP} (120.6 KiB, mode 0600, owner root)" in logs["upgrade.backup"]
    assert "Synapse 1.162.0 -> 1.163.2" in logs["upgrade.images"]
    assert "reclaimed 381.5 MiB" in logs["upgrade.prune"]
    assert host.container == {"status": "running", "image": NEW, "restarts": 0}
    # Pulled once, by the pre-flight.
    assert len(host.ran(" pull ")) == 1


async def test_nothing_new_means_every_stage_unchanged() -> None:
    host = FakeHost()
    host.tags[TAG] = OLD
    host.apt_list = host.apt_sim = ""
    host.dangling = ""
    statuses, _, logs = await run_stages(host)
    assert statuses == {
        "upgrade.preflight": "unchanged", "upgrade.backup": "unchanged", "upgrade.packages": "unchanged",
        "upgrade.reboot": "skipped", "upgrade.images": "unchanged", "upgrade.prune": "unchanged",
    }
    assert "Nothing to upgrade." in logs["upgrade.preflight"]
    assert not host.ran(MUTATING)


async def test_held_packages_are_shown_and_left_alone() -> None:
    host = FakeHost()
    host.tags[TAG] = OLD
    host.apt_list += "docker.io/noble-updates 26.1.3 amd64 [upgradable from: 24.0.7]\n"
    host.held = "docker.io\n"
    host.apt_sim = ""  # apt-get upgrade leaves held packages out
    statuses, _, logs = await run_stages(host)
    assert "held (left as they are): docker.io" in logs["upgrade.preflight"]
    assert "kept back (a full-upgrade would remove packages for them): openssl" in logs["upgrade.preflight"]
    assert statuses["upgrade.packages"] == "unchanged"
    assert not host.ran("apt-get -y")


async def test_a_failed_pull_uses_the_image_on_the_host_and_says_so() -> None:
    host = FakeHost()
    host.pull_ok = False
    statuses, _, logs = await run_stages(host)
    assert statuses["upgrade.images"] == "done"
    assert "could not pull the newest image" in logs["upgrade.preflight"]


async def test_an_unhealthy_new_image_is_rolled_back_and_the_stage_fails_saying_so() -> None:
    host = FakeHost()
    host.broken.add(NEW)
    statuses, finished, logs = await run_stages(host)
    assert statuses["upgrade.images"] == "failed"
    assert statuses["upgrade.prune"] == "skipped"
    error = finished["upgrade.images"].error
    assert error == (f"Synapse image sha256:{'2' * 12} did not come up healthy (the container restarted 2 time(s)); "
                     f"rolled back to Synapse 1.162.0 (sha256:{'1' * 12}), which is running and healthy")
    assert "rerun the upgrade when a fixed image is published" in finished["upgrade.images"].hint
    assert host.ran(rf"^docker tag {OLD} {re.escape(TAG)}$")
    assert host.ran("up -d --force-recreate synapse")
    assert host.container == {"status": "running", "image": OLD, "restarts": 0}
    assert "the new image is broken" in logs["upgrade.images"]


async def test_when_the_rollback_fails_too_the_hint_is_the_backup() -> None:
    host = FakeHost()
    host.broken.add(NEW)
    host.rollback_breaks = True
    statuses, finished, _ = await run_stages(host)
    assert statuses["upgrade.images"] == "failed"
    assert "the rollback to 1.162.0 did not either" in finished["upgrade.images"].error
    assert finished["upgrade.images"].hint == f"restore the backup: sudo {upgrade.RESTORE_SCRIPT} {BACKUP}"


# --- reboot -----------------------------------------------------------------------------------

def needs_reboot() -> FakeHost:
    host = FakeHost()
    host.reboot_required = True
    return host


async def test_reboot_yes_reboots_and_waits_through_the_dropped_connection() -> None:
    host = needs_reboot()
    answers = Answers().replace("ssh", host="203.0.113.7").replace("upgrade", reboot="yes")
    statuses, _, logs = await run_stages(host, answers)
    assert statuses["upgrade.reboot"] == "done"
    assert host.ran("^systemd-run ") and host.down_polls == 0
    assert "the OS asks for a reboot (for linux-image-6.8.0-50-generic)" in logs["upgrade.reboot"]
    assert "the host is back up" in logs["upgrade.reboot"]
    # The reboot comes after the packages and before Synapse is recreated.
    order = [host.commands.index(host.ran(p)[0]) for p in ("[^s] --with-new-pkgs upgrade$", "^systemd-run", "up -d")]
    assert order == sorted(order)


async def test_a_reboot_is_seen_by_the_marker_when_the_boot_id_stays() -> None:
    host = needs_reboot()
    host.new_boot_id = False
    answers = Answers().replace("ssh", host="203.0.113.7").replace("upgrade", reboot="yes")
    statuses, _, logs = await run_stages(host, answers)
    assert statuses["upgrade.reboot"] == "done" and "the host is back up" in logs["upgrade.reboot"]


async def test_reboot_no_and_headless_ask_skip_with_a_log_line() -> None:
    for choice, said in (("no", 'not rebooting (reboot later with `sudo reboot`): reboot = "no"'), ("ask", "nobody to ask in a headless run")):
        host = needs_reboot()
        answers = Answers().replace("ssh", host="203.0.113.7").replace("upgrade", reboot=choice)
        statuses, _, logs = await run_stages(host, answers)
        assert statuses["upgrade.reboot"] == "skipped"
        assert said in logs["upgrade.reboot"]
        assert not host.ran("systemd-run")


async def test_reboot_ask_in_the_guided_mode_uses_the_answer() -> None:
    questions: list[str] = []

    def asker(reply: bool):
        async def ask(question: str) -> bool:
            questions.append(question)
            return reply
        return ask

    host = needs_reboot()
    statuses, _, _ = await run_stages(host, ask=asker(True))
    assert statuses["upgrade.reboot"] == "done" and host.ran("systemd-run")
    assert questions == ["The OS asks for a reboot (kernel update). Reboot now?"]
    host = needs_reboot()
    statuses, _, logs = await run_stages(host, ask=asker(False))
    assert statuses["upgrade.reboot"] == "skipped" and "declined" in logs["upgrade.reboot"]
    # A dry run asks nothing: the plan says what a real run would ask.
    questions.clear()
    statuses, _, logs = await run_stages(RecordingRemote(), dry_run=True, ask=asker(False))
    assert questions == [] and 'a real run asks "The OS asks for a reboot' in logs["upgrade.reboot"]


async def test_no_reboot_required_is_skipped() -> None:
    host = FakeHost()
    answers = Answers().replace("ssh", host="203.0.113.7").replace("upgrade", reboot="yes")
    statuses, _, logs = await run_stages(host, answers)
    assert statuses["upgrade.reboot"] == "skipped" and "no reboot required" in logs["upgrade.reboot"]


async def test_a_host_that_does_not_come_back_fails_with_a_deadline(monkeypatch) -> None:
    monkeypatch.setattr(upgrade, "REBOOT_TIMEOUT", 0.05)
    host = needs_reboot()
    host.respond_original = host.respond

    def never_back(command: str) -> CommandResult:
        if command == upgrade.BOOT_STATE and host.ran("^systemd-run"):
            raise ConnectionLost("connection refused")
        return host.respond_original(command)

    host.respond = never_back
    answers = Answers().replace("ssh", host="203.0.113.7").replace("upgrade", reboot="yes")
    statuses, finished, _ = await run_stages(host, answers)
    assert statuses["upgrade.reboot"] == "failed"
    assert "did not come back" in finished["upgrade.reboot"].error
    assert statuses["upgrade.images"] == "skipped"
