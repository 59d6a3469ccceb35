"""Postgres's stages: postgres.config (its data folder and root-only password file, before the
services start), postgres.check (the database is UTF8 with C collation, as Synapse requires), and
in upgrade mode postgres.version (a new major version is never taken by a pull)."""

from __future__ import annotations

import re
import secrets as _random
import shlex

from installer.components.postgres import DATA, DATABASE, ENV_FILE, SERVICE, USER, major
from installer.components.upgrade.findings import Findings
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.layout import COMPOSE, in_project

q = shlex.quote

UID = "70:70"
"""The postgres user of the official alpine image: its data folder belongs to it."""
DRY_ENV = "POSTGRES_PASSWORD=DRY-RUN\nPGPASSWORD=DRY-RUN\n"


def env_text(password: str) -> str:
    return f"POSTGRES_PASSWORD={password}\nPGPASSWORD={password}\n"


def password_in(text: str) -> str | None:
    m = re.search(r"^POSTGRES_PASSWORD=(\S+)$", text, re.M)
    return m.group(1) if m else None


async def ensure_password(ctx: StageContext) -> bool:
    """The root-only env file holding the database password: kept when there, made when not (a
    new password only while there is no database it would have to match). Returns whether it
    changed anything."""
    path = in_project(ENV_FILE)
    raw = await ctx.read_file(path)
    if raw is not None and (password := password_in(raw.decode("utf-8", "replace"))):
        ctx.secret(password)
        return await ctx.put_file(path, env_text(password).encode(), mode=0o600, owner="root:root", secret=True)
    if await ctx.probe(f"test -s {q(in_project(DATA))}/PG_VERSION", sudo=True) and not ctx.dry_run:
        raise StageError(f"the Postgres database in {in_project(DATA)} exists, but its password file {path} is gone",
                         f"put back {path} from a backup (it holds POSTGRES_PASSWORD=...), then rerun")
    password = ctx.secret(_random.token_urlsafe(32))
    await ctx.put_file(path, env_text(password).encode(), mode=0o600, owner="root:root", secret=True)
    ctx.log(f"made the database password: in {path} only (root-only, 0600)")
    return True


async def data_major(ctx: StageContext) -> str:
    """The major version of the database files in the data folder ("" when there are none yet)."""
    raw = await ctx.read_file(f"{in_project(DATA)}/PG_VERSION")
    return raw.decode().strip() if raw else ""


async def prepare(ctx: StageContext) -> Status:
    """The data folder and the password file, checked against what is there: an SQLite
    deployment is not silently left behind, and a database of another major version is not
    opened by a newer server (that takes a dump and restore)."""
    changed = False
    homeserver = ctx.deployment.homeserver
    if await homeserver.database_in_use(ctx) == "sqlite":
        raise StageError(
            f"this server's {homeserver.display_name} keeps its data in SQLite, and an install does not move it: a new "
            "Postgres database would start empty, without its accounts and rooms. Nothing was changed",
            'move it with `matrix-installer --upgrade` and [database] migrate = "yes" in the answers, '
            'or keep SQLite with [database] engine = "sqlite"',
        )
    have, want = await data_major(ctx), major(ctx.answers.database.image)
    if have and want and have != want:
        raise StageError(f"the database in {in_project(DATA)} is Postgres {have}, and the answers ask for the image "
                         f"{ctx.answers.database.image} (Postgres {want}): a new major version cannot open it",
                         f'keep image = "postgres:{have}-alpine" in [database]; moving to {want} takes a dump '
                         "and restore (pg_dump, then pg_restore into a new data folder)")
    if not await ctx.probe(f"test -d {q(in_project(DATA))}", sudo=True):
        await ctx.run(f"install -d -m 0700 -o 70 -g 70 {q(in_project(DATA))}", sudo=True)
        changed = True
    if await ensure_password(ctx):
        changed = True
    return Status.DONE if changed else Status.UNCHANGED


async def collation(ctx: StageContext) -> tuple[str, str, str]:
    """(encoding, collate, ctype) of Synapse's database, as Postgres reports them."""
    query = ("SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
             f"WHERE datname = '{DATABASE}'")
    result = await ctx.run(f"docker exec {SERVICE} psql -U {USER} -d {DATABASE} -AtF ' ' -c {q(query)}", sudo=True,
                           dry_output="UTF8 C C")
    words = result.stdout.split()
    return (words[0], words[1], words[2]) if len(words) == 3 else ("?", "?", "?")


async def verify(ctx: StageContext) -> Status:
    """UTF8 with C collation: what Synapse needs, proven on the running server."""
    encoding, collate, ctype = await collation(ctx)
    if (encoding, collate, ctype) != ("UTF8", "C", "C"):
        raise StageError(f"Synapse's database is {encoding} with collation {collate}/{ctype}; Synapse needs UTF8 with C",
                         f"it was made before this installer managed it: recreate it (pg_dump, then a new database made "
                         f"with --encoding=UTF8 --lc-collate=C --lc-ctype=C) or ask: sudo {COMPOSE} logs {SERVICE}")
    ctx.found(f"Synapse's database is {encoding} with C collation")
    return ctx.proven()


async def same_major(ctx: StageContext) -> Status:
    """What the pull brought for Postgres must be the data's major version: a new major needs a
    dump and restore, which an upgrade never does by itself."""
    found = ctx.take(Findings)
    service = next((s for s in found.services if s.service == SERVICE), None)
    if service is None:
        ctx.log("no postgres service in this deployment")
        return Status.SKIPPED
    have = await data_major(ctx)
    version = await ctx.run(f"docker run --rm --entrypoint postgres -- {q(service.newest.id)} --version", sudo=True,
                            check=False, dry_output="postgres (PostgreSQL) 17.0")
    m = re.search(r"\(PostgreSQL\) (\d+)", version.stdout)
    newest = m.group(1) if m else ""
    if ctx.answers.database.image != service.image_ref and major(ctx.answers.database.image) != major(service.image_ref):
        ctx.log(f"note: the answers name {ctx.answers.database.image}; the deployment runs {service.image_ref}. "
                "An upgrade keeps the deployment's major version: moving to another takes a dump and restore")
    if have and newest and have != newest and not ctx.dry_run:
        raise StageError(f"{service.image_ref} now holds Postgres {newest}, but the database is Postgres {have}: "
                         "nothing was upgraded",
                         f"pin the major in {in_project('docker-compose.yml')} (postgres:{have}-alpine) and rerun; "
                         f"moving to {newest} takes a dump and restore")
    ctx.log(f"Postgres {have or '?'} data, image {service.image_ref} is Postgres {newest or '?'}: the same major")
    return Status.UNCHANGED
