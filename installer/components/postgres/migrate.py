"""Stage database.migrate (upgrade mode): an SQLite deployment moved to Postgres, when the answers
say so (migrate = "yes") or the person running it agrees.

Postgres is added to the compose project and started; the homeserver moves its data across
(Synapse: synapse_port_db) and starts on it. If anything fails, the deployment is put back as it
was, on SQLite, running, and the stage fails saying so: the SQLite file is only ever read.
"""

from __future__ import annotations

import shlex

from installer.components.homeserver import DATABASE_FACT
from installer.components.postgres import DATA, SERVICE
from installer.components.postgres.stages import collation, ensure_password
from installer.components.upgrade.findings import BackupMade
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.containers import human_size, wait_ready
from installer.host.layout import COMPOSE, COMPOSE_FILE, RESTORE_SCRIPT, compose, in_project
from installer.remote import RemoteCommandError

q = shlex.quote

BYTES_PER_SECOND = 5 * 1024 * 1024
"""A rough pace for synapse_port_db, for the downtime said before asking (measured on the lab:
a small database ports in seconds, most of it start-up)."""


def _question(size: int) -> str:
    seconds = 30 + size / BYTES_PER_SECOND
    return (f"This server runs on SQLite ({human_size(size)}). Move it to Postgres now? Synapse is stopped while its "
            f"data is copied: about {seconds / 60:.0f} min here. The SQLite file is kept as the way back.")


async def move_to_postgres(ctx: StageContext) -> Status:
    homeserver = ctx.deployment.homeserver
    in_use = await homeserver.database_in_use(ctx)
    if in_use == "postgres":
        ctx.log(f"{homeserver.display_name} already runs on Postgres")
        ctx.remember(DATABASE_FACT, "postgres")
        return Status.UNCHANGED
    if in_use != "sqlite" and not ctx.dry_run:
        ctx.log(f"{homeserver.display_name} has no data yet: nothing to move")
        return Status.SKIPPED
    sized = await ctx.run(f"stat -c %s {q(in_project('data/homeserver.db'))}", sudo=True, check=False, dry_output="0")
    size = int(sized.stdout.strip() or 0) if sized.ok and sized.stdout.strip().isdigit() else 0
    if not await ctx.consents(ctx.answers.database.migrate, _question(size), setting="migrate",
                              otherwise="staying on SQLite"):
        return Status.SKIPPED

    from installer.deployment import Deployment

    target = Deployment.build(ctx.answers, "install", {**ctx.facts, DATABASE_FACT: "postgres"})
    compose_before = await ctx.read_file(COMPOSE_FILE)
    config_before = await ctx.read_file(in_project("data/homeserver.yaml"))
    try:
        seconds = await _move(ctx, target)
    except (StageError, RemoteCommandError) as exc:
        why = str(exc).split("\n")[0]
        await _put_back(ctx, compose_before, config_before, why)
        raise AssertionError("unreachable: _put_back raises") from None
    ctx.remember(DATABASE_FACT, "postgres")
    ctx.found(f"{homeserver.display_name} runs on Postgres; it was down for {seconds:.0f} s. "
            f"The SQLite file stays in {in_project('data')} as the way back")
    return Status.DONE


async def _move(ctx: StageContext, target) -> float:
    """Postgres up (its data folder, password and service), checked, then the data moved."""
    if not await ctx.probe(f"test -d {q(in_project(DATA))}", sudo=True):
        await ctx.run(f"install -d -m 0700 -o 70 -g 70 {q(in_project(DATA))}", sudo=True)
    await ensure_password(ctx)
    await ctx.put_file(COMPOSE_FILE, target.compose_file().encode(), mode=0o644, owner="root:root")
    await ctx.run(compose("up", "-d", SERVICE), sudo=True, timeout=600)
    ready, why = await wait_ready(ctx, target.service(SERVICE), fresh=True)
    if not ready:
        raise StageError(f"Postgres did not start: {why}", f"sudo {COMPOSE} logs {SERVICE}")
    if (found := await collation(ctx)) != ("UTF8", "C", "C"):
        raise StageError(f"the new database is {found[0]} with collation {found[1]}; Synapse needs UTF8 with C")
    return await ctx.deployment.homeserver.move_data_to(ctx, target.homeserver_settings())


async def _put_back(ctx: StageContext, compose_before: bytes | None, config_before: bytes | None, why: str) -> None:
    """The SQLite deployment as it was, running; then the failure, said plainly."""
    homeserver = ctx.deployment.homeserver
    ctx.log(f"the move failed ({why}): putting {homeserver.display_name} back on SQLite")
    try:
        if config_before is not None:
            await ctx.put_file(in_project("data/homeserver.yaml"), config_before, owner="991:991", mode=0o600,
                               backup=False, secret=True)
        if compose_before is not None:
            await ctx.put_file(COMPOSE_FILE, compose_before, mode=0o644, owner="root:root", backup=False)
        await ctx.run(compose("up", "-d", "--remove-orphans"), sudo=True, timeout=600)
        ready, not_ready = await wait_ready(ctx, ctx.deployment.service(homeserver.service))
        # The half-filled database goes: the next attempt starts from the SQLite file again.
        await ctx.run(f"rm -rf -- {q(in_project(DATA))}", sudo=True)
    except (StageError, RemoteCommandError) as exc:
        ready, not_ready = False, str(exc).split("\n")[0]
    backup = ctx.take(BackupMade).path or "the newest archive in /opt/matrix/backups"
    if not ready:
        raise StageError(f"the move to Postgres failed ({why}), and {homeserver.display_name} did not come back "
                         f"on SQLite either ({not_ready})", f"restore the backup made first: sudo {RESTORE_SCRIPT} {backup}")
    raise StageError(f"the move to Postgres failed ({why}); {homeserver.display_name} is back on SQLite, running, "
                     f"and its SQLite file is untouched",
                     'see the log above; fix what it says and rerun the upgrade (migrate = "yes"), or keep SQLite '
                     '(migrate = "no")')
