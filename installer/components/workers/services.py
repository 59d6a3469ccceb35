"""The compose services of the workers and Redis: on the main host (in the deployment's compose
project) and on each worker host (a compose project of its own, in the same place)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from installer.components.base import PrivatePort, Service
from installer.components.homeserver import DatabaseSettings
from installer.components.workers import (
    LOG_CONFIG,
    REDIS,
    REDIS_CONF,
    REDIS_CONF_IN_CONTAINER,
    REDIS_PORT,
    REDIS_READY,
    WORKER_APP,
)
from installer.components.workers.layout import REPLICATION_PORT, Layout, Worker
from installer.host.layout import in_project

if TYPE_CHECKING:
    from installer.deployment import Deployment

q = shlex.quote


def _database(d: Deployment) -> DatabaseSettings | None:
    return next((s for s in d.homeserver_settings() if isinstance(s, DatabaseSettings)), None)


def health(port: int, address: str = "127.0.0.1") -> str:
    return f"curl -fsS -m 5 http://{address}:{port}/health"


def worker_service(d: Deployment, worker: Worker, *, address: str, extra_hosts: tuple[str, ...] = (),
                   replication_address: str = "") -> Service:
    """A worker: Synapse's image running its generic worker, with the shared config and its own.
    `address`: where its HTTP listener is published (loopback on the main host, for Caddy; the
    worker host's private address there). `replication_address`: where an event persister's
    replication listener is published for worker hosts (none: the compose network only)."""
    from installer.components.synapse import CONFIG

    homeserver = d.homeserver
    settings: dict[str, object] = {
        "container_name": worker.service,
        "restart": "unless-stopped",
        "environment": {"SYNAPSE_WORKER": WORKER_APP},
        "command": ["run", "--config-path=/data/homeserver.yaml", f"--config-path=/data/{worker.config_file}"],
        "volumes": ["./data:/data"],
        "ports": [f"{address}:{worker.port}:{worker.port}"],
        "healthcheck": {"test": ["CMD", "curl", "-fsS", f"http://localhost:{worker.port}/health"],
                        "interval": "15s", "timeout": "5s", "retries": 3, "start_period": "20s"},
    }
    if worker.replication_port and replication_address:
        settings["ports"].append(f"{replication_address}:{worker.replication_port}:{worker.replication_port}")  # type: ignore[union-attr]
    if db := _database(d):
        settings["env_file"] = [db.env_file]
    if extra_hosts:
        settings["extra_hosts"] = list(extra_hosts)
    else:  # on the main host: the main process made (and migrated) the database before any worker reads it
        settings["depends_on"] = {homeserver.service: {"condition": "service_healthy"},
                                  REDIS: {"condition": "service_healthy"}}
        if db:
            settings["depends_on"][db.service] = {"condition": "service_healthy"}  # type: ignore[index]
    config_files = (CONFIG, in_project(f"data/{worker.config_file}"), in_project(LOG_CONFIG))
    return Service(worker.service, d.answers.synapse.image, settings, config_files=config_files,
                   probe=health(worker.port, "127.0.0.1" if not extra_hosts else address),
                   upgrade_after=homeserver.service)


def redis_service(d: Deployment) -> Service:
    ready = REDIS_READY.replace("$$", "$")
    return Service(REDIS, d.answers.workers.redis_image, {
        "container_name": REDIS,
        "restart": "unless-stopped",
        "command": ["redis-server", REDIS_CONF_IN_CONTAINER],
        "volumes": [f"./{REDIS_CONF}:{REDIS_CONF_IN_CONTAINER}:ro"],
        # No ports: the main host's Synapse processes reach it on the compose network; worker
        # hosts on the private address (a PrivatePort), through the firewall's rule.
        "healthcheck": {"test": ["CMD-SHELL", REDIS_READY], "interval": "3s", "timeout": "5s", "retries": 20,
                        "start_period": "10s"},
    }, config_files=(in_project(REDIS_CONF),), probe=f"docker exec {REDIS} sh -c {q(ready)}")


def main_services(d: Deployment, layout: Layout) -> list[Service]:
    """Redis and the main host's workers."""
    return [redis_service(d), *(worker_service(d, w, address="127.0.0.1", replication_address=layout.main_private)
                                for w in layout.on(""))]


def private_ports(d: Deployment, layout: Layout) -> list[PrivatePort]:
    """What worker hosts reach on the main host's private address: Postgres, Redis and the main
    process's replication listener (event persisters publish their own)."""
    found = [PrivatePort(REDIS, REDIS_PORT, layout.main_private),
             PrivatePort(d.homeserver.service, REPLICATION_PORT, layout.main_private)]
    if db := _database(d):
        found.append(PrivatePort(db.service, db.port, layout.main_private))
    return found


def reached_from_worker_hosts(d: Deployment, layout: Layout) -> list[int]:
    """The main host's ports worker hosts connect to (the firewall admits them, no one else)."""
    ports = [p.port for p in private_ports(d, layout)]
    return ports + [w.replication_port for w in layout.on("") if w.replication_port]


def host_services(d: Deployment, layout: Layout, address: str) -> list[Service]:
    """A worker host's compose services: its workers, the names of the main host's services
    (postgres, redis, synapse, ...) pointed at the main host's private address, so the shared
    config reads the same on every host."""
    names = sorted({REDIS, d.homeserver.service, *(db.service for db in [_database(d)] if db),
                    *(w.service for w in layout.on("") if w.replication_port)})
    extra_hosts = tuple(f"{name}:{layout.main_private}" for name in names)
    return [worker_service(d, w, address=address, extra_hosts=extra_hosts) for w in layout.on(address)]
