"""Which worker processes run where: the kinds Synapse offers (its workers documentation), the
`custom` answer's counts, the `auto` rule, and the layout a run resolves them to (kept in the
state, so that what is deployed is known to a later run, an upgrade or a move back to "none").

Light: no engine or SSH imports (the answers model checks `custom` and `hosts` with it).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from installer import checks, shown


@dataclass(frozen=True)
class Kind:
    """A kind of worker: what it serves and where it may run."""

    resources: tuple[str, ...]
    """The HTTP listener's resources (each worker has one: its health check is there)."""
    groups: tuple[str, ...] = ()
    """The endpoint groups (installer.components.workers.endpoints) Caddy sends it."""
    on_worker_hosts: bool = False
    """Whether it may run on a worker host: it only answers requests. The media repository keeps
    its files on the main host's disk; the senders and the background jobs stay beside it too."""
    most: int = 16
    words: str = ""


KINDS: dict[str, Kind] = {
    "generic": Kind(("client", "federation"), ("sync", "client", "client_get", "federation", "federation_send"), True,
                    words="sync, client reads and inbound federation, balanced"),
    "sync": Kind(("client",), ("sync",), True, words="/sync and the other long polls only"),
    "client_reader": Kind(("client",), ("client", "client_get"), True, words="client API requests other than /sync"),
    "federation_reader": Kind(("federation",), ("federation", "federation_send"), True, words="inbound federation"),
    "media": Kind(("media",), ("media",), words="the media repository (uploads, downloads, thumbnails)"),
    "federation_sender": Kind(("health",), words="outbound federation"),
    "background": Kind(("health",), most=1, words="background jobs (one at most)"),
    "event_persister": Kind(("health",), words="writes events (a stream writer)"),
}
"""Each kind runs Synapse's generic worker (`synapse.app.generic_worker`), which is every kind now."""

HTTP_PORT = 8101
"""The first worker's HTTP listener; the next ones count up (on each host)."""
REPLICATION_PORT = 9093
"""The main process's replication listener (Synapse's own examples use 9093)."""
PERSISTER_REPLICATION_PORT = 9201
"""The first event persister's replication listener."""
MOST_WORKERS = 32

MAX_GENERIC = 8
"""The auto rule's ceiling on generic workers, however big the host."""
HOST_RESERVE_MIB = 1024
"""The auto rule keeps this much memory for the main process, Postgres, Redis and Caddy."""
WORKER_MIB = 150
"""Memory the auto rule counts per worker process (the stand-in's workers use ~100-120 MiB)."""
SMALLEST = (2, 1800)
"""(cores, MiB, as installer.host.connect.HostSize gives them): below either, auto runs no workers:
one process is the better use of the box (a "2 GB" box reports a little less than 2048 MiB)."""
AUTO_RULE = (f"one generic worker per core beyond the first (at least 2, at most {MAX_GENERIC}, and only as many as "
             f"fit in memory at {WORKER_MIB} MiB each beside {HOST_RESERVE_MIB} MiB for the rest), plus a federation "
             "sender, a media repository and a background worker; on a worker host, one generic worker per core. "
             f"Below {SMALLEST[0]} cores or {SMALLEST[1]} MiB of memory: none")


# --- the answers: custom counts and worker hosts ---------------------------------------------

_COUNT = re.compile(r"\s*([a-z_]+)\s*=\s*([0-9]{1,3})\s*")


def parse_custom(text: str) -> dict[str, int]:
    """"generic=2, federation_sender=1" -> {"generic": 2, "federation_sender": 1} (check first)."""
    counts: dict[str, int] = {}
    for part in text.replace(";", ",").split(","):
        if part.strip():
            m = _COUNT.fullmatch(part)
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
    return counts


def check_custom(value: object) -> str | None:
    """The custom counts: `kind=count` pairs separated by commas, each kind known and within its limit."""
    if not isinstance(value, str):
        return "must be a quoted string"
    if not value.strip():
        return None
    seen: set[str] = set()
    for part in value.replace(";", ",").split(","):
        if not part.strip():
            continue
        m = _COUNT.fullmatch(part)
        if not m:
            return f'{shown.quoted(part.strip(), 40)} is not "kind=count" (e.g. "generic=2, media=1")'
        kind, count = m.group(1), int(m.group(2))
        if kind not in KINDS:
            return f'has no worker kind "{kind}": the kinds are {", ".join(KINDS)}'
        if kind in seen:
            return f"names {kind} twice"
        seen.add(kind)
        if count > KINDS[kind].most:
            return f"asks for {count} {kind} workers; at most {KINDS[kind].most}"
    if sum(parse_custom(value).values()) > MOST_WORKERS:
        return f"asks for more than {MOST_WORKERS} workers in all"
    return None


NEW_HOST = "new"
"""A `hosts` entry on Oracle Cloud: a new instance in the main host's subnet, made by the installer."""


@dataclass(frozen=True)
class HostEntry:
    """One `hosts` entry: a server of the user's own (its private address and pinned host key), or
    a new Oracle Cloud instance."""

    address: str = ""
    host_key: str = ""
    new: bool = False


def parse_host(text: str) -> HostEntry:
    if text.strip() == NEW_HOST:
        return HostEntry(new=True)
    address, _, host_key = text.strip().partition(" ")
    return HostEntry(address, host_key.strip())


def check_host(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return 'is empty: give "PRIVATE_ADDRESS ssh-ed25519 AAAA..." (or "new" on Oracle Cloud)'
    if value.strip() == NEW_HOST:
        return None
    entry = parse_host(value)
    if problem := checks.ip_address(entry.address):
        return (f'must start with the host\'s private IP address, then its host key ("10.0.0.5 ssh-ed25519 AAAA..."): '
                f"{problem}")
    if "%" in entry.address:
        return "a private address with a zone (%) is not supported: give one of its global addresses"
    if not ipaddress.ip_address(entry.address).is_private:
        return (f"{entry.address} is not a private address: worker hosts reach the database and Redis over the private "
                "network only")
    if not entry.host_key:
        return (f'gives no host key for {entry.address}: add its line from /etc/ssh/ssh_host_ed25519_key.pub, read on '
                "its console (a host key is never trusted blindly)")
    if problem := checks.ssh_public_key(entry.host_key):
        return f"the host key for {entry.address} {problem}"
    return None


def check_hosts(value: object) -> str | None:
    if not isinstance(value, list | tuple):
        return 'must be a list: hosts = ["10.0.0.5 ssh-ed25519 AAAA..."]'
    if len(value) > 8:
        return "names more than 8 worker hosts"
    addresses = []
    for number, item in enumerate(value, start=1):
        if problem := check_host(item):
            return f"entry {number} {problem}"
        entry = parse_host(str(item))
        if entry.address:
            if entry.address in addresses:
                return f"names {entry.address} twice"
            addresses.append(entry.address)
    return None


# --- the auto rule ------------------------------------------------------------------------------

def auto_counts(cores: int, memory_mib: int) -> dict[str, int]:
    """The main host's workers by the auto rule (AUTO_RULE)."""
    if cores < SMALLEST[0] or memory_mib < SMALLEST[1]:
        return {}
    fit = (memory_mib - HOST_RESERVE_MIB) // WORKER_MIB - 3
    generic = max(1, min(MAX_GENERIC, max(2, cores - 1), fit))
    return {"generic": generic, "federation_sender": 1, "media": 1, "background": 1}


def worker_host_counts(preset: str, custom: dict[str, int], cores: int, memory_mib: int) -> dict[str, int]:
    """What a worker host runs: auto, one generic worker per core (as memory allows); custom,
    the kinds that may run on worker hosts, as many as the answers say."""
    if preset == "custom":
        return {kind: count for kind, count in custom.items() if count and KINDS[kind].on_worker_hosts}
    fit = max(1, (memory_mib - 512) // WORKER_MIB)
    return {"generic": max(1, min(MAX_GENERIC, cores, fit))}


# --- the layout ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Worker:
    name: str
    kind: str
    host: str
    """"" for the main host, else the worker host's private address."""
    port: int
    """Its HTTP listener (the health check, and what Caddy sends it)."""
    replication_port: int = 0
    """Event persisters: their replication listener."""

    @property
    def service(self) -> str:
        """Its compose service and container name."""
        return f"synapse-{self.name}"

    @property
    def config_file(self) -> str:
        """Relative to Synapse's data folder (mounted at /data)."""
        return f"workers/{self.name}.yaml"


@dataclass(frozen=True)
class WorkerHost:
    address: str
    """Its private address: the main host reaches it there, and SSH goes there through the main host."""
    host_key: str
    cores: int = 0
    memory_mib: int = 0
    instance_id: str = ""
    """On Oracle Cloud, the instance the installer made for it."""


@dataclass(frozen=True)
class Layout:
    """What a run resolved the [workers] answers to, with the sizes it used."""

    workers: tuple[Worker, ...] = ()
    hosts: tuple[WorkerHost, ...] = ()
    main_private: str = ""
    """The main host's private address, when there are worker hosts (they reach it there)."""
    cores: int = 0
    memory_mib: int = 0

    def on(self, host: str) -> list[Worker]:
        return [w for w in self.workers if w.host == host]

    def of(self, *kinds: str) -> list[Worker]:
        return [w for w in self.workers if w.kind in kinds]

    def to_fact(self) -> dict[str, Any]:
        """As the state file keeps it (JSON: lists, not tuples), so a rerun compares like with like."""
        import json

        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_fact(cls, value: Any) -> Layout:
        if not isinstance(value, dict):
            return cls()
        return cls(
            workers=tuple(Worker(**w) for w in value.get("workers") or ()),
            hosts=tuple(WorkerHost(**h) for h in value.get("hosts") or ()),
            main_private=str(value.get("main_private") or ""),
            cores=int(value.get("cores") or 0), memory_mib=int(value.get("memory_mib") or 0),
        )


@dataclass
class _Namer:
    ports: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)

    def name(self, kind: str, prefix: str) -> str:
        key = prefix + kind
        self.numbers[key] = self.numbers.get(key, 0) + 1
        return f"{prefix}{kind.replace('_', '-')}{self.numbers[key]}"

    def port(self, host: str) -> int:
        self.ports[host] = self.ports.get(host, HTTP_PORT - 1) + 1
        return self.ports[host]


def resolve(counts: dict[str, int], hosts: list[tuple[WorkerHost, dict[str, int]]], *, main_private: str = "",
            cores: int = 0, memory_mib: int = 0) -> Layout:
    """The layout for the main host's counts and each worker host's: names and ports given in a
    fixed order, so the same answers on the same hosts always give the same layout (a rerun is
    unchanged)."""
    namer = _Namer()
    workers: list[Worker] = []
    persisters = 0
    for kind in KINDS:
        for _ in range(counts.get(kind, 0)):
            replication = 0
            if kind == "event_persister":
                replication = PERSISTER_REPLICATION_PORT + persisters
                persisters += 1
            workers.append(Worker(namer.name(kind, ""), kind, "", namer.port(""), replication))
    for number, (host, host_counts) in enumerate(hosts, start=1):
        for kind in KINDS:
            for _ in range(host_counts.get(kind, 0)):
                workers.append(Worker(namer.name(kind, f"h{number}-"), kind, host.address, namer.port(host.address)))
    return Layout(tuple(workers), tuple(h for h, _ in hosts), main_private if hosts else "", cores, memory_mib)
