"""The contract a component fills in: one piece of the server, declared next to its code.

A component says what it adds to a deployment for given answers: its answers section (see
installer.sections), its stages, its ports, its compose services, its Caddy sites and routes,
what a backup must hold of it, and the settings it gives the homeserver. installer.deployment
merges what the enabled components declare; nothing else lists them.

Declarations stay light (no engine, SSH or SDK imports), because the guided setup draws its
forms from them before its first run: a component imports its stage bodies only in `stages`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from installer.sections import Part

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.deployment import Deployment
    from installer.engine import Stage
    from installer.options import RunOptions

Mode = Literal["install", "upgrade", "check", "backup", "restore"]
"""A run's mode. "restore" is an install whose data comes back from a backup: components are asked
for their "install" stages, plus their `restoring_stages`; "backup" takes a backup now."""


@dataclass(frozen=True)
class Port:
    """A port the world must reach: both firewalls (the host's and the cloud's) open it."""

    number: int | tuple[int, int]
    """One port, or an inclusive range (a TURN relay range)."""
    protocol: Literal["tcp", "udp"] = "tcp"
    purpose: str = field(default="", compare=False)

    @property
    def span(self) -> tuple[int, int]:
        return self.number if isinstance(self.number, tuple) else (self.number, self.number)

    def __str__(self) -> str:
        low, high = self.span
        return f"{low}-{high}/{self.protocol}" if low != high else f"{low}/{self.protocol}"


@dataclass(frozen=True)
class Service:
    """A compose service: everything goes to docker-compose.yml as data (validated, quoted)."""

    name: str
    image: str
    settings: dict[str, Any] = field(default_factory=dict)
    """The rest of the service's compose keys (volumes, ports, healthcheck, depends_on, ...)."""
    config_files: tuple[str, ...] = ()
    """Host files the service reads at start: it is restarted when one changed since it started."""
    probe: str = ""
    """A command on the host that succeeds once the service is ready (quicker than waiting for
    Docker's next health check)."""
    upgrade_after: str = ""
    """The service whose upgrade must finish before this one runs a new image (a worker reading
    the database the homeserver migrates): an upgrade leaves it stopped while it recreates the
    others, and the component that declared it starts it again."""


@dataclass(frozen=True)
class PrivatePort:
    """A compose service's port published on this host's private address, for the deployment's
    other hosts (worker hosts reaching Postgres, say); never on a public address. The component
    that declares it also keeps everyone else out (a firewall rule of its own)."""

    service: str
    port: int
    address: str


# --- Caddy ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proxy:
    """Send requests for `paths` to `upstream`; bodies larger than `max_body` get a Matrix 413."""

    paths: tuple[str, ...]
    upstream: str
    max_body: int | None = None
    """Bytes; requests declaring more (Content-Length) are answered 413 M_TOO_LARGE by Caddy."""


LB_POLICIES = ("round_robin", "least_conn", "ip_hash", "header")


@dataclass(frozen=True)
class Balance:
    """Send requests whose path matches one of `patterns` (regular expressions, as Synapse's worker
    documentation lists endpoints) to a group of upstreams: balanced by `policy`, each checked
    with an active health check (`health_uri` every `health_interval` seconds) and left out while
    it fails; a request whose upstream cannot be reached (no connection within `dial_seconds`) is
    tried on another for `try_seconds`.

    No passive health check: with one, a single failed request marks a healthy upstream down (a
    client that drops its upload, or, on Caddy 2.6, a POST retried after a dead upstream's dial
    timeout, whose body is gone by then), and with every upstream so marked Caddy answers 503
    for its whole fail duration. The active check alone decides; the lab showed both."""

    name: str
    """What the group serves, for the Caddyfile's comment ("sync")."""
    patterns: tuple[str, ...]
    upstreams: tuple[str, ...]
    """host:port each."""
    policy: str = "round_robin"
    """One of LB_POLICIES; "header" hashes `policy_header` (the same user to the same process)."""
    policy_header: str = ""
    methods: tuple[str, ...] = ()
    """Only these HTTP methods (Synapse serves some endpoints from workers for GET alone)."""
    health_uri: str = "/health"
    health_interval: int = 2
    try_seconds: int = 8
    dial_seconds: int = 1
    """The upstreams are on this host or its private network: a connection that takes longer
    means a host that is gone (its packets dropped), not a slow one (the kernel answers SYNs)."""
    max_body: int | None = None
    """As Proxy's: bytes; larger declared bodies are answered 413 M_TOO_LARGE by Caddy."""


@dataclass(frozen=True)
class Respond:
    """A fixed answer (a .well-known document, or a status alone when `body` is empty)."""

    path: str
    status: int = 200
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Redirect:
    target: str


@dataclass(frozen=True)
class Files:
    """Serve the static files under `root` (a folder on the host Caddy can read), with `headers`
    on every answer and `Cache-Control: no-cache` on the paths in `no_cache` (what must be asked
    for again after an update, such as a web app's index.html and config.json)."""

    root: str
    headers: tuple[tuple[str, str], ...] = ()
    no_cache: tuple[str, ...] = ()


Route = Proxy | Balance | Respond | Redirect | Files


@dataclass(frozen=True)
class Site:
    """One Caddy site. Routes are kept in the order given (they render inside `route { }`)."""

    address: str
    """A host name, or host:port."""
    comment: str
    routes: tuple[Route, ...] = ()
    order: int = 0
    """Where the site goes in the Caddyfile (lower first)."""

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0] if self.address.rsplit(":", 1)[-1].isdigit() else self.address


@dataclass(frozen=True)
class SiteRoutes:
    """Routes a component adds to a site another component declares (by its address)."""

    address: str
    routes: tuple[Route, ...]
    first: bool = False
    """Before the site's own routes (a .well-known answer that must win over a redirect)."""


# --- backups ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupFiles:
    """Paths under the deployment folder, archived as they are; `exclude` are live files a
    consistent copy of which another item makes (a database)."""

    paths: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    """Glob patterns (relative to the project) of files another item copies consistently."""
    required: tuple[str, ...] = ()
    """Regular expressions (relative to the project) the archive must hold, or it is refused."""


@dataclass(frozen=True)
class BackupDump:
    """A consistent copy made by a command while the server runs (sqlite's backup API,
    pg_dump), written to `name` in the archive, and how the restore puts it back."""

    name: str
    dump: str
    """Shell: writes the copy to "$out" (a path on the host); "$project" is the compose project."""
    restore: str = ""
    """Shell: puts "$dump" back once the files are in place ("$project" as above), starting what
    it needs itself."""
    note: str = ""


@dataclass(frozen=True)
class BackupSqlite:
    """Every SQLite database (*.db) in `folder`, copied with sqlite's online backup API inside the
    running `container` (mounted there at /`folder`'s mount point, /data), consistent while the
    server runs; the live files are left out of the archive's files."""

    container: str
    folder: str
    mount: str = "/data"


@dataclass(frozen=True)
class BackupTarget:
    """Where the same items go off the box: a restic repository (encrypted before it leaves the
    host). Its address, credentials and password are in root-only files on the host (`env_file`,
    which names the password file), never in the scripts; the backup script sends the items there
    when run with --offsite, and the restore script takes them back from a snapshot."""

    env_file: str
    """Host path (0600, root): RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE, the S3 credentials."""
    status_file: str
    """Host path: what the last off-box backup did (JSON), for checks and upgrade's preflight."""
    host: str
    """The snapshots' host name: the server's name, so snapshots of a moved server stay one series."""
    keep: tuple[tuple[str, int], ...] = ()
    """What `restic forget --prune` keeps: ("daily", 7), ("weekly", 4), ("monthly", 6)."""


BackupItem = BackupFiles | BackupSqlite | BackupDump | BackupTarget


# --- the component ----------------------------------------------------------------------------

class Component:
    """One piece of the server. Subclasses override what they contribute; the defaults add nothing."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    answers: ClassVar[tuple[Part, ...]] = ()

    def enabled(self, answers: Answers, mode: Mode = "install", facts: Mapping[str, Any] | None = None) -> bool:
        """Whether the deployment has it: from the answers, and in upgrade mode from what the
        state says is deployed (`facts`)."""
        return True

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        """Problems involving several keys: (path, message)."""
        return []

    def warnings(self, answers: Answers) -> list[str]:
        """Said on Review and in the plan before anything runs (a choice fit only for tests)."""
        return []

    def ports(self, d: Deployment) -> list[Port]:
        return []

    def services(self, d: Deployment) -> list[Service]:
        return []

    def private_ports(self, d: Deployment) -> list[PrivatePort]:
        """Ports of services (its own or another component's) published on a private address."""
        return []

    def sites(self, d: Deployment) -> list[Site]:
        return []

    def routes(self, d: Deployment) -> list[SiteRoutes]:
        return []

    def records(self, d: Deployment, address: str) -> list[Any]:
        """DNS records (installer.components.dns.Record) given the host's public address."""
        return []

    def backup(self, d: Deployment) -> list[BackupItem]:
        return []

    def homeserver_settings(self, d: Deployment) -> list[Any]:
        """Typed settings the homeserver applies to its own config (a database to use, say)."""
        return []

    def problems_before_run(self, answers: Answers, options: RunOptions) -> list[str]:
        """What this machine lacks for a run of these answers (a secret's environment variable),
        said before anything runs, as the provider's problems are."""
        return []

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        """This component's stages for the mode, with their bodies (imported here, not above)."""
        return []

    def restoring_stages(self, d: Deployment) -> list[Stage]:
        """What a restore adds to the install's stages: the data put back from a backup before
        the homeserver first starts."""
        return []

    def joining_stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        """Stages that bring this component into a deployment that does not have it yet (an
        upgrade of a server installed before it existed); asked only while it is not enabled."""
        return []
