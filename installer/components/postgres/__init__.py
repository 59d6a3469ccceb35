"""Postgres, the homeserver's database: a service in the compose project, on the compose network
only (no host port), its data in a folder beside Synapse's. Synapse's own docs call SQLite
unsuitable for production, so Postgres is the default; SQLite stays for throwaway test servers.

What it adds: the [database] answers, the postgres service (created UTF8 with C collation, as
Synapse requires), the database settings the homeserver applies, a pg_dump in every backup, the
stages that set it up and check it, and in upgrade mode the move of an SQLite deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installer import checks
from installer.components.base import BackupDump, BackupFiles, Component, Service
from installer.components.homeserver import DATABASE_FACT, DatabaseSettings
from installer.sections import Part, key, mention

if TYPE_CHECKING:
    from collections.abc import Mapping

    from installer.answers import Answers
    from installer.components.base import BackupItem, Mode
    from installer.deployment import Deployment
    from installer.engine import Stage

SERVICE = "postgres"
USER = "synapse"
DATABASE = "synapse"
PORT = 5432
DATA = "postgres"
"""The data folder, relative to the compose project (beside Synapse's data/)."""
ENV_FILE = "postgres.env"
"""Root-only (0600): the password, as POSTGRES_PASSWORD for the server and PGPASSWORD for its clients."""
INITDB_ARGS = "--encoding=UTF8 --lc-collate=C --lc-ctype=C"
"""Synapse refuses a database whose collation is not C (sorting would differ between databases)."""
READY = f"pg_isready -h 127.0.0.1 -U {USER} -d {DATABASE}"
"""Over TCP: during its first start the image runs a temporary server on the socket alone."""
ENGINES = (("postgres", "Postgres (recommended)"), ("sqlite", "SQLite: throwaway test servers only"))


def _postgres(answers: Answers) -> bool:
    return answers.database.engine == "postgres"


@dataclass(frozen=True)
class DatabaseKeys:
    engine: str = key("postgres", "Database", '"postgres" | "sqlite" (throwaway test servers only)', step="Server",
                      choices=tuple(value for value, _ in ENGINES), options=ENGINES, install_only=True,
                      guide="Postgres runs beside Synapse in its own container; SQLite is one file, fine for a test "
                            "server but slow and fragile with real users",
                      option_guides=(("postgres", "Postgres runs beside Synapse in its own container"),
                                     ("sqlite", "one file: fine for a test server, slow and fragile with real users")))
    image: str = key("postgres:17-alpine", "Postgres image", "major version pinned; minor updates come with --upgrade",
                     step="Server", check=checks.image_ref, applies=_postgres, group="Database")
    migrate: str = key("ask", "Move SQLite to Postgres",
                       'upgrade of an SQLite deployment: "ask" | "yes" | "no" (headless "ask" = no)', step="Server",
                       choices=("ask", "yes", "no"), applies=_postgres, modes=("upgrade",),
                       guide="an upgrade of a server still on SQLite: move its data to Postgres "
                             "(Synapse is stopped while it moves; the SQLite file is kept)")


def major(image: str) -> str:
    """The major version an image reference pins ("postgres:17-alpine" -> "17"), or ""."""
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    return tag.split(".")[0].split("-")[0] if tag[:1].isdigit() else ""


class Postgres(Component):
    name = "postgres"
    title = "Postgres database"
    answers = (Part("database", DatabaseKeys),)

    def enabled(self, answers: Answers, mode: Mode = "install", facts: Mapping[str, Any] | None = None) -> bool:
        if mode == "upgrade":  # an upgrade works on what is deployed: a move to Postgres is its own stage
            return (facts or {}).get(DATABASE_FACT) == "postgres"
        return _postgres(answers)

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        if _postgres(answers) and not major(answers.database.image):
            return [("database.image", 'must pin a major version in its tag, such as "postgres:17-alpine": '
                                       "a new major needs a dump and restore, never a pull")]
        return []

    def warnings(self, answers: Answers) -> list[str]:
        if answers.database.engine == "sqlite":
            return ["SQLite is for throwaway test servers: it is slow with more than a few users and Synapse's "
                    f"docs call it unsuitable for production; choose Postgres ({mention('database.engine', 'postgres')})"]
        return []

    def settings(self) -> DatabaseSettings:
        return DatabaseSettings("postgres", SERVICE, SERVICE, PORT, DATABASE, USER, ENV_FILE)

    def homeserver_settings(self, d: Deployment) -> list[object]:
        return [self.settings()]

    def services(self, d: Deployment) -> list[Service]:
        return [Service(SERVICE, d.answers.database.image, {
            "container_name": SERVICE,
            "restart": "unless-stopped",
            "env_file": [ENV_FILE],
            "environment": {"POSTGRES_USER": USER, "POSTGRES_DB": DATABASE, "POSTGRES_INITDB_ARGS": INITDB_ARGS},
            "volumes": [f"./{DATA}:/var/lib/postgresql/data"],
            # No ports: Synapse reaches it on the compose network; nothing else should.
            "healthcheck": {"test": ["CMD-SHELL", READY], "interval": "3s", "timeout": "5s", "retries": 20,
                            "start_period": "60s"},
        }, probe=f"docker exec {SERVICE} {READY}")]

    def backup(self, d: Deployment) -> list[BackupItem]:
        return [
            BackupFiles((ENV_FILE,), required=(ENV_FILE, r"postgres\.dump")),
            BackupDump(
                "postgres.dump",
                # One-time keys are left out, as Synapse's backup docs advise: restored ones cause
                # decryption errors on the devices that already used them.
                dump=f'docker exec {SERVICE} pg_dump -Fc -U {USER} -d {DATABASE} --exclude-table-data=e2e_one_time_keys_json > "$out"',
                restore=(f'docker compose -f "$project/docker-compose.yml" up -d {SERVICE}\n'
                         f"i=0\nuntil docker exec {SERVICE} {READY} >/dev/null 2>&1; do\n"
                         '    i=$((i + 1)); [ "$i" -lt 300 ] || { echo "postgres did not start" >&2; exit 5; }; sleep 1\ndone\n'
                         f'docker exec -i {SERVICE} pg_restore -U {USER} -d {DATABASE} --no-owner --exit-on-error < "$dump"'),
                note="the Postgres database, dumped with pg_dump -Fc while it runs (consistent), one-time keys left out",
            ),
        ]

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        from installer.components.postgres import stages as s
        from installer.engine import Stage

        if mode == "install":
            return [
                Stage("postgres.config", "Postgres: data folder and password", s.prepare, ("host.docker",),
                      before=("synapse.config", "services.start")),
                Stage("postgres.check", "Postgres: UTF8 with C collation", s.verify, ("services.start",)),
            ]
        if mode == "upgrade":
            from installer.components.upgrade.findings import Findings

            return [Stage("postgres.version", "Postgres major version unchanged", s.same_major, takes=(Findings,),
                          before=("upgrade.backup",))]
        return []

    def joining_stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "upgrade" or not _postgres(d.answers):
            return []
        from installer.components.postgres.migrate import move_to_postgres
        from installer.components.upgrade.findings import BackupMade
        from installer.engine import Stage

        return [Stage("database.migrate", "SQLite moved to Postgres", move_to_postgres, ("upgrade.reboot",),
                      takes=(BackupMade,), before=("upgrade.images",))]


COMPONENT = Postgres()
