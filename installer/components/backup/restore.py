"""Stage backup.restore (--restore): the server's data put back from a snapshot, after the
install's steps that need no data (SSH, firewall, Caddy, Docker, restic) and before those that
would make a new server's (the homeserver's config and signing key, the database, the first
start). Every component then installs as usual, on the restored files: the same signing key, the
same database.

A marker on the host (/opt/matrix/.restore-in-progress) is there from the first byte fetched to
the last dump loaded. While it is there the server is never started: a rerun of the restore
resumes (what restic fetched is kept; a half-placed deployment is removed and placed again), and
an install refuses to go on (backup.unfinished).
"""

from __future__ import annotations

import json
import shlex
import time

from installer.components.backup import RESTORE_MARKER, RESTORED_FACT
from installer.components.backup.stages import run_script, script_failed
from installer.components.base import BackupDump, BackupSqlite
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.layout import COMPOSE_FILE, PROJECT, RESTORE_SCRIPT, ROOT

q = shlex.quote

WORK = f"{ROOT}/.restore-work"
NOTHING_FETCHED = (2, 20, 21, 22, 23, 24, 25)
"""The fetch's exit statuses that mean it never began (no bucket, wrong password, no snapshot...)."""
"""Where matrix-restore --fetch puts a snapshot before it goes in place."""


def _host(ctx: StageContext) -> str:
    return str(ctx.answers.ssh.host or ctx.facts.get("host.address") or "the host")


async def _marker(ctx: StageContext) -> dict | None:
    raw = await ctx.read_file(RESTORE_MARKER)
    if raw is None:
        return None
    try:
        found = json.loads(raw.decode("utf-8", "replace") or "{}")
    except ValueError:
        found = {}
    return found if isinstance(found, dict) else {}


async def _mark(ctx: StageContext, snapshot: str, phase: str) -> None:
    text = json.dumps({"snapshot": snapshot, "phase": phase, "since": int(time.time())}) + "\n"
    await ctx.put_file(RESTORE_MARKER, text.encode(), mode=0o600, backup=False)


async def _same_kind_of_server(ctx: StageContext, snapshot: str) -> None:
    """The snapshot holds the database this deployment will run on: a dump for each dump the
    components make, SQLite files where they keep them, and no dump none of them would load."""
    items = ctx.deployment.backup_items()
    wanted = {i.name for i in items if isinstance(i, BackupDump)}
    tree = f"{WORK}/{PROJECT.rsplit('/', 1)[1]}"
    listed = await ctx.run(f"find {q(tree)} -maxdepth 1 -type f -name '*.dump' -printf '%f\\n'", sudo=True, check=False,
                           dry_output="\n".join(sorted(wanted)))
    found = set(listed.stdout.split())
    if found != wanted and not ctx.dry_run:
        has = ", ".join(sorted(found)) or "no database dump"
        expected = ", ".join(sorted(wanted)) or "no database dump"
        raise StageError(f"snapshot {snapshot[:8]} holds {has}, but this deployment would load {expected}: it was made "
                         "from a server with another database. Nothing was started",
                         'make the answers match the server that was backed up ([database] engine = "postgres" for a '
                         'postgres.dump, "sqlite" otherwise), then rerun')
    for item in items:
        if isinstance(item, BackupSqlite) and not ctx.dry_run:
            if not await ctx.probe(f"ls {q(tree)}/{q(item.folder)}/*.db >/dev/null 2>&1", sudo=True):
                raise StageError(f"snapshot {snapshot[:8]} holds no SQLite database in {item.folder}/, which this "
                                 "deployment runs on. Nothing was started",
                                 'make the answers match the server that was backed up ([database] engine), then rerun')


async def _what_is_there(ctx: StageContext) -> tuple[dict | None, bool, bool]:
    """(the marker of an unfinished restore, a deployment is there, this run's state restored it
    here already); raises when a deployment is there that the restore was not told to replace."""
    host = _host(ctx)
    marker = await _marker(ctx)
    there = await ctx.probe(f"test -e {q(COMPOSE_FILE)} -o -d {q(PROJECT)}/data", sudo=True)
    done = ctx.facts.get(RESTORED_FACT)
    restored_here = there and isinstance(done, dict) and done.get("host") == host and not ctx.options.replace
    if marker is None and there and not restored_here and not ctx.options.replace:
        raise StageError(
            f"{host} already has a deployment in {PROJECT}: a restore would replace it. Nothing was changed",
            "to replace it, rerun with --replace (it is moved aside, not deleted); to keep it, restore onto another host")
    return marker, there, bool(restored_here)


async def preflight(ctx: StageContext) -> Status:
    """Before the install's steps change anything on the host: a deployment there is replaced only
    when the restore was told so; an unfinished restore is resumed."""
    marker, there, restored_here = await _what_is_there(ctx)
    if marker is not None:
        ctx.log("an earlier restore of this host was interrupted: this run resumes it")
    elif restored_here:
        ctx.log("an earlier run restored this host already")
    elif there:
        ctx.log(f"the deployment in {PROJECT} will be replaced (--replace): it is moved aside, not deleted")
    else:
        ctx.log(f"no deployment in {PROJECT}: the restore makes it")
    return Status.DONE


async def restore(ctx: StageContext) -> Status:
    """The latest snapshot (or --snapshot ID) in place, its database loaded; nothing started."""
    host = _host(ctx)
    marker, there, restored_here = await _what_is_there(ctx)
    done = ctx.facts.get(RESTORED_FACT) or {}
    if marker is None:
        if restored_here:
            ctx.log(f"snapshot {str(done.get('snapshot'))[:8]} was restored here by an earlier run: not again "
                    "(--replace restores again)")
            return Status.UNCHANGED
        partial = False
    else:
        partial = marker.get("phase") == "placing"
        ctx.log(f"a restore of {host} was interrupted ({'while its data went in place' if partial else 'while fetching'}): "
                "resuming it; the half-restored server is never started")
    wanted = ctx.options.snapshot or (marker or {}).get("snapshot") or "latest"
    if not isinstance(wanted, str) or not (wanted == "latest" or wanted.isalnum()):
        wanted = "latest"
    if marker is None:
        await _mark(ctx, wanted, "fetching")

    started = time.monotonic()
    ctx.progress("fetching the snapshot")
    status, output = await run_script(ctx, f"{RESTORE_SCRIPT} --snapshot {q(wanted)} --fetch",
                                      dry_output=f"snapshot 0123456789abcdef 2026-01-01T00:00:00Z\nfetched 0123456789abcdef {WORK}\n")
    if status != 0:
        error = script_failed(status, output, "fetching the snapshot")
        if status in NOTHING_FETCHED and marker is None:
            await ctx.run(f"rm -f {q(RESTORE_MARKER)}", sudo=True)  # nothing came: nothing to resume
            raise StageError(f"{error}. Nothing was changed", error.hint)
        raise StageError(f"{error}. Nothing was started: a rerun of the restore resumes", error.hint)
    found = (output.said("snapshot") or ["? ?"])[-1].split()
    snapshot, taken = found[0], found[1] if len(found) > 1 else "?"
    fetched = time.monotonic() - started
    ctx.log(f"fetched snapshot {snapshot[:8]} (taken {taken}) in {fetched:.1f} s")
    await _same_kind_of_server(ctx, snapshot)

    await _mark(ctx, snapshot, "placing")
    ctx.progress("putting the data in place and loading the database")
    status, output = await run_script(ctx, f"{RESTORE_SCRIPT} --place" + (" --partial" if partial else ""),
                                      dry_output=f"placed {PROJECT}\n")
    if status != 0:
        error = script_failed(status, output, "putting the data in place")
        raise StageError(f"{error}. Nothing was started: a rerun of the restore resumes", error.hint)
    for aside in output.said("aside"):
        ctx.log(f"the deployment that was here is kept at {aside}")
    for loaded in output.said("restored"):
        ctx.log(f"loaded {loaded}")
    await ctx.run(f"rm -f {q(RESTORE_MARKER)}", sudo=True)
    if not ctx.dry_run:
        ctx.remember(RESTORED_FACT, {"snapshot": snapshot, "taken": taken, "host": host})
    ctx.log(f"restored snapshot {snapshot[:8]} in {time.monotonic() - started:.1f} s; the homeserver starts on it next, "
            "with the same signing key")
    return Status.DONE


async def no_unfinished_restore(ctx: StageContext) -> Status:
    """An install never starts a half-restored server: a restore left unfinished is finished first."""
    if ctx.options.mode == "restore":
        return Status.SKIPPED  # backup.restore resumes it
    if await ctx.probe(f"test -e {q(RESTORE_MARKER)}", sudo=True) and not ctx.dry_run:
        raise StageError(f"a restore of {_host(ctx)} was interrupted, and its data is only partly in place: the server "
                         "must not start on it. Nothing was changed",
                         "finish it: rerun `matrix-installer --restore --answers FILE` (it resumes)")
    return ctx.proven()
