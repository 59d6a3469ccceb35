"""Synapse's half of a move from SQLite to a database server: Synapse stopped, its data copied
by its own synapse_port_db (inside its image), its config switched, and Synapse started on the
new database. The SQLite file is only read, so it stays as the way back."""

from __future__ import annotations

import re
import secrets as _random
import shlex
import time
from collections.abc import Sequence

from installer.components.synapse import CONFIG, CONTAINER, DATA
from installer.engine import StageContext, StageError
from installer.host.containers import show_logs, wait_ready
from installer.host.layout import COMPOSE, compose

q = shlex.quote

PORT_CONFIG = f"{DATA}/homeserver-postgres.yaml"
"""The config with the target database, for synapse_port_db (no password in it: libpq reads PGPASSWORD)."""
PORT_TIMEOUT = 4 * 3600.0
_PROGRESS = re.compile(r"^(\S+): (\d+)% \((\d+)/(\d+)\)$")


async def move_data_to(ctx: StageContext, wanted: Sequence[object]) -> float:
    """Stop Synapse, port its SQLite database into the database server that the deployment
    settings `wanted` name, switch its config to them, start it and wait until it is ready. Returns how many
    seconds Synapse was down. Raises StageError with Synapse stopped or not ready: the caller
    puts the SQLite deployment back."""
    from installer.components.synapse.config import edit_homeserver_config

    raw = await ctx.read_file(CONFIG)
    if raw is None and ctx.dry_run:  # a dry run reads nothing: the plan goes on with the config the image makes
        from installer.components.synapse.stages import DRY_HOMESERVER

        raw = DRY_HOMESERVER.format(server_name=ctx.answers.domain.server_name).encode()
    if raw is None:
        raise StageError(f"{CONFIG} is gone", "restore the backup made before the move")
    # The config Synapse will run with: synapse_port_db reads the target database from a whole
    # homeserver.yaml (secrets and all), so it is written as private as the real one.
    moved = edit_homeserver_config(raw.decode("utf-8"), ctx.answers, wanted,
                                   new_secret=lambda: ctx.secret(_random.token_urlsafe(36))).text.encode()
    await _background_updates_done(ctx)
    await ctx.run(compose("stop", CONTAINER), sudo=True, timeout=300)
    stopped = time.monotonic()
    ctx.log("Synapse is stopped: nothing reaches it until it runs on Postgres (or back on SQLite)")
    await ctx.put_file(PORT_CONFIG, moved, owner="991:991", mode=0o600, backup=False, secret=True)
    try:
        await _port(ctx)
    finally:
        await ctx.run(f"rm -f -- {q(PORT_CONFIG)}", sudo=True)
    await ctx.put_file(CONFIG, moved, owner="991:991", mode=0o600, secret=True)
    await ctx.run(compose("up", "-d", "--remove-orphans"), sudo=True, timeout=600)
    ready, why = await wait_ready(ctx, ctx.deployment.service(CONTAINER), fresh=True)
    if not ready:
        await show_logs(ctx, CONTAINER, 30)
        raise StageError(f"Synapse is not ready on Postgres: {why}", f"see its log above (sudo {COMPOSE} logs {CONTAINER})")
    return time.monotonic() - stopped


BACKGROUND_TIMEOUT = 1800.0
_PENDING = ("import sqlite3; db = sqlite3.connect('file:/data/homeserver.db?mode=ro', uri=True); "
            "print(db.execute('SELECT count(*) FROM background_updates').fetchone()[0])")


async def _background_updates_done(ctx: StageContext) -> None:
    """synapse_port_db refuses a database with background updates still pending (a young server
    has a minute of them): wait for Synapse to finish them, while it still serves."""
    from installer.host.containers import run_quietly

    command = f"docker exec {CONTAINER} python3 -c {q(_PENDING)}"
    waited, first = 0.0, True
    while True:
        result = await run_quietly(ctx, command, shown=first, dry_output="0")
        pending = result.stdout.strip()
        if result.ok and pending == "0":
            return
        if waited >= BACKGROUND_TIMEOUT:
            raise StageError(f"Synapse still has background updates to run after {BACKGROUND_TIMEOUT / 60:.0f} min "
                             f"({pending or result.stderr.strip()[-120:]})",
                             "let the server run a while (it finishes them by itself), then rerun the upgrade")
        ctx.progress(f"waiting for Synapse's background updates to finish ({pending or '?'} left): "
                     "the copy needs them done")
        first = False
        await ctx.sleep(5)
        waited += 5


async def _port(ctx: StageContext) -> None:
    """synapse_port_db in a one-off container of Synapse's image, on the compose network, its
    progress (tables and rows) shown as it goes."""
    tables: dict[str, tuple[int, int]] = {}

    def log(line: str, kind: str) -> None:
        if m := _PROGRESS.match(line.strip()):
            tables[m.group(1)] = (int(m.group(3)), int(m.group(4)))
            rows = sum(done for done, _ in tables.values())
            ctx.progress(f"copying {m.group(1)}: {m.group(3)}/{m.group(4)} rows ({len(tables)} tables, {rows} rows so far)")
            if m.group(2) != "100":
                return  # only each table's last line goes to the log
        ctx.log(line, kind)

    command = compose("run", "--rm", "--no-deps", "-T", "-e", "PYTHONUNBUFFERED=1", "--entrypoint", "synapse_port_db",
                      CONTAINER, "--sqlite-database", "/data/homeserver.db",
                      "--postgres-config", f"/data/{PORT_CONFIG.rsplit('/', 1)[1]}")
    result = await ctx.remote.run(command, log=log, sudo=True, check=False, timeout=PORT_TIMEOUT,
                                  dry_output="Copying to postgres...\nusers: 100% (1/1)\n")
    if not result.ok:
        tail = "; ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise StageError(f"synapse_port_db stopped with status {result.exit_status}" + (f": {tail}" if tail else ""),
                         "see its output above")
    rows = sum(done for done, _ in tables.values())
    ctx.found(f"copied {len(tables)} tables, {rows} rows")
