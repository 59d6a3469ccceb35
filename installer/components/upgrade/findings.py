"""What an upgrade finds on the host before it changes anything, parsed from what the host says:
apt's plans, the services' running and newest images, the homeserver's version."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from installer.host.containers import ContainerInfo, ImageInfo


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


def parse_caddy_version(text: str) -> str | None:
    """`caddy version`: "v2.8.4 h1:..." (vendor) or "2.6.2" (Debian)."""
    match = re.search(r"\bv?(\d+\.\d+\.\d+\S*)", text)
    return match.group(1) if match else None


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


@dataclass(frozen=True)
class ServiceImages:
    """One compose service: what it runs now, and what its image reference names after the pull."""

    service: str
    image_ref: str
    container: ContainerInfo
    running: ImageInfo
    newest: ImageInfo

    @property
    def new_image(self) -> bool:
        return self.newest.id != self.container.image_id


@dataclass
class Findings:
    """What upgrade.preflight found (a stage output)."""

    services: list[ServiceImages]
    homeserver: str
    """The homeserver's compose service."""
    homeserver_version: str
    packages: list[PackageUpgrade] = field(default_factory=list)
    """What `apt-get upgrade` will install (simulated): held packages are not among them."""
    upgradable: list[PackageUpgrade] = field(default_factory=list)
    """Everything `apt list --upgradable` lists, held or kept back included."""
    held: list[str] = field(default_factory=list)
    caddy_version: str = ""
    reboot_pending: bool = False
    pulled: bool = False

    @property
    def new_images(self) -> list[ServiceImages]:
        return [s for s in self.services if s.new_image]

    @property
    def kept_back(self) -> list[str]:
        """Upgradable but left alone: held, or needing a package removed (a full-upgrade's job)."""
        planned = {p.name for p in self.packages}
        return [p.name for p in self.upgradable if p.name not in planned]

    @property
    def anything_to_upgrade(self) -> bool:
        return bool(self.new_images or self.packages)


@dataclass(frozen=True)
class BackupMade:
    """The archive upgrade.backup made this run ("" when nothing was to change, so none was made)."""

    path: str


@dataclass(frozen=True)
class ReplacedImages:
    """Images upgrade.images moved services off (id -> size), for the prune to account for."""

    sizes: dict[str, int]
