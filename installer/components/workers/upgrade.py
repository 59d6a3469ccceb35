"""Upgrade mode with workers, in the order Synapse asks for: after the backup, the workers stop
(workers.stop); the main process upgrades and migrates the database (upgrade.images, which leaves
the workers stopped: their services say `upgrade_after`); then the workers start on the new
version, on every host (workers.start), and every process must report the same version.

Before anything, workers.preflight refuses a deployment whose processes already run a mix of
versions: a worker older or newer than the main process may misread the database."""

from __future__ import annotations

import shlex

from installer.components.upgrade.findings import Findings
from installer.components.workers import layout_of
from installer.components.workers.hosts import HostContext, each_host
from installer.components.workers.layout import Layout, Worker
from installer.components.workers.services import host_services
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.containers import show_logs, wait_ready
from installer.host.layout import COMPOSE, compose

q = shlex.quote

VERSION = "python3 -c 'import synapse; print(synapse.__version__)'"
"""Asked inside each worker's container: the Synapse package it runs."""


async def worker_versions(ctx: StageContext, workers: list[Worker], *, dry: str) -> dict[str, str]:
    """name -> the Synapse version its container runs ("" when it does not answer)."""
    found = {}
    for worker in workers:
        result = await ctx.run(f"docker exec {q(worker.service)} {VERSION}", sudo=True, check=False, dry_output=dry)
        lines = result.stdout.strip().splitlines()
        found[worker.name] = lines[-1].strip() if result.ok and lines else ""
    return found


async def all_versions(ctx: StageContext, layout: Layout, *, dry: str) -> dict[str, str]:
    """Every worker's version, on the main host and on each worker host."""
    found = await worker_versions(ctx, layout.on(""), dry=dry)

    async def on_host(hctx: HostContext) -> dict[str, str]:
        return await worker_versions(hctx, layout.on(hctx.label), dry=dry)

    for host_found in await each_host(ctx, list(layout.hosts), on_host):
        found.update(host_found)
    return found


def _release(version: str) -> str:
    """"1.163.2" of "1.163.2 (b=master,abc123)": what a process reports, without build details."""
    return version.split()[0] if version.split() else ""


def mix(main: str, versions: dict[str, str], layout: Layout) -> list[str]:
    where = {w.name: (w.host or "the main host") for w in layout.workers}
    return [f"{name} on {where[name]} runs {version or 'an unknown version (it did not answer)'}"
            for name, version in versions.items() if _release(version) != _release(main)]


async def same_version(ctx: StageContext) -> Status:
    """Every worker runs the main process's Synapse version (a mix is refused before anything changes)."""
    found = ctx.take(Findings)
    layout = layout_of(ctx.deployment)
    main = found.homeserver_version
    versions = await all_versions(ctx, layout, dry="OLD-VERSION")
    if ctx.dry_run:
        ctx.log(f"a real run stops here unless all {len(versions)} workers run the main process's version")
        return Status.PLANNED
    wrong = mix(main, versions, layout)
    if wrong:
        raise StageError(f"the workers and the main process run different Synapse versions (the main process: {main}): "
                         + "; ".join(wrong) + ". Nothing was changed",
                         "put every host on the main process's image (on a worker host: sudo "
                         f"{COMPOSE} pull, then up -d), or rerun the install, then the upgrade")
    ctx.log(f"all {len(versions)} workers run Synapse {main}, as the main process does")
    return ctx.proven()


async def stop(ctx: StageContext) -> Status:
    """The workers stopped on every host before the main process upgrades (it migrates the database
    the workers read), when there is anything to upgrade."""
    found = ctx.take(Findings)
    layout = layout_of(ctx.deployment)
    if not found.anything_to_upgrade and not ctx.dry_run:
        ctx.log("nothing will change: the workers keep running")
        return Status.UNCHANGED
    await ctx.run(compose("stop", *(w.service for w in layout.on(""))), sudo=True, timeout=300)

    async def on_host(hctx: HostContext) -> None:
        await hctx.run(compose("stop"), sudo=True, timeout=300)

    await each_host(ctx, list(layout.hosts), on_host)
    ctx.log(f"stopped {len(layout.workers)} workers on {1 + len(layout.hosts)} host(s)")
    return Status.DONE


async def start(ctx: StageContext) -> Status:
    """The workers on the new version: the main host's recreated from its compose file, each worker
    host's pulled and recreated; all ready, and all on the main process's version."""
    found = ctx.take(Findings)
    d = ctx.deployment
    layout = layout_of(d)
    if not found.anything_to_upgrade and not ctx.dry_run:
        ctx.log("nothing was upgraded: the workers run as they did")
        return Status.UNCHANGED
    await ctx.run(compose("up", "-d", "--remove-orphans"), sudo=True, timeout=900)
    for worker in layout.on(""):
        ready, why = await wait_ready(ctx, d.service(worker.service), fresh=True)
        if not ready:
            await show_logs(ctx, worker.service)
            raise StageError(f"{worker.service} is not ready on the new version ({why}); its last log lines are above",
                             f"on the host: sudo {COMPOSE} logs {worker.service}")

    async def on_host(hctx: HostContext) -> None:
        pulled = await hctx.run(compose("pull", "--quiet"), sudo=True, check=False, timeout=900)
        if not pulled.ok:
            hctx.log("warning: could not pull the newest image; the workers start on the image already on this host")
        await hctx.run(compose("up", "-d", "--remove-orphans"), sudo=True, timeout=900)
        for service in host_services(d, layout, hctx.label):
            ready, why = await wait_ready(hctx, service, fresh=True)
            if not ready:
                await show_logs(hctx, service.name)
                raise StageError(f"{service.name} on {hctx.label} is not ready on the new version ({why})",
                                 f"on {hctx.label}: sudo {COMPOSE} logs {service.name}")

    await each_host(ctx, list(layout.hosts), on_host)
    main = await d.homeserver.version(ctx, dry_output='{"server_version": "NEW-VERSION"}')
    versions = await all_versions(ctx, layout, dry="NEW-VERSION")
    wrong = mix(main, versions, layout) if not ctx.dry_run else []
    if wrong:
        raise StageError(f"after the upgrade the workers and the main process run different versions (the main process: "
                         f"{main}): " + "; ".join(wrong),
                         "a worker host's image is not the main host's: pull it there (or load it), then rerun the upgrade")
    ctx.log(f"all {len(versions)} workers run Synapse {main}, as the main process does")
    return Status.DONE
