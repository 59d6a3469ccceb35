"""What every homeserver component offers the rest of the deployment (Synapse is the first), and
the typed settings other components hand it. Another homeserver is a new component that
subclasses Homeserver; registration, upgrade and the checks only use what is here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from installer.components.base import Component

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.engine import StageContext


DATABASE_FACT = "homeserver.database"
"""State fact: the database the deployed homeserver uses, as its config says ("sqlite" or "postgres")."""


@dataclass(frozen=True)
class AdminCredentials:
    """The admin account as this run knows it (a stage output): its password only when this run
    made it or read it from the environment."""

    user_id: str
    password: str | None


@dataclass(frozen=True)
class RegistrationPolicy:
    """A homeserver setting: who may register ("closed", "token", "open-until-admin")."""

    policy: str


@dataclass(frozen=True)
class DatabaseSettings:
    """A homeserver setting: the database server to use instead of the homeserver's own file.
    The password reaches the homeserver's container through `password_env` in `env_file`
    (libpq reads PGPASSWORD), never through its config file."""

    engine: Literal["postgres"]
    service: str
    """The compose service that runs it: the homeserver starts only once it is healthy."""
    host: str
    port: int
    database: str
    user: str
    env_file: str
    """A root-only file on the host (relative to the compose project) the homeserver's container reads."""


@dataclass(frozen=True)
class RedisSettings:
    """A homeserver setting: the Redis server its processes share replication (and caches) through.
    The password reaches the homeserver only as a file it reads (`password_file`, a path inside its
    container), never in its config file."""

    service: str
    """The compose service that runs it: the homeserver starts only once it is healthy."""
    host: str
    port: int
    password_file: str


@dataclass(frozen=True)
class WorkerInstance:
    """One worker process as the main config names it."""

    name: str
    kind: str
    """What it does: "generic", "sync", "client_reader", "federation_reader", "media",
    "federation_sender", "background", "event_persister"."""
    replication_host: str = ""
    """Where the others reach its replication listener (event persisters only), and its port."""
    replication_port: int = 0


@dataclass(frozen=True)
class WorkerSettings:
    """A homeserver setting: the main process shares its work with these worker processes (Synapse's
    worker model): the main's replication listener, where each job moved off it runs, and the secret
    the processes authenticate each other's requests with (a file, as the Redis password)."""

    workers: tuple[WorkerInstance, ...]
    main_host: str
    """Where the workers reach the main process's replication listener (its compose service)."""
    replication_port: int
    secret_file: str
    """A path inside the homeserver's container holding the replication secret."""

    def named(self, kind: str) -> list[str]:
        return [w.name for w in self.workers if w.kind == kind]


@dataclass(frozen=True)
class TurnSettings:
    """A homeserver setting: the TURN server it hands clients for calls (the TURN REST API: the
    homeserver makes short-lived credentials from a secret it shares with the TURN server).

    The secret is not part of the deployment: it lives on the host in `secret_file` (root-only),
    and the homeserver's config stage reads it into `shared_secret` (registered as a secret)
    just before it edits its config. Left empty, the homeserver keeps the secret it has."""

    uris: tuple[str, ...]
    """turn: and turns: URIs, as clients use them."""
    secret_file: str
    """Absolute path on the host of the root-only file holding the shared secret."""
    user_lifetime: str = "1h"
    allow_guests: bool = False
    shared_secret: str = field(default="", repr=False, compare=False)


@dataclass(frozen=True)
class Response:
    """An HTTP answer from the homeserver, asked on the host's loopback."""

    status: int
    body: str

    def json(self) -> dict:
        try:
            value = json.loads(self.body or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


MIN_ADMIN_PASSWORD = 8
"""Characters an admin password needs (Synapse's register_new_matrix_user asks no less)."""


def short_password_problem(variable: str, password: str | None) -> str | None:
    """What is wrong with an admin password taken from `variable`: too short (None when unset: one is generated)."""
    if password and len(password) < MIN_ADMIN_PASSWORD:
        return (f"the admin password in ${variable} is shorter than {MIN_ADMIN_PASSWORD} characters: choose a longer "
                f"one, or unset {variable} to have one generated and shown once")
    return None


def admin_password_from_env(ctx: StageContext) -> str | None:
    """The admin's password from the environment variable the answers name (registered as a secret)."""
    import os

    value = os.environ.get(ctx.answers.registration.admin_password_env, "").strip()
    return ctx.secret(value) if value else None


class Homeserver(Component):
    """The component that runs the Matrix homeserver."""

    service: ClassVar[str]
    """Its compose service (and container) name."""
    display_name: ClassVar[str]

    @staticmethod
    def admin_user_id(answers: Answers) -> str:
        return f"@{answers.registration.admin_user}:{answers.domain.server_name}"

    async def user_exists(self, ctx: StageContext, user_id: str) -> bool:
        from urllib.parse import quote

        from installer.engine import StageError

        answer = await self.api(ctx, "GET", f"/_matrix/client/v3/profile/{quote(user_id, safe='@:')}",
                                dry_output='{"errcode":"M_NOT_FOUND"}\n404')
        if answer.status not in (200, 404):
            raise StageError(f"looking up {user_id} failed: HTTP {answer.status} {answer.json().get('errcode', '')}")
        return answer.status == 200

    async def api(self, ctx: StageContext, method: str, path: str, *, body: object | None = None,
                  token: str | None = None, dry_output: str = "{}\n200") -> Response:
        """One request to the client-server or admin API, on the host's loopback."""
        raise NotImplementedError

    async def restart(self, ctx: StageContext) -> None:
        """Restart it and wait until it is ready again."""
        raise NotImplementedError

    async def version(self, ctx: StageContext, *, dry_output: str) -> str:
        """The version it reports itself ("unknown" when it does not say)."""
        raise NotImplementedError

    async def move_data_to(self, ctx: StageContext, wanted: Sequence[object]) -> float:
        """Move its data from its own file into the database server that the deployment settings
        `wanted` name (a DatabaseSettings among them) and run on it with them; returns the seconds
        it was down. On failure it raises, stopped or not ready, for the caller to put the old
        deployment back."""
        raise NotImplementedError

    async def database_in_use(self, ctx: StageContext) -> str | None:
        """Where the deployed homeserver keeps its data: "sqlite" or "postgres"; None while it has
        none yet (a new install)."""
        raise NotImplementedError
