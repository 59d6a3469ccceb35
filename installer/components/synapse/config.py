"""Edits to the homeserver.yaml that Synapse's image generated: only the keys we own, with the
file's comments and order kept (ruamel round-trip), so a rerun with the same answers is a no-op."""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from installer.answers import Answers
from installer.components.homeserver import DatabaseSettings, RedisSettings, RegistrationPolicy, TurnSettings, WorkerSettings
from installer.sizing import POOL_MAX, POOL_MIN

if TYPE_CHECKING:
    from installer.sizing import Sizing

COMMENT_MARK = "# matrix-installer: "
"""The start of each line of the comments the edit writes above the keys it sizes (replaced, not
repeated, when the edit runs again)."""


class ConfigError(ValueError):
    pass


@dataclass
class ConfigEdit:
    text: str
    changed: list[str] = field(default_factory=list)
    """The keys that changed: names only, safe to log (never values: some are secrets)."""


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, order and quoting
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def registration_keys(policy: str, *, open_now: bool = False) -> dict[str, Any]:
    """The registration keys for a policy. `open_now` is the brief open window of
    "open-until-admin" (the manual guide's way), which Synapse only accepts with the
    no-verification flag."""
    if policy == "token":
        return {"enable_registration": True, "registration_requires_token": True,
                "enable_registration_without_verification": False}
    if policy == "open-until-admin" and open_now:
        return {"enable_registration": True, "registration_requires_token": False,
                "enable_registration_without_verification": True}
    return {"enable_registration": False, "registration_requires_token": False,
            "enable_registration_without_verification": False}


WORKER_KEYS = ("redis", "instance_map", "stream_writers", "federation_sender_instances", "enable_media_repo",
               "media_instance_running_background_jobs", "run_background_tasks_on", "worker_replication_secret_path")
"""The top-level keys the worker settings own: set while there are workers, gone when there are none."""


def redis_block(redis: RedisSettings) -> dict[str, Any]:
    """Synapse's `redis:`; the password as a file Synapse reads at start (`password_path`, Synapse 1.116+)."""
    return {"enabled": True, "host": redis.host, "port": redis.port, "password_path": redis.password_file}


def worker_keys(workers: WorkerSettings) -> dict[str, Any]:
    """The shared config's worker keys (Synapse's workers documentation): the main process in the
    instance map (and each stream writer), and where each job moved off the main process runs."""
    instance_map: dict[str, Any] = {"main": {"host": workers.main_host, "port": workers.replication_port}}
    for worker in workers.workers:
        if worker.replication_port:
            instance_map[worker.name] = {"host": worker.replication_host, "port": worker.replication_port}
    keys: dict[str, Any] = {"instance_map": instance_map, "worker_replication_secret_path": workers.secret_file}
    if persisters := workers.named("event_persister"):
        keys["stream_writers"] = {"events": persisters}
    if senders := workers.named("federation_sender"):
        keys["federation_sender_instances"] = senders
    if media := workers.named("media"):
        keys["enable_media_repo"] = False  # the media workers serve it (each turns it on in its own file)
        keys["media_instance_running_background_jobs"] = media[0]
    if background := workers.named("background"):
        keys["run_background_tasks_on"] = background[0]
    return keys


def replication_listener(port: int) -> dict[str, Any]:
    """The main process's HTTP replication listener, on the compose network (never published but
    on a private address, for worker hosts)."""
    return {"port": port, "tls": False, "type": "http", "bind_addresses": ["0.0.0.0"],
            "resources": [{"names": ["replication"], "compress": False}]}


def _is_replication_listener(listener: Any) -> bool:
    resources = listener.get("resources") or [] if isinstance(listener, dict) else []
    names = [name for r in resources if isinstance(r, dict) for name in r.get("names") or []]
    return isinstance(listener, dict) and listener.get("type") == "http" and names == ["replication"]


def database_block(db: DatabaseSettings) -> dict[str, Any]:
    """Synapse's `database:` for a Postgres server; no password: libpq reads PGPASSWORD from the
    container's environment (the deployment's root-only env file), so this file never holds it."""
    return {"name": "psycopg2", "txn_limit": 10000, "args": {
        "user": db.user, "database": db.database, "host": db.host, "port": db.port, "cp_min": POOL_MIN, "cp_max": POOL_MAX,
    }}


def wanted_settings(answers: Answers, settings: Sequence[object] = (), *, open_now: bool = False,
                    sizing: Sizing | None = None) -> dict[str, Any]:
    """Every top-level key the deployment sets: from the [synapse] answers, from the typed
    settings other components hand the homeserver (installer.components.homeserver), and from
    the host's size (installer.sizing; None: Synapse's own defaults are left alone)."""
    wanted: dict[str, Any] = {
        "public_baseurl": f"https://{answers.domain.matrix_host}/",
        "report_stats": answers.synapse.report_stats,
        "max_upload_size": answers.synapse.max_upload_size,
    }
    for setting in settings:
        if isinstance(setting, RegistrationPolicy):
            wanted.update(registration_keys(setting.policy, open_now=open_now))
        elif isinstance(setting, DatabaseSettings):
            wanted["database"] = database_block(setting)
        elif isinstance(setting, RedisSettings):
            wanted["redis"] = redis_block(setting)
        elif isinstance(setting, WorkerSettings):
            wanted.update(worker_keys(setting))
        elif isinstance(setting, TurnSettings):
            wanted.update(turn_keys(setting))
    if sizing is not None:
        from installer.sizing import synapse_settings

        wanted.update(synapse_settings(sizing))
    return wanted


def turn_keys(turn: TurnSettings) -> dict[str, Any]:
    """Synapse's TURN keys: the URIs clients are given, how long their credentials last, no
    credentials for guests; the shared secret only when the config stage has read it."""
    keys: dict[str, Any] = {"turn_uris": list(turn.uris), "turn_user_lifetime": turn.user_lifetime,
                            "turn_allow_guests": turn.allow_guests}
    if turn.shared_secret:
        keys["turn_shared_secret"] = turn.shared_secret
    return keys


def with_comments(text: str, comments: dict[str, str]) -> str:
    """`text` with each top-level key of `comments` preceded by its comment (COMMENT_MARK lines,
    wrapped), in place of the one an earlier edit wrote."""
    out: list[str] = []
    for line in text.splitlines():
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*):", line)
        if m and m.group(1) in comments:
            while out and out[-1].startswith(COMMENT_MARK):
                out.pop()
            out += [COMMENT_MARK + part for part in textwrap.wrap(comments[m.group(1)], 96)]
        out.append(line)
    return "\n".join(out) + "\n"


def database_engine(text: str) -> str:
    """"postgres" or "sqlite": which database a homeserver.yaml points Synapse at."""
    try:
        data = _yaml().load(text) or {}
    except Exception:
        raise ConfigError("homeserver.yaml is not valid YAML") from None
    database = data.get("database") if isinstance(data, dict) else None
    name = database.get("name") if isinstance(database, dict) else "sqlite3"
    return "postgres" if name in ("psycopg2", "psycopg") else "sqlite"


def edit_homeserver_config(
    text: str,
    answers: Answers,
    settings: Sequence[object] = (),
    *,
    new_secret: Callable[[], str],
    open_now: bool = False,
    extra: dict[str, Any] | None = None,
    sizing: Sizing | None = None,
) -> ConfigEdit:
    """Apply the deployment's settings to a generated homeserver.yaml. `new_secret` makes a
    registration_shared_secret only when the file has none; `extra` sets further keys
    (a lab's `trusted_key_servers: []`, for instance); `sizing` sets the keys sized for the
    host, each with a comment saying why (installer.sizing)."""
    yaml = _yaml()
    try:
        data = yaml.load(text)
    except Exception as exc:  # ruamel raises many kinds; all mean the same to the user
        raise ConfigError(f"homeserver.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("homeserver.yaml does not hold a mapping of settings")
    if data.get("server_name") != answers.domain.server_name:
        raise ConfigError(
            f"homeserver.yaml is for server_name {data.get('server_name')!r}, not {answers.domain.server_name!r}: "
            "the server name can never change once Synapse has run"
        )
    changed: list[str] = []
    wanted: set[str] = set()  # every key put: a worker key not among them goes

    def put(key: str, value: Any) -> None:
        wanted.add(key)
        if data.get(key) != value:
            data[key] = value
            changed.append(key)

    for key, value in {**wanted_settings(answers, settings, open_now=open_now, sizing=sizing), **(extra or {})}.items():
        put(key, value)
    for key in WORKER_KEYS:  # no workers (any more): their keys go, so the main process does it all again
        if key not in wanted and key in data:
            del data[key]
            changed.append(key)
    workers = next((s for s in settings if isinstance(s, WorkerSettings)), None)
    listeners = data.get("listeners")
    if listeners is None and workers is not None:
        listeners = data["listeners"] = []
    replication = [item for item in listeners or [] if _is_replication_listener(item)]
    want_replication = [replication_listener(workers.replication_port)] if workers else []
    if [dict(item) for item in replication] != want_replication:
        for item in replication:
            listeners.remove(item)
        listeners.extend(want_replication)
        changed.append("listeners[replication]")
    if not data.get("registration_shared_secret"):
        data["registration_shared_secret"] = new_secret()
        changed.append("registration_shared_secret")
    for listener in data.get("listeners") or []:
        if listener.get("type") == "http" and listener.get("port") == 8008 and listener.get("x_forwarded") is not True:
            listener["x_forwarded"] = True
            changed.append("listeners[8008].x_forwarded")
    if not changed:
        return ConfigEdit(text, [])
    out = io.StringIO()
    yaml.dump(data, out)
    text = out.getvalue()
    if sizing is not None:
        from installer.sizing import synapse_comments

        text = with_comments(text, synapse_comments(sizing))
    return ConfigEdit(text, changed)


def read_setting(text: str, key: str) -> Any:
    """One top-level setting of a homeserver.yaml (e.g. the shared secret, kept out of logs)."""
    return (_yaml().load(text) or {}).get(key)
