"""What a box of a given size gets: one pure function from the host's memory and cores
(installer.host.connect.HostSize) to every tuned setting, with the reason each is there.

Synapse (its config and its container), Postgres (its server settings) and the swap offer all
read this; tests/unit/test_sizing.py pins what each size gets (Oracle's E2.1.Micro 1 GB/1 core,
A1.Flex 12 GB/2 cores and 24 GB/4, an existing 4 GB/2 server).

Sources: Synapse's config documentation (caches.cache_autotuning, limit_remote_rooms,
media_retention, presence), its admin FAQ (jemalloc and PYTHONMALLOC=malloc), its page on
running on small machines (presence off, a room complexity limit), and matrix-docker-ansible-deploy's
sizing (cache autotuning from RAM: max = min(RAM/8, 2 GiB), target = min(RAM/16, 1 GiB)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from installer.host.connect import HostSize

GIB = 1024
"""Sizes here are MiB."""
OS_RESERVE_SMALL = 256
"""MiB kept for the system itself on boxes of 2 GiB or less: kernel, systemd and journald, sshd,
dockerd and containerd, Caddy."""
OS_RESERVE = 512
POSTGRES_BACKENDS = 128
"""MiB for Postgres's connections beyond its shared buffers (Synapse keeps up to 10 open)."""
POOL_MIN, POOL_MAX = 5, 10
"""Each Synapse process's database pool (cp_min, cp_max): it opens POOL_MIN at start, up to POOL_MAX under load."""
SPARE_CONNECTIONS = 10
"""Postgres connections beyond Synapse's pools: the backup's pg_dump, the restore test, a migration, an admin's psql."""
PRESENCE_FROM = 3584
"""MiB: a "4 GB" server reports a little less than 4 GiB (the kernel keeps some)."""
SMALL = 2 * GIB
"""Up to this much memory a box is small: presence off, a low room complexity limit, a swap file offered."""


@dataclass(frozen=True)
class Sizing:
    """Every setting derived from the box's size (memory in MiB)."""

    memory_mib: int
    cores: int
    # Synapse's caches
    cache_max_mib: int
    cache_target_mib: int
    min_cache_ttl: str
    cache_factor: float
    sync_cache: str | None
    """How long a /sync response is kept for a client that asks again; None: Synapse's 2 minutes."""
    # Synapse's container
    synapse_limit_mib: int
    # Synapse's features
    presence: bool
    complexity: float | None
    """The room complexity limit for joining remote rooms; None: no limit."""
    remote_media_lifetime: str
    # Postgres
    shared_buffers_mib: int
    effective_cache_size_mib: int
    maintenance_work_mem_mib: int
    work_mem_mib: int
    max_connections: int
    # the host
    swap_offer_mib: int
    """A swap file to offer when the box has none (0: none offered)."""

    @property
    def box(self) -> str:
        memory = f"{self.memory_mib / GIB:.0f} GiB" if self.memory_mib % GIB == 0 else f"{self.memory_mib / GIB:.1f} GiB"
        return f"{memory}, {self.cores} core{'s' if self.cores != 1 else ''}"

    def postgres_args(self) -> list[str]:
        """The Postgres server's `-c name=value` settings."""
        settings = {
            "shared_buffers": f"{self.shared_buffers_mib}MB",
            "effective_cache_size": f"{self.effective_cache_size_mib}MB",
            "maintenance_work_mem": f"{self.maintenance_work_mem_mib}MB",
            "work_mem": f"{self.work_mem_mib}MB",
            "max_connections": str(self.max_connections),
        }
        return [word for name, value in settings.items() for word in ("-c", f"{name}={value}")]


def _clamp(value: float, low: int, high: int) -> int:
    return int(max(low, min(high, value)))


def max_connections(synapse_processes: int) -> int:
    """Enough for every Synapse process's full pool (the main one and each worker, on any host) and
    the spare ones: a pool that cannot connect fails its requests, and a pg_dump that cannot fails the backup."""
    return max(40, synapse_processes * POOL_MAX + SPARE_CONNECTIONS)


def sizing_for(size: HostSize, *, postgres: bool = True, synapse_processes: int = 1) -> Sizing:
    """The settings for a box of `size` (`postgres`: whether Postgres shares the box with Synapse;
    `synapse_processes`: the main process and its workers, which all use that Postgres)."""
    memory, cores = size.memory_mib, max(1, size.cores)
    small = memory <= SMALL
    shared_buffers = _clamp(memory / 16, 32, GIB)
    postgres_budget = shared_buffers + POSTGRES_BACKENDS if postgres else 0
    left = memory - (OS_RESERVE_SMALL if small else OS_RESERVE) - postgres_budget
    # Small boxes give Synapse half the memory: the rest of the stack lives in the other half
    # (and the swap file, when there is one, gives the kernel room to move idle pages).
    synapse_limit = int(min(left, memory / 2 if small else memory * 3 / 4))
    if memory <= 1536:
        complexity: float | None = 1.0
    elif memory <= 3 * GIB:
        complexity = 3.0
    elif memory <= 8 * GIB:
        complexity = 10.0
    else:
        complexity = None
    return Sizing(
        memory_mib=memory,
        cores=cores,
        cache_max_mib=int(min(memory / 8, 2 * GIB)),
        cache_target_mib=int(min(memory / 16, GIB)),
        min_cache_ttl="30s",
        cache_factor=0.5 if small else 1.0 if memory < 8 * GIB else 2.0,
        sync_cache="30s" if small else None,
        synapse_limit_mib=max(256, synapse_limit),
        presence=memory >= PRESENCE_FROM and cores >= 2,
        complexity=complexity,
        remote_media_lifetime="90d",
        shared_buffers_mib=shared_buffers,
        effective_cache_size_mib=_clamp(memory / 4, 64, 8 * GIB),
        maintenance_work_mem_mib=_clamp(memory / 32, 16, 256),
        work_mem_mib=4 if small else 8,
        max_connections=max_connections(synapse_processes),
        swap_offer_mib=(2 * GIB if memory <= 1536 else GIB) if small else 0,
    )


def complexity_error(sizing: Sizing) -> str:
    """What a user sees when a room is refused (Synapse's own words are about "upgrading your instance")."""
    return (f"This server ({sizing.box}) does not join rooms this large: their state would not fit in its memory "
            f"(room complexity above {sizing.complexity:g}). Ask the server's admin; admins can still join.")


def synapse_comments(sizing: Sizing) -> dict[str, str]:
    """Why each tuned top-level key of homeserver.yaml is there, for the comment above it."""
    presence = ("off: presence is the first thing that overloads a small server (every status change goes to every "
                "server in every shared room; Synapse's page on small machines turns it off first)"
                if not sizing.presence else
                "on: this box has the memory and cores for it (it is turned off on boxes under 4 GiB or with one core)")
    complexity = (f"rooms above complexity {sizing.complexity:g} (about {int(sizing.complexity * 500)} state events) are refused "
                  "before joining, with a message, instead of the out-of-memory kill a huge room's state brings to a box "
                  "this size; admins may still join" if sizing.complexity is not None else
                  "no limit: this box can hold the state of large rooms (joining one still takes minutes)")
    return {
        "caches": (f"caches sized for this box ({sizing.box}): autotuning evicts once Synapse's memory (jemalloc's count; "
                   f"PYTHONMALLOC=malloc in the container lets it see Python's objects) passes "
                   f"{sizing.cache_max_mib}M = min(RAM/8, 2 GiB), down to {sizing.cache_target_mib}M = min(RAM/16, 1 GiB), "
                   f"sparing entries younger than {sizing.min_cache_ttl}; the factor {sizing.cache_factor:g} lets the "
                   "caches grow until autotuning bounds them. "
                   + (f"Sync responses are kept {sizing.sync_cache} for a client that asks again (Synapse keeps every one "
                      "2 minutes: on a small box that is memory for nothing, as clients retry within seconds). "
                      if sizing.sync_cache else "")
                   + f"The container's memory limit is {sizing.synapse_limit_mib}M (docker-compose.yml), so one runaway "
                   "cannot take the box and SSH down"),
        "presence": f"presence {presence}",
        "limit_remote_rooms": f"room complexity for this box ({sizing.box}): {complexity}",
        "media_retention": (f"remote media (copies of other servers' files) not viewed for {sizing.remote_media_lifetime} "
                            "is deleted, as it can be fetched again; local media (your users' uploads) is kept"),
    }


def synapse_settings(sizing: Sizing) -> dict[str, object]:
    """The homeserver.yaml keys the sizing sets (whole top-level values)."""
    return {
        "caches": {
            "global_factor": sizing.cache_factor,
            **({"sync_response_cache_duration": sizing.sync_cache} if sizing.sync_cache else {}),
            "cache_autotuning": {
                "max_cache_memory_usage": f"{sizing.cache_max_mib}M",
                "target_cache_memory_usage": f"{sizing.cache_target_mib}M",
                "min_cache_ttl": sizing.min_cache_ttl,
            },
        },
        "presence": {"enabled": sizing.presence},
        "limit_remote_rooms": (
            {"enabled": True, "complexity": sizing.complexity, "complexity_error": complexity_error(sizing),
             "admins_can_join": True} if sizing.complexity is not None else {"enabled": False}),
        "media_retention": {"remote_media_lifetime": sizing.remote_media_lifetime},
    }
