"""Upgrade mode: find the deployment, show what will change, back up, then upgrade.

`preflight` changes nothing but the local image cache (it pulls, to compare digests); when it
fails the engine skips every later stage, so nothing is upgraded. What it finds rides along in
`ctx.session.shared` for the later stages. A rerun with nothing new reports each stage
`unchanged` (the reboot `skipped`).

The dry-run prints the commands of the path that changes things: the recording back-end answers
every command with its `dry_output`, and the stages do not stop at "nothing to do" in a dry run.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from installer.engine import StageContext, StageError
from installer.events import Status
from installer.remote import CommandResult

DEPLOY_DIR = "/opt/matrix/synapse"
COMPOSE_FILE = f"{DEPLOY_DIR}/docker-compose.yml"
BACKUP_DIR = "/opt/matrix/backups"
BACKUP_SCRIPT = "/opt/matrix/bin/matrix-backup"
RESTORE_SCRIPT = "/opt/matrix/bin/matrix-restore"
CONTAINER = "synapse"
SERVICE = "synapse"
REBOOT_REQUIRED = "/var/run/reboot-required"
HEALTH_URL = "http://localhost:8008/health"
VERSION_URLS = (
    "http://localhost:8008/_synapse/admin/v1/server_version",
    "http://localhost:8008/_matrix/federation/v1/version",
)
VERSION_LABEL = "org.opencontainers.image.version"

COMPOSE = f"docker compose -f {COMPOSE_FILE}"
APT_ENV = "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a"
# Keep the admin's edited config files, wait for a running unattended-upgrades instead of failing.
APT_OPTIONS = (
    "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=300"
)
CONTAINER_FORMAT = (
    "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} "
    "{{.RestartCount}} {{.Image}} {{.Config.Image}}"
)
# JSON for the lists: Go's `join` fails on them in some Docker versions ("expected []string").
IMAGE_FORMAT = "{{.Id}} {{.Size}} {{json .RepoDigests}} {{json .Config.Labels}}"

FINDINGS_KEY = "upgrade.findings"
NEW_IMAGE_KEY = "upgrade.new_image"
PREVIOUS_IMAGE_KEY = "upgrade.previous_image"
ASK_KEY = "ask"

HEALTH_TIMEOUT = 300.0
"""Seconds for Synapse to answer /health after a recreate: a new version may migrate the database first."""
REBOOT_TIMEOUT = 600.0
POLL_SECONDS = 2.0
REBOOT_GRACE = 5.0
"""Seconds between asking for the reboot and the first look: the host is still going down."""


# --- what the host says, parsed ---------------------------------------------------------------

@dataclass(frozen=True)
class PackageUpgrade:
    name: str
    new_version: str
    old_version: str
    origin: str = ""

    def __str__(self) -> str:
        return f"{self.name} {self.old_version} -> {self.new_version}"


_APT_LINE = re.compile(r"^(?P<name>[^/\s]+)/(?P<origin>\S+)\s+(?P<new>\S+)\s+\S+\s+\[upgradable from:\s*(?P<old>[^\]]+)\]")


def parse_apt_upgradable(text: str) -> list[PackageUpgrade]:
    """`apt list --upgradable` lines such as
    `openssl/noble-updates 3.0.13-0ubuntu3.5 amd64 [upgradable from: 3.0.13-0ubuntu3.4]`."""
    packages = []
    for line in text.splitlines():
        if match := _APT_LINE.match(line.strip()):
            packages.append(PackageUpgrade(match["name"], match["new"], match["old"].strip(), match["origin"]))
    return packages


_APT_INST = re.compile(r"^Inst (?P<name>\S+) (?:\[(?P<old>[^\]]+)\] )?\((?P<new>\S+) (?P<origin>[^\[]*?)\s*(?:\[[^\]]*\])?\)")


def parse_apt_simulation(text: str) -> list[PackageUpgrade]:
    """`apt-get -s upgrade` lines: `Inst openssl [3.0.13-0ubuntu3.4] (3.0.13-0ubuntu3.5 Ubuntu:24.04/noble-updates [amd64])`;
    a package installed new (a kernel) has no `[old]`."""
    packages = []
    for line in text.splitlines():
        if match := _APT_INST.match(line.strip()):
            packages.append(PackageUpgrade(match["name"], match["new"], match["old"] or "(new)", match["origin"].strip()))
    return packages


def parse_held(text: str) -> list[str]:
    """`apt-mark showhold`: one package name a line."""
    return [line.strip() for line in text.splitlines() if re.fullmatch(r"[a-z0-9][a-z0-9+.:-]*", line.strip())]


@dataclass(frozen=True)
class AptSummary:
    upgraded: int
    newly_installed: int
    removed: int
    not_upgraded: int

    @property
    def changed(self) -> bool:
        return bool(self.upgraded or self.newly_installed or self.removed)


_APT_SUMMARY = re.compile(
    r"(\d+) upgraded, (\d+) newly installed, (\d+) to remove and (\d+) not upgraded"
)


def parse_apt_summary(text: str) -> AptSummary | None:
    """apt-get's "N upgraded, N newly installed, N to remove and N not upgraded." line."""
    match = _APT_SUMMARY.search(text)
    return AptSummary(*(int(g) for g in match.groups())) if match else None


def parse_server_version(text: str) -> str | None:
    """Synapse's version from the admin API (`{"server_version": "1.163.2"}`) or the federation
    API (`{"server": {"name": "Synapse", "version": "1.163.2"}}`)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    version = data.get("server_version")
    if version is None and isinstance(data.get("server"), dict):
        version = data["server"].get("version")
    return str(version).split(" ", 1)[0] if version else None


@dataclass(frozen=True)
class ContainerInfo:
    status: str
    health: str
    restarts: int
    image_id: str
    image_ref: str

    @property
    def running(self) -> bool:
        return self.status == "running"


def parse_container(text: str) -> ContainerInfo | None:
    """One line of CONTAINER_FORMAT: status, health, restart count, image ID, image reference."""
    parts = text.strip().splitlines()[-1].split() if text.strip() else []
    if len(parts) != 5 or not parts[2].isdigit():
        return None
    return ContainerInfo(parts[0], parts[1], int(parts[2]), parts[3], parts[4])


@dataclass(frozen=True)
class ImageInfo:
    id: str
    digests: tuple[str, ...] = ()
    version: str = ""
    size: int = 0

    @property
    def digest(self) -> str:
        """The registry digest (`sha256:...`) when the image came from a registry, else ''."""
        return self.digests[0].split("@", 1)[1] if self.digests and "@" in self.digests[0] else ""

    def describe(self) -> str:
        what = f"image {short_id(self.id)}"
        if self.digest:
            what += f", digest {short_id(self.digest)}"
        return what


def parse_image(text: str) -> ImageInfo | None:
    """One line of IMAGE_FORMAT: ID, size, repo digests (JSON), labels (JSON)."""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    parts = line.split(" ", 2)
    if len(parts) != 3 or not parts[0].startswith("sha256:") or not parts[1].isdigit():
        return None
    decoder = json.JSONDecoder()
    try:
        digests, end = decoder.raw_decode(parts[2])
        labels, _ = decoder.raw_decode(parts[2][end:].lstrip())
    except ValueError:
        return None
    digests = tuple(d for d in digests or () if isinstance(d, str))
    version = (labels or {}).get(VERSION_LABEL, "") if isinstance(labels, dict) else ""
    return ImageInfo(parts[0], digests, str(version), int(parts[1]))


def parse_caddy_version(text: str) -> str | None:
    """`caddy version`: "v2.8.4 h1:..." (vendor) or "2.6.2" (Debian)."""
    match = re.search(r"\bv?(\d+\.\d+\.\d+\S*)", text)
    return match.group(1) if match else None


def short_id(image_id: str) -> str:
    """`sha256:0123456789ab...` as Docker shows it: the first 12 hex digits."""
    algorithm, _, digest = image_id.partition(":")
    return f"{algorithm}:{digest[:12]}" if digest else image_id[:12]


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKMGT]?i?B)")
_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
          "KiB": 1024, "kiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def parse_reclaimed(text: str) -> int:
    """Bytes from `docker image prune`'s "Total reclaimed space: 1.2GB" (Docker's sizes are decimal)."""
    match = re.search(r"Total reclaimed space:\s*" + _SIZE.pattern, text)
    if not match:
        return 0
    return int(float(match.group(1)) * _UNITS.get(match.group(2), 1))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@dataclass(frozen=True)
class BackupResult:
    path: str
    size: int
    removed: tuple[str, ...] = ()


def parse_backup_output(text: str) -> BackupResult | None:
    """The backup script's "backup PATH BYTES" and "removed PATH" lines."""
    path, size, removed = "", 0, []
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "backup" and rest:
            path, _, number = rest.rpartition(" ")
            size = int(number) if number.isdigit() else 0
        elif word == "removed" and rest:
            removed.append(rest)
    return BackupResult(path, size, tuple(removed)) if path else None


# --- what preflight found -----------------------------------------------------------------------

@dataclass
class Findings:
    image_ref: str
    container: ContainerInfo
    running_image: ImageInfo
    tag_image: ImageInfo
    running_version: str
    packages: list[PackageUpgrade] = field(default_factory=list)
    """What `apt-get upgrade` will install (simulated): held packages are not among them."""
    upgradable: list[PackageUpgrade] = field(default_factory=list)
    """Everything `apt list --upgradable` lists, held or kept back included."""
    held: list[str] = field(default_factory=list)
    caddy_version: str = ""
    reboot_pending: bool = False
    pulled: bool = False

    @property
    def new_image(self) -> bool:
        return self.tag_image.id != self.container.image_id

    @property
    def kept_back(self) -> list[str]:
        """Upgradable but left alone: held, or needing a package removed (a full-upgrade's job)."""
        planned = {p.name for p in self.packages}
        return [p.name for p in self.upgradable if p.name not in planned]

    @property
    def anything_to_upgrade(self) -> bool:
        return self.new_image or bool(self.packages)


def _findings(ctx: StageContext) -> Findings:
    found = ctx.session.shared.get(FINDINGS_KEY)
    if not isinstance(found, Findings):
        raise StageError("the upgrade pre-flight did not run", "rerun the upgrade: upgrade.preflight runs first")
    return found


# --- small helpers on the host ------------------------------------------------------------------

def _discard(line: str, kind: str) -> None:
    """For repeated polls: the first one is shown, the rest would only fill the log."""


async def _poll(ctx: StageContext, command: str, *, first: bool, sudo: bool = True, dry_output: str = "") -> CommandResult:
    if first:
        return await ctx.run(command, sudo=sudo, check=False, dry_output=dry_output)
    return await ctx.remote.run(command, log=_discard, sudo=sudo, check=False, timeout=60, dry_output=dry_output)


async def _container(ctx: StageContext, *, first: bool = True, dry_output: str = "") -> ContainerInfo | None:
    command = f"docker inspect --format {shlex.quote(CONTAINER_FORMAT)} {CONTAINER}"
    result = await _poll(ctx, command, first=first,
                         dry_output=dry_output or "running healthy 0 sha256:OLDIMAGE matrixdotorg/synapse:latest")
    return parse_container(result.stdout) if result.ok else None


async def _image(ctx: StageContext, ref: str, *, dry_output: str) -> ImageInfo | None:
    result = await ctx.run(f"docker image inspect --format {shlex.quote(IMAGE_FORMAT)} {shlex.quote(ref)}",
                           sudo=True, check=False, dry_output=dry_output)
    return parse_image(result.stdout) if result.ok else None


async def _running_version(ctx: StageContext, *, dry_output: str) -> str:
    """The version Synapse itself reports (the admin API, else the federation API)."""
    command = " || ".join(f"curl -fsS -m 10 {url}" for url in VERSION_URLS)
    result = await ctx.run(command, check=False, dry_output=dry_output)
    return parse_server_version(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "") or "unknown"


async def _image_ref(ctx: StageContext) -> str:
    """The image the compose file names: what `docker compose up` will run."""
    result = await ctx.run(f"{COMPOSE} config --images", sudo=True, check=False,
                           dry_output=ctx.answers.synapse.image)
    refs = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not result.ok or not refs:
        raise StageError(f"{COMPOSE_FILE} cannot be read by docker compose", "\n".join(result.stderr.splitlines()[-3:]) or None)
    return refs[0]


async def _pull(ctx: StageContext) -> bool:
    """Pull the newest image for the tag; False (with a warning) when the registry cannot be reached."""
    ctx.progress("pulling the newest Synapse image")
    result = await ctx.run(f"{COMPOSE} pull --quiet {SERVICE}", sudo=True, check=False, timeout=900)
    if not result.ok:
        ctx.log("warning: could not pull the newest image (see above); comparing with the image already on the host")
    return result.ok


def _host(ctx: StageContext) -> str:
    return ctx.answers.ssh.host or ctx.facts.get("host.address") or ctx.answers.domain.matrix_host or "the host"


# --- the stages ---------------------------------------------------------------------------------

async def preflight(ctx: StageContext) -> Status:
    """Find the deployment and show what the upgrade will change, changing nothing."""
    host = _host(ctx)
    exists = await ctx.run(f"test -f {COMPOSE_FILE}", sudo=True, check=False)
    if not exists.ok:
        raise StageError(
            f"nothing to upgrade: no Synapse deployment found at {DEPLOY_DIR} on {host}; run the install first",
            "run matrix-installer --answers FILE (without --upgrade) to install",
        )
    container = await _container(ctx)
    if container is None:
        raise StageError(
            f"nothing to upgrade: {COMPOSE_FILE} exists on {host} but there is no `{CONTAINER}` container; run the install first",
            "run the install again: it creates and starts the container",
        )
    if not container.running:
        raise StageError(
            f"the `{CONTAINER}` container on {host} is {container.status}, not running: upgrading now would hide why",
            f"look at `sudo docker logs {CONTAINER}`, start it with `sudo {COMPOSE} up -d`, then rerun the upgrade",
        )
    image_ref = await _image_ref(ctx)
    if image_ref != ctx.answers.synapse.image:
        ctx.log(f"note: the deployment runs {image_ref}; the answers say {ctx.answers.synapse.image}. "
                "The upgrade keeps the deployment's image; rerun the install to switch.")

    running_version = await _running_version(ctx, dry_output='{"server_version": "OLD-VERSION"}')
    running_image = await _image(ctx, container.image_id, dry_output=f"{container.image_id} 0 null null") or ImageInfo(container.image_id)

    pulled = await _pull(ctx)
    tag_image = await _image(ctx, image_ref, dry_output="sha256:NEWIMAGE 0 null null")
    if tag_image is None:
        raise StageError(f"the image {image_ref} is not on the host and could not be pulled",
                         "check the host reaches the registry (docker pull), then rerun")

    ctx.progress("looking for OS package updates")
    await ctx.run(f"{APT_ENV} apt-get update -q {APT_OPTIONS}", sudo=True, timeout=600)
    upgradable = await ctx.run("apt list --upgradable", check=False)
    held = await ctx.run("apt-mark showhold", check=False)
    simulated = await ctx.run(f"{APT_ENV} apt-get -s -q --with-new-pkgs upgrade {APT_OPTIONS}", sudo=True, check=False)
    caddy = await ctx.run("caddy version", check=False, dry_output="CADDY-VERSION")
    reboot_pending = (await ctx.run(f"test -f {REBOOT_REQUIRED}", check=False)).ok and not ctx.dry_run

    found = Findings(
        image_ref=image_ref,
        container=container,
        running_image=running_image,
        tag_image=tag_image,
        running_version=running_version,
        packages=parse_apt_simulation(simulated.stdout),
        upgradable=parse_apt_upgradable(upgradable.stdout),
        held=parse_held(held.stdout),
        caddy_version=(parse_caddy_version(caddy.stdout) or caddy.stdout.strip()[:40]) if caddy.ok else "not installed",
        reboot_pending=reboot_pending,
        pulled=pulled,
    )
    ctx.session.shared[FINDINGS_KEY] = found
    ctx.session.shared[NEW_IMAGE_KEY] = found.new_image
    for line in describe_findings(found):
        ctx.log(line)
    ctx.remember("upgrade.synapse_version", running_version)
    return Status.DONE


def describe_findings(found: Findings) -> list[str]:
    """The "what will change" summary shown before anything changes."""
    lines = ["What the upgrade will change:"]
    planned = found.packages
    if planned:
        shown = ", ".join(str(p) for p in planned[:8]) + (f", and {len(planned) - 8} more" if len(planned) > 8 else "")
        lines.append(f"  OS packages: {len(planned)} to upgrade: {shown}")
    else:
        lines.append("  OS packages: all up to date")
    if found.held:
        lines.append(f"  held (left as they are): {', '.join(found.held)}")
    kept = [name for name in found.kept_back if name not in found.held]
    if kept:
        lines.append(f"  kept back (a full-upgrade would remove packages for them): {', '.join(kept)}")
    running = f"{found.running_version} ({found.image_ref}, {found.running_image.describe()})"
    if found.new_image:
        new_version = found.tag_image.version or "version known once it starts"
        lines.append(f"  Synapse: {running} -> new {found.tag_image.describe()} ({new_version})")
    else:
        lines.append(f"  Synapse: {running} is the newest image for {found.image_ref}")
    lines.append(f"  Caddy: {found.caddy_version}" + (" (upgraded with the OS packages)" if any(p.name == "caddy" for p in planned) else ""))
    if found.reboot_pending:
        lines.append("  Reboot: the OS already asks for one")
    if not found.anything_to_upgrade:
        lines.append("Nothing to upgrade.")
    return lines


async def _install_script(ctx: StageContext, path: str, template: str) -> None:
    from installer.render import render

    text = render(template, deploy_dir=DEPLOY_DIR, backup_dir=BACKUP_DIR, keep=ctx.answers.upgrade.keep_backups,
                  container=CONTAINER, backup_script=BACKUP_SCRIPT, restore_script=RESTORE_SCRIPT)
    await ctx.put_file(path, text.encode(), mode=0o700, owner="root:root", backup=False)


async def backup(ctx: StageContext) -> Status:
    """A timestamped, restorable archive of data/ and the compose file, the newest N kept."""
    found = _findings(ctx)
    if not found.anything_to_upgrade and not ctx.dry_run:
        ctx.log("nothing will change, so no new backup is needed")
        return Status.UNCHANGED
    await _install_script(ctx, BACKUP_SCRIPT, "backup.sh.j2")
    await _install_script(ctx, RESTORE_SCRIPT, "restore.sh.j2")
    ctx.progress("archiving Synapse's data")
    result = await ctx.run(BACKUP_SCRIPT, sudo=True, timeout=3600,
                           dry_output=f"backup {BACKUP_DIR}/synapse-YYYYmmddTHHMMSSZ.tar.gz 0")
    made = parse_backup_output(result.stdout)
    if made is None:
        raise StageError("the backup script did not report an archive", "see its output above")
    ctx.session.shared["upgrade.backup"] = made.path
    ctx.remember("upgrade.last_backup", made.path)
    ctx.log(f"backup: {made.path} ({human_size(made.size)}, mode 0600, owner root)")
    for old in made.removed:
        ctx.log(f"removed an older backup (keeping {ctx.answers.upgrade.keep_backups}): {old}")
    ctx.log(f"to restore it: sudo {RESTORE_SCRIPT} {made.path}")
    return Status.DONE


async def upgrade_packages(ctx: StageContext) -> Status:
    """apt-get upgrade, non-interactive, keeping edited config files; held packages stay."""
    found = _findings(ctx)
    if not found.packages and not ctx.dry_run:
        ctx.log("no OS package to upgrade" + (f" (held: {', '.join(found.held)})" if found.held else ""))
        return Status.UNCHANGED
    ctx.progress("upgrading OS packages")
    # preflight ran `apt-get update` moments ago in this same run.
    result = await ctx.run(f"{APT_ENV} apt-get -y -q --with-new-pkgs upgrade {APT_OPTIONS}", sudo=True, timeout=3600)
    summary = parse_apt_summary(result.stdout)
    if summary is None:
        return Status.DONE
    ctx.log(f"{summary.upgraded} upgraded, {summary.newly_installed} newly installed, {summary.not_upgraded} not upgraded")
    return Status.DONE if summary.changed else Status.UNCHANGED


AskFn = Callable[[str], Awaitable[bool]]
REBOOT_QUESTION = "The OS asks for a reboot (kernel update). Reboot now?"


REBOOT_MARKER = "/run/matrix-installer.reboot-pending"
"""Made just before the reboot; /run is a tmpfs, so it is gone once the host has rebooted (a
container host keeps its kernel's boot ID, so the boot ID alone would not tell)."""
BOOT_STATE = f"cat /proc/sys/kernel/random/boot_id; test -e {REBOOT_MARKER} && echo pending || true"


async def _boot_state(ctx: StageContext, *, first: bool) -> tuple[str, bool] | None:
    """(boot ID, whether the marker is still there), or None while the host does not answer."""
    try:
        result = await _poll(ctx, BOOT_STATE, first=first, sudo=False, dry_output="BOOT-ID")
    except Exception:  # the connection is down while the host reboots: keep polling
        return None
    lines = result.stdout.split()
    return (lines[0], "pending" in lines[1:]) if result.ok and lines else None


async def reboot_if_required(ctx: StageContext) -> Status:
    """Reboot when the OS asks for it (with consent), then wait for SSH to come back."""
    required = await ctx.probe(f"test -f {REBOOT_REQUIRED}")
    if not required and not ctx.dry_run:
        ctx.log("no reboot required")
        return Status.SKIPPED
    if ctx.dry_run:
        ctx.log(f"if {REBOOT_REQUIRED} exists, reboot = \"{ctx.answers.upgrade.reboot}\" in the answers decides:")
    else:
        why = await ctx.run(f"cat {REBOOT_REQUIRED}.pkgs", check=False)
        packages = " ".join(why.stdout.split())
        ctx.log("the OS asks for a reboot" + (f" (for {packages})" if packages else ""))

    choice = ctx.answers.upgrade.reboot
    if choice == "no":
        ctx.log('not rebooting: answers say reboot = "no"; reboot later with `sudo reboot`')
        return Status.SKIPPED
    if choice == "ask":
        ask: AskFn | None = ctx.session.shared.get(ASK_KEY)
        if ask is None:
            ctx.log('not rebooting: reboot = "ask" and nobody to ask in a headless run; reboot later with `sudo reboot`')
            return Status.SKIPPED
        if ctx.dry_run:  # nothing to decide in a plan: say what a real run asks
            ctx.log(f'reboot = "ask": a real run asks "{REBOOT_QUESTION}"; yes reboots as below')
        elif not await ask(REBOOT_QUESTION):
            ctx.log("not rebooting: declined; reboot later with `sudo reboot`")
            return Status.SKIPPED

    before = await _boot_state(ctx, first=True)
    await ctx.run(f"touch {REBOOT_MARKER}", sudo=True)
    # systemd-run lets this command return before the reboot cuts the connection.
    await ctx.run("systemd-run --no-block --on-active=2 --timer-property=AccuracySec=100ms /bin/systemctl reboot", sudo=True)
    ctx.log("rebooting; waiting for the host to come back")
    await ctx.sleep(REBOOT_GRACE)
    deadline = time.monotonic() + REBOOT_TIMEOUT
    while True:
        now = await _boot_state(ctx, first=False)
        if now is not None and (ctx.dry_run or not now[1] or (before is not None and now[0] != before[0])):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise StageError(
                f"the host did not come back within {REBOOT_TIMEOUT / 60:.0f} minutes of the reboot",
                "check it in the cloud console (serial console), then rerun the upgrade",
            )
        ctx.progress(f"waiting for SSH after the reboot: {left:.0f} s left", 1 - left / REBOOT_TIMEOUT)
        await ctx.sleep(POLL_SECONDS * 2)
    ctx.log("the host is back up")
    ctx.session.shared["upgrade.rebooted"] = True
    healthy, why = await wait_healthy(ctx, None, timeout=HEALTH_TIMEOUT)
    if not healthy:
        raise StageError(f"Synapse is not healthy after the reboot: {why}",
                         f"look at `sudo docker logs {CONTAINER}`; start it with `sudo {COMPOSE} up -d`")
    return Status.DONE


async def wait_healthy(ctx: StageContext, image_id: str | None, *, timeout: float = HEALTH_TIMEOUT) -> tuple[bool, str]:
    """Wait until the container runs `image_id` (any image when None) and answers /health.

    Returns (healthy, why not). A restart, an exit or Docker's "unhealthy" fail at once: a
    Synapse that crashed once after an upgrade is not one to keep."""
    deadline = time.monotonic() + timeout
    first = True
    why = "it did not start"
    while True:
        info = await _container(ctx, first=first)
        if info is None:
            why = "the container does not exist"
        elif image_id is not None and info.image_id != image_id and not ctx.dry_run:
            why = f"the container runs {short_id(info.image_id)}, not {short_id(image_id)}"
        elif info.status in ("exited", "dead") or info.restarts > 0 or info.health == "unhealthy":
            detail = f"restarted {info.restarts} time(s)" if info.restarts else info.health if info.health == "unhealthy" else info.status
            return False, f"the container {detail}"
        elif info.running:
            health = await _poll(ctx, f"curl -fsS -m 5 {HEALTH_URL}", first=first, sudo=False, dry_output="OK")
            if info.health == "healthy" or (health.ok and health.stdout.strip() == "OK"):
                return True, ""
            why = f"it does not answer {HEALTH_URL} yet (Docker health: {info.health})"
        else:
            why = f"the container is {info.status}"
        first = False
        left = deadline - time.monotonic()
        if left <= 0:
            return False, f"not healthy within {timeout:.0f} s: {why}"
        ctx.progress(f"waiting for Synapse to be healthy: {left:.0f} s left", 1 - left / timeout)
        await ctx.sleep(POLL_SECONDS)


async def _recreate(ctx: StageContext, *, force: bool = False) -> None:
    await ctx.run(f"{COMPOSE} up -d --remove-orphans" + (" --force-recreate" if force else ""), sudo=True, timeout=600)


async def _container_logs(ctx: StageContext) -> None:
    ctx.log("the last lines of Synapse's log:")
    await ctx.run(f"docker logs --tail 20 {CONTAINER}", sudo=True, check=False)


async def upgrade_synapse(ctx: StageContext) -> Status:
    """Recreate Synapse on the newest image; roll back to the previous one if it is not healthy."""
    found = _findings(ctx)  # the pre-flight pulled (or tried to) moments ago in this run
    if not found.new_image and not ctx.dry_run:
        ctx.log(f"Synapse {found.running_version} already runs the newest image for {found.image_ref} ({short_id(found.tag_image.id)})")
        return Status.UNCHANGED

    previous = found.container.image_id
    ctx.session.shared[PREVIOUS_IMAGE_KEY] = previous
    ctx.session.shared["upgrade.previous_size"] = found.running_image.size
    ctx.remember("upgrade.previous_image", previous)
    ctx.progress("recreating Synapse on the new image")
    await _recreate(ctx)
    healthy, why = await wait_healthy(ctx, found.tag_image.id)
    if healthy:
        new_version = await _running_version(ctx, dry_output='{"server_version": "NEW-VERSION"}')
        ctx.log(f"Synapse {found.running_version} -> {new_version} ({short_id(previous)} -> {short_id(found.tag_image.id)})")
        ctx.remember("upgrade.synapse_version", new_version)
        return Status.DONE

    failed_version = (f"{found.tag_image.version} (image {short_id(found.tag_image.id)})" if found.tag_image.version
                      else f"image {short_id(found.tag_image.id)}")
    previous_name = found.running_version if found.running_version != "unknown" else f"image {short_id(previous)}"
    ctx.log(f"the new image is not healthy ({why}); rolling back to Synapse {previous_name}")
    await _container_logs(ctx)
    # Point the tag back at the previous image (still on the host: nothing pruned it) and recreate.
    await ctx.run(f"docker tag {shlex.quote(previous)} {shlex.quote(found.image_ref)}", sudo=True)
    await _recreate(ctx, force=True)
    back, why_not = await wait_healthy(ctx, previous)
    backup_path = ctx.session.shared.get("upgrade.backup", f"{BACKUP_DIR}/ (the newest synapse-*.tar.gz)")
    if not back:
        raise StageError(
            f"Synapse {failed_version} did not come up healthy ({why}), and the rollback to "
            f"{previous_name} did not either ({why_not})",
            f"restore the backup: sudo {RESTORE_SCRIPT} {backup_path}",
        )
    raise StageError(
        f"Synapse {failed_version} did not come up healthy ({why}); rolled back to Synapse "
        f"{found.running_version} ({short_id(previous)}), which is running and healthy",
        "see the failed container's log above; rerun the upgrade when a fixed image is published",
    )


async def prune_images(ctx: StageContext) -> Status:
    """Remove images nothing uses any more (the previous Synapse image among them)."""
    listed = await ctx.run("docker image ls --filter dangling=true --format '{{.ID}} {{.Repository}} {{.Size}}'",
                           sudo=True, dry_output="0123456789ab matrixdotorg/synapse 400MB")
    dangling = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    previous = ctx.session.shared.get(PREVIOUS_IMAGE_KEY)
    if not dangling and not previous:
        ctx.log("no old images to remove")
        return Status.UNCHANGED
    result = await ctx.run("docker image prune -f", sudo=True, dry_output="Total reclaimed space: 0B")
    reclaimed = parse_reclaimed(result.stdout)
    if previous and not ctx.dry_run:
        # Once the tag moved, the previous Synapse image is dangling and went with the prune; if it
        # still carries another tag (a version pulled by hand), someone asked for it by name.
        if await _image(ctx, previous, dry_output="") is not None:
            ctx.log(f"kept the previous Synapse image {short_id(previous)}: it still has a tag")
        elif previous_size := ctx.session.shared.get("upgrade.previous_size", 0):
            ctx.log(f"removed the previous Synapse image {short_id(previous)} ({human_size(previous_size)})")
    if not dangling and not ctx.dry_run:
        ctx.log("no old images to remove")
        return Status.UNCHANGED
    if ctx.dry_run:
        ctx.log("unused images would be removed; a real run reports the space reclaimed")
    else:
        ctx.log(f"removed {len(dangling)} unused image(s); reclaimed {human_size(reclaimed)}")
    return Status.DONE
