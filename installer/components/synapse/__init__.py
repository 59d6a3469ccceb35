"""Synapse, the Matrix homeserver, in Docker as the manual guide runs it: the image's own config,
edited; loopback only, with Caddy the one way in. It is the deployment's Homeserver: the
settings other components hand it (a database, the registration policy) go into its config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from installer import checks
from installer.components.base import BackupFiles, BackupSqlite, Port, Proxy, Service, Site, SiteRoutes
from installer.components.homeserver import DatabaseSettings, Homeserver
from installer.host.layout import in_project
from installer.sections import Part, key

if TYPE_CHECKING:
    from installer.components.base import BackupItem, Mode
    from installer.components.homeserver import Response
    from installer.deployment import Deployment
    from installer.engine import Stage, StageContext

CONTAINER = "synapse"
DATA = in_project("data")
CONFIG = f"{DATA}/homeserver.yaml"
PORT = 8008
UPSTREAM = f"127.0.0.1:{PORT}"
HEALTH = f"curl -fsS -m 5 http://127.0.0.1:{PORT}/health"
OOM_SCORE_ADJ = 300
"""Should the whole box run out of memory anyway, the kernel's choice falls on Synapse (it restarts)
before Postgres or sshd."""
BODY_MARGIN = 1024 * 1024
"""Bytes Caddy lets through above Synapse's own upload limit, so that Synapse answers a body
just over it with its 413 M_TOO_LARGE (Caddy answers larger declared ones itself, in Matrix's words)."""


@dataclass(frozen=True)
class SynapseKeys:
    image: str = key("matrixdotorg/synapse:latest", "Synapse image", "the Synapse container image", step="Server",
                     check=checks.image_ref, group="Synapse")
    report_stats: bool = key(False, "Report stats", "send anonymous usage statistics to matrix.org", step="Server",
                             checkbox="report anonymous usage statistics", group="Synapse")
    max_upload_size: str = key("50M", "Max upload size", "largest upload (Synapse and Caddy both)", step="Server",
                               check=checks.pattern(r"[1-9][0-9]{0,4}[KMG]", 'a size such as "50M" (K, M or G)'), group="Synapse")


def upload_bytes(size: str) -> int:
    """Synapse's "50M" is 50 MiB."""
    return int(size[:-1]) * {"K": 1024, "M": 1024**2, "G": 1024**3}[size[-1]]


class Synapse(Homeserver):
    name = "synapse"
    title = "Synapse homeserver"
    service = CONTAINER
    display_name = "Synapse"
    answers = (Part("synapse", SynapseKeys),)

    def database(self, d: Deployment) -> DatabaseSettings | None:
        return next((s for s in d.homeserver_settings() if isinstance(s, DatabaseSettings)), None)

    def services(self, d: Deployment) -> list[Service]:
        settings: dict[str, object] = {
            "container_name": CONTAINER,
            "restart": "unless-stopped",
            "volumes": ["./data:/data"],
            "ports": [f"127.0.0.1:{PORT}:{PORT}"],  # loopback only: Caddy is the only way in
            "healthcheck": {"test": ["CMD", "curl", "-fsS", f"http://localhost:{PORT}/health"],
                            "interval": "15s", "timeout": "5s", "retries": 3, "start_period": "20s"},
        }
        if db := self.database(d):
            settings["env_file"] = [db.env_file]
            settings["depends_on"] = {db.service: {"condition": "service_healthy"}}
        if sizing := d.sizing:
            # The image preloads jemalloc (its start.py sets LD_PRELOAD); PYTHONMALLOC=malloc sends
            # Python's small objects through it too, so that cache autotuning sees real memory.
            settings["environment"] = {"PYTHONMALLOC": "malloc"}
            # A runaway Synapse is stopped at its limit, not the box: SSH and Postgres stay up.
            settings["mem_limit"] = f"{sizing.synapse_limit_mib}m"
            settings["oom_score_adj"] = OOM_SCORE_ADJ
        return [Service(CONTAINER, d.answers.synapse.image, settings, config_files=(CONFIG,), probe=HEALTH)]

    def _proxy(self, d: Deployment, paths: tuple[str, ...]) -> Proxy:
        return Proxy(paths, UPSTREAM, upload_bytes(d.answers.synapse.max_upload_size) + BODY_MARGIN)

    def routes(self, d: Deployment) -> list[SiteRoutes]:
        return [SiteRoutes(d.answers.domain.matrix_host, (self._proxy(d, ("/_matrix/*", "/_synapse/client/*")),))]

    def sites(self, d: Deployment) -> list[Site]:
        if d.answers.federation_port != 8448:
            return []
        return [Site(f"{d.answers.domain.server_name}:8448", "Federation on the spec's default port: certificate and Host are the server name.",
                     (self._proxy(d, ("/_matrix/*",)),), order=20)]

    def ports(self, d: Deployment) -> list[Port]:
        return []  # Caddy listens for it

    def backup(self, d: Deployment) -> list[BackupItem]:
        sqlite = self.database(d) is None
        items: list[BackupItem] = [BackupFiles(
            ("docker-compose.yml", "data"),
            exclude=tuple(f"data/*.{suffix}" for suffix in ("db", "db-wal", "db-shm", "db-journal")) if sqlite else (),
            required=("docker-compose.yml", r"data/homeserver\.yaml", r"data/[^/]*\.signing\.key"),
        )]
        if sqlite:
            items.append(BackupSqlite(CONTAINER, "data"))
        return items

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "install":
            return []
        from installer.components.homeserver import AdminCredentials
        from installer.components.synapse import stages as s
        from installer.engine import Stage
        from installer.host.connect import HostSize

        return [
            Stage("synapse.config", "Synapse configuration", s.configure, ("host.docker",), before=("services.start",),
                  takes=(HostSize,)),
            Stage("synapse.admin", "Admin account", s.create_admin, ("services.start",), gives=(AdminCredentials,)),
        ]

    # --- the Homeserver interface ---------------------------------------------------------
    async def api(self, ctx: StageContext, method: str, path: str, *, body: object | None = None,
                  token: str | None = None, dry_output: str = "{}\n200") -> Response:
        from installer.components.synapse.api import request

        return await request(ctx, method, path, body=body, token=token, dry_output=dry_output)

    async def restart(self, ctx: StageContext) -> None:
        from installer.engine import StageError
        from installer.host.containers import show_logs, wait_ready
        from installer.host.layout import COMPOSE, compose

        await ctx.run(compose("restart", CONTAINER), sudo=True, timeout=300)
        ready, why = await wait_ready(ctx, ctx.deployment.service(CONTAINER))
        if not ready:
            await show_logs(ctx, CONTAINER)
            raise StageError(f"Synapse is not ready after a restart ({why}); its last log lines are above",
                             f"on the host: sudo {COMPOSE} logs {CONTAINER}")

    async def move_data_to(self, ctx: StageContext, wanted: Sequence[object]) -> float:
        from installer.components.synapse.port import move_data_to

        return await move_data_to(ctx, wanted)

    async def database_in_use(self, ctx: StageContext) -> str | None:
        from installer.components.synapse.config import ConfigError, database_engine

        raw = await ctx.read_file(CONFIG)
        if raw is None:
            return None
        try:
            engine = database_engine(raw.decode("utf-8", "replace"))
        except ConfigError:
            return None
        if engine == "sqlite" and not await ctx.probe(f"test -s {DATA}/homeserver.db", sudo=True):
            return None  # generated, never run: no data yet
        return engine

    async def version(self, ctx: StageContext, *, dry_output: str) -> str:
        """The admin API's server_version, else the federation API's."""
        from installer.components.synapse.api import SYNAPSE_URL, parse_server_version

        urls = (f"{SYNAPSE_URL}/_synapse/admin/v1/server_version", f"{SYNAPSE_URL}/_matrix/federation/v1/version")
        result = await ctx.run(" || ".join(f"curl -fsS -m 10 {url}" for url in urls), check=False, dry_output=dry_output)
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        return parse_server_version(last) or "unknown"


SYNAPSE = Synapse()
COMPONENT = SYNAPSE
