"""Synapse workers: when one process is not enough. A single Synapse process uses one core (its
Python code runs under the GIL); Synapse's own worker model spreads the work over processes that
share Postgres and talk through Redis (replication), on the main host and on worker hosts.

What it adds, for `[workers] preset = "auto" | "custom"`:
- Redis in the compose project (its password in a root-only file; Synapse reads it from a file);
- one compose service per worker, the same image as Synapse's, each with its own small config
  (data/workers/NAME.yaml) and its own health check;
- the main config's worker keys (installer.components.homeserver.WorkerSettings, RedisSettings);
- Caddy routes sending each endpoint group (sync, client, federation, media) to the workers that
  serve it, balanced, with health checks (installer.components.base.Balance);
- worker hosts (`hosts`): Docker, the workers and a copy of the shared config on each; Postgres,
  Redis and the replication listener published on the main host's private address and reachable
  only from the worker hosts (iptables' DOCKER-USER chain, and on Oracle Cloud the security list);
- upgrade mode: workers stopped before the main process migrates, started after, versions matched.

Redis lives here rather than as a component of its own: it is there for the workers alone (pub/sub
replication; it holds nothing a restart loses), and goes when they go.

`preset = "none"` after workers: everything above is taken away again (workers.remove).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installer import checks
from installer.components.base import Balance, BackupFiles, Component, Service, SiteRoutes
from installer.components.homeserver import RedisSettings, WorkerInstance, WorkerSettings
from installer.components.workers import layout as _layout
from installer.components.workers.layout import KINDS, Layout, Worker
from installer.sections import Part, key, mention

if TYPE_CHECKING:
    from collections.abc import Mapping

    from installer.answers import Answers
    from installer.components.base import BackupItem, Mode, PrivatePort
    from installer.deployment import Deployment
    from installer.engine import Stage

LAYOUT = "workers.layout"
"""State fact: the layout the last install resolved (installer.components.workers.layout.Layout)."""
DEPLOYED = "workers.deployed"
"""State fact: workers were deployed (set once anything is, cleared when workers.remove is done)."""
HOSTS_DEPLOYED = "workers.hosts_deployed"
"""State fact: the worker hosts that hold workers ([address, host key] each), to take them off later."""
VMS = "workers.vms"
"""State fact (Oracle Cloud): the instances made for `hosts = ["new"]`: id, private address, host key."""

REDIS = "redis"
REDIS_PORT = 6379
REDIS_CONF = "redis.conf"
"""In the compose project; root-only on the host but for Redis's own user (it holds the password)."""
REDIS_CONF_IN_CONTAINER = "/usr/local/etc/redis/redis.conf"
WORKERS_DIR = "data/workers"
"""Relative to the project; Synapse's data folder is mounted at /data in every Synapse container."""
REDIS_PASSWORD = f"{WORKERS_DIR}/redis.password"
REPLICATION_SECRET = f"{WORKERS_DIR}/replication.secret"
LOG_CONFIG = f"{WORKERS_DIR}/log.config"
WORKER_APP = "synapse.app.generic_worker"
REDIS_READY = (f'REDISCLI_AUTH="$$(sed -n \'s/^requirepass //p\' {REDIS_CONF_IN_CONTAINER})" '
               "redis-cli -h 127.0.0.1 ping | grep -q PONG")
"""Docker's health check inside the Redis container ($$: compose's own escape of $)."""

PRESETS = (("none", "one process (no workers)"), ("auto", "sized to the host"), ("custom", "the counts I give"))
GROUP = "Workers (several Synapse processes)"


def in_container(path: str) -> str:
    """A path under data/ as Synapse's containers see it."""
    return "/data/" + path.removeprefix("data/")


def _on(answers: Answers) -> bool:
    return answers.workers.preset != "none"


@dataclass(frozen=True)
class WorkersKeys:
    preset: str = key("none", "Workers", '"none" | "auto" (sized to the host) | "custom"', step="Server",
                      choices=tuple(v for v, _ in PRESETS), options=PRESETS, group=GROUP,
                      guide="Synapse's worker processes share the load over more cores (and hosts); auto: "
                            + _layout.AUTO_RULE,
                      option_guides=(("none", "one Synapse process: right for a small server"),
                                     ("auto", _layout.AUTO_RULE),
                                     ("custom", "as many of each kind as the counts say")))
    custom: str = key("", "Worker counts",
                      'preset "custom": "kind=count, ..." (kinds: ' + ", ".join(KINDS) + ")",
                      step="Server", check=_layout.check_custom, group=GROUP, placeholder="generic=2, media=1",
                      applies=lambda a: a.workers.preset == "custom")
    hosts: tuple = key((), "Worker hosts",
                       'more servers for workers: "PRIVATE_IP ssh-ed25519 AAAA..." each (reached through the main '
                       'host); on Oracle Cloud "new" makes one',
                       step="Server", check=_layout.check_hosts, group=GROUP, modes=())
    redis_image: str = key("redis:7-alpine", "Redis image", "for the workers' replication; major version pinned",
                           step="Server", check=checks.image_ref, group=GROUP, applies=_on)

    def __post_init__(self) -> None:
        if isinstance(self.hosts, list):  # from TOML: kept as a tuple, so the answers stay hashable
            object.__setattr__(self, "hosts", tuple(self.hosts))


def layout_of(d: Deployment) -> Layout:
    """The workers the deployment has: none when the answers say none (an install taking them
    away), else what the state says the last resolution gave (workers.plan resolves it anew at the
    start of an install or a restore; an upgrade works on what is deployed)."""
    if d.mode in ("install", "restore") and not _on(d.answers):
        return Layout()
    return Layout.from_fact(d.facts.get(LAYOUT))


def worker_config(worker: Worker) -> dict[str, Any]:
    """The worker's own small config file (Synapse reads the shared homeserver.yaml first)."""
    listeners: list[dict[str, Any]] = [{
        "type": "http", "port": worker.port, "bind_addresses": ["0.0.0.0"], "x_forwarded": True,
        "resources": [{"names": list(KINDS[worker.kind].resources), "compress": False}],
    }]
    if worker.replication_port:
        listeners.append({"type": "http", "port": worker.replication_port, "bind_addresses": ["0.0.0.0"],
                          "resources": [{"names": ["replication"], "compress": False}]})
    config: dict[str, Any] = {"worker_app": WORKER_APP, "worker_name": worker.name, "worker_listeners": listeners,
                              "worker_log_config": in_container(LOG_CONFIG)}
    if worker.kind == "media":
        config["enable_media_repo"] = True  # off in the shared config: the media workers serve it
    return config


def worker_config_text(worker: Worker) -> str:
    """The worker's config file as written (JSON is YAML: every string quoted)."""
    import json

    return "# Managed by matrix-installer: the worker's own settings; the shared ones are in homeserver.yaml.\n" + \
        json.dumps(worker_config(worker), indent=2) + "\n"


LOG_CONFIG_TEXT = """# Managed by matrix-installer: the workers log to the console (docker logs), requests included.
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  console:
    class: logging.StreamHandler
    formatter: precise
loggers:
  synapse.storage.SQL:
    level: INFO
root:
  level: INFO
  handlers: [console]
disable_existing_loggers: false
"""


def redis_conf(password: str) -> str:
    """Redis for Synapse's replication: pub/sub and a cache, nothing kept on disk."""
    return ("# Managed by matrix-installer: Redis for Synapse's workers (replication and caches).\n"
            f"port {REDIS_PORT}\nbind 0.0.0.0\nrequirepass {password}\n"
            'save ""\nappendonly no\nmaxmemory 256mb\nmaxmemory-policy allkeys-lru\n')


class Workers(Component):
    name = "workers"
    title = "Synapse workers"
    answers = (Part("workers", WorkersKeys),)

    def enabled(self, answers: Answers, mode: Mode = "install", facts: Mapping[str, Any] | None = None) -> bool:
        facts = facts or {}
        if mode in ("install", "restore"):  # a restore is an install whose data comes back from a backup
            return _on(answers) or bool(facts.get(DEPLOYED))
        if mode == "upgrade":
            return bool(facts.get(DEPLOYED)) and bool(Layout.from_fact(facts.get(LAYOUT)).workers)
        return False

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        w = answers.workers
        found = []
        if w.preset == "custom" and not any(_layout.parse_custom(w.custom).values()):
            found.append(("workers.custom", f"names no workers: {mention('workers.preset', 'custom')} needs counts such "
                                            'as "generic=2, federation_sender=1, media=1"'))
        if _on(answers) and answers.database.engine != "postgres":
            found.append(("workers.preset", "workers need Postgres (they share its database): "
                                            f"{mention('database.engine', 'postgres')}"))
        if w.hosts and not _on(answers):
            found.append(("workers.hosts", f"worker hosts run workers: set {mention('workers.preset', 'auto')} "
                                           f"or {mention('workers.preset', 'custom')}, or leave hosts empty"))
        if w.hosts and w.preset == "custom" and not any(KINDS[k].on_worker_hosts for k, n in
                                                         _layout.parse_custom(w.custom).items() if n):
            found.append(("workers.hosts", "a worker host runs generic, sync, client_reader or federation_reader "
                                           "workers, and the custom counts name none"))
        if any(h.strip() == _layout.NEW_HOST for h in w.hosts) and answers.cloud.provider != "oci":
            found.append(("workers.hosts", f'"new" makes an Oracle Cloud instance: on a server of your own, give '
                                           '"PRIVATE_IP ssh-ed25519 AAAA..." for each worker host'))
        if _on(answers) and not _redis_major(w.redis_image):
            found.append(("workers.redis_image", 'must pin a major version in its tag, such as "redis:7-alpine"'))
        return found

    def warnings(self, answers: Answers) -> list[str]:
        c = answers.cloud
        new = sum(1 for h in answers.workers.hosts if h.strip() == _layout.NEW_HOST)
        if new and c.provider == "oci" and c.shape.endswith(".Flex") and (new + 1) * c.ocpus > 4:
            return [f"{new + 1} instances of {c.ocpus} OCPUs each are more than Oracle's Always Free 4 OCPUs: "
                    "the worker instance is billed, or refused on a free account"]
        return []

    # --- what it adds -------------------------------------------------------------------
    def services(self, d: Deployment) -> list[Service]:
        layout = layout_of(d)
        if not layout.workers:
            return []
        from installer.components.workers.services import main_services

        return main_services(d, layout)

    def private_ports(self, d: Deployment) -> list[PrivatePort]:
        layout = layout_of(d)
        if not layout.hosts:
            return []
        from installer.components.workers.services import private_ports

        return private_ports(d, layout)

    def routes(self, d: Deployment) -> list[SiteRoutes]:
        layout = layout_of(d)
        if not layout.workers:
            return []
        from installer.components.synapse import BODY_MARGIN, upload_bytes
        from installer.components.workers.endpoints import GROUPS

        max_body = upload_bytes(d.answers.synapse.max_upload_size) + BODY_MARGIN
        main, federation = [], []
        for group in GROUPS:
            serving = [w for w in layout.workers if group.name in KINDS[w.kind].groups]
            if not serving:
                continue
            upstreams = tuple(f"{w.host or '127.0.0.1'}:{w.port}" for w in serving)
            route = Balance(group.name, group.patterns, upstreams, group.policy, group.policy_header, group.methods,
                            max_body=max_body)
            main.append(route)
            if group.federation:
                federation.append(route)
        found = [SiteRoutes(d.answers.domain.matrix_host, tuple(main), first=True)]
        if d.answers.federation_port == 8448 and federation:
            found.append(SiteRoutes(f"{d.answers.domain.server_name}:8448", tuple(federation), first=True))
        return found

    def homeserver_settings(self, d: Deployment) -> list[object]:
        layout = layout_of(d)
        if not layout.workers:
            return []
        instances = tuple(WorkerInstance(w.name, w.kind, w.service if w.replication_port else "", w.replication_port)
                          for w in layout.workers)
        from installer.components.synapse import CONTAINER

        return [RedisSettings(REDIS, REDIS, REDIS_PORT, in_container(REDIS_PASSWORD)),
                WorkerSettings(instances, CONTAINER, _layout.REPLICATION_PORT, in_container(REPLICATION_SECRET))]

    def backup(self, d: Deployment) -> list[BackupItem]:
        if not layout_of(d).workers:
            return []
        # data/workers (configs and the secrets' copies Synapse reads) is in Synapse's data/ already.
        return [BackupFiles((REDIS_CONF,))]

    # --- stages -------------------------------------------------------------------------
    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        from installer.components.workers.plan import stages_for

        return stages_for(d, mode)


def _redis_major(image: str) -> str:
    from installer.components.postgres import major

    return major(image)


COMPONENT = Workers()
