"""Upgrade mode: find the deployment, show what will change, back up, then upgrade.

`preflight` changes nothing but the local image cache (it pulls, to compare digests); when it
fails the engine skips every later stage, so nothing is upgraded. What it finds is its output
(Findings) for the later stages. A rerun with nothing new reports each stage `unchanged` (the
reboot `skipped`).

The dry-run prints the commands of the path that changes things: the recording back-end answers
every command with its `dry_output`, and the stages do not stop at "nothing to do" in a dry run.
"""

from __future__ import annotations

import json
import shlex
import time

from installer.components.upgrade.findings import (
    BackupMade,
    Findings,
    ReplacedImages,
    ServiceImages,
    parse_apt_simulation,
    parse_apt_summary,
    parse_apt_upgradable,
    parse_backup_output,
    parse_caddy_version,
    parse_held,
)
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host import containers
from installer.host.apt import APT_GET
from installer.host.containers import (
    ImageInfo,
    dry_container,
    human_size,
    image,
    inspect,
    parse_reclaimed,
    run_quietly,
    short_id,
    show_logs,
    wait_ready,
)
from installer.host.layout import BACKUP_DIR, BACKUP_SCRIPT, COMPOSE, COMPOSE_FILE, PROJECT, RESTORE_SCRIPT, compose

q = shlex.quote

REBOOT_REQUIRED = "/var/run/reboot-required"
REBOOT_TIMEOUT = 600.0
REBOOT_GRACE = 5.0
"""Seconds between asking for the reboot and the first look: the host is still going down."""
REBOOT_MARKER = "/run/matrix-installer.reboot-pending"
"""Made just before the reboot; /run is a tmpfs, so it is gone once the host has rebooted (a
container host keeps its kernel's boot ID, so the boot ID alone would not tell)."""
BOOT_STATE = f"cat /proc/sys/kernel/random/boot_id; test -e {REBOOT_MARKER} && echo pending || true"
REBOOT_QUESTION = "The OS asks for a reboot (kernel update). Reboot now?"


def _host(ctx: StageContext) -> str:
    return ctx.answers.ssh.host or ctx.facts.get("host.address") or ctx.answers.domain.matrix_host or "the host"


def _display(ctx: StageContext, service: str) -> str:
    """How a service is named in messages: the homeserver by its name ("Synapse")."""
    homeserver = ctx.deployment.homeserver
    return homeserver.display_name if service == homeserver.service else service


# --- upgrade.preflight ----------------------------------------------------------------------------

async def _compose_images(ctx: StageContext) -> dict[str, str]:
    """service -> image, as the compose file on the host names them: what `docker compose up` runs."""
    dry = json.dumps({"services": {s.name: {"image": s.image} for s in ctx.deployment.services}})
    result = await ctx.run(f"{COMPOSE} config --format json", sudo=True, check=False, dry_output=dry)
    try:
        services = json.loads(result.stdout or "{}").get("services") or {}
    except ValueError:
        services = {}
    images = {name: str(spec.get("image", "")) for name, spec in services.items() if isinstance(spec, dict)}
    if not result.ok or not images:
        raise StageError(f"{COMPOSE_FILE} cannot be read by docker compose",
                         "\n".join(result.stderr.splitlines()[-3:]) or None)
    return images


async def _same_database(ctx: StageContext) -> None:
    """The plan was made from what the state says is deployed: its database must be what the
    homeserver's config says (a state from before it was recorded, or lost, says nothing)."""
    from installer.components.homeserver import DATABASE_FACT, DatabaseSettings

    d = ctx.deployment
    planned = next((s.engine for s in d.homeserver_settings() if isinstance(s, DatabaseSettings)), "sqlite")
    in_use = await d.homeserver.database_in_use(ctx) or "sqlite"
    if in_use != planned and not ctx.dry_run:
        ctx.remember(DATABASE_FACT, in_use)
        raise StageError(f"this server runs on {in_use}, which the run's state did not say (it planned for {planned}); "
                         "it is recorded now. Nothing was changed",
                         "rerun the same upgrade: it plans for what is deployed")
    if DATABASE_FACT not in ctx.facts and not ctx.dry_run:
        ctx.remember(DATABASE_FACT, in_use)


async def _pull(ctx: StageContext) -> bool:
    """Pull the newest image of every service; False (with a warning) when the registry cannot be reached."""
    ctx.progress("pulling the newest images")
    result = await ctx.run(f"{COMPOSE} pull --quiet", sudo=True, check=False, timeout=900)
    if not result.ok:
        ctx.log("warning: could not pull the newest images (see above); comparing with the images already on the host")
    return result.ok


async def preflight(ctx: StageContext) -> Status:
    """Find the deployment and show what the upgrade will change, changing nothing."""
    host = _host(ctx)
    d = ctx.deployment
    homeserver = d.homeserver
    if not (await ctx.run(f"test -f {q(COMPOSE_FILE)}", sudo=True, check=False)).ok:
        raise StageError(
            f"nothing to upgrade: no deployment found at {PROJECT} on {host}; run the install first",
            "run matrix-installer --answers FILE (without --upgrade) to install",
        )
    await _same_database(ctx)
    images = await _compose_images(ctx)
    containers = {}
    for service in images:
        info = await inspect(ctx, service, dry_output=dry_container(images[service]))
        if info is None:
            raise StageError(
                f"nothing to upgrade: {COMPOSE_FILE} exists on {host} but there is no `{service}` container; run the install first",
                "run the install again: it creates and starts the containers",
            )
        if not info.running:
            raise StageError(
                f"the `{service}` container on {host} is {info.status}, not running: upgrading now would hide why",
                f"look at `sudo docker logs {service}`, start it with `sudo {COMPOSE} up -d`, then rerun the upgrade",
            )
        containers[service] = info
    if homeserver.service in images and images[homeserver.service] != ctx.answers.synapse.image:
        ctx.log(f"note: the deployment runs {images[homeserver.service]}; the answers say {ctx.answers.synapse.image}. "
                "The upgrade keeps the deployment's images; rerun the install to switch.")

    version = await homeserver.version(ctx, dry_output='{"server_version": "OLD-VERSION"}')
    running = {s: await image(ctx, c.image_id, dry_output=f"{c.image_id} 0 null null") or ImageInfo(c.image_id)
               for s, c in containers.items()}
    pulled = await _pull(ctx)
    services = []
    for service, ref in images.items():
        newest = await image(ctx, ref, dry_output="sha256:NEWIMAGE 0 null null")
        if newest is None:
            raise StageError(f"the image {ref} is not on the host and could not be pulled",
                             "check the host reaches the registry (docker pull), then rerun")
        services.append(ServiceImages(service, ref, containers[service], running[service], newest))

    ctx.progress("looking for OS package updates")
    await ctx.run(f"{APT_GET} update", sudo=True, timeout=600)
    upgradable = await ctx.run("apt list --upgradable", check=False)
    held = await ctx.run("apt-mark showhold", check=False)
    simulated = await ctx.run(f"{APT_GET} -s --with-new-pkgs upgrade", sudo=True, check=False)
    caddy = await ctx.run("caddy version", check=False, dry_output="CADDY-VERSION")
    reboot_pending = (await ctx.run(f"test -f {REBOOT_REQUIRED}", check=False)).ok and not ctx.dry_run

    found = Findings(
        services=services,
        homeserver=homeserver.service,
        homeserver_version=version,
        packages=parse_apt_simulation(simulated.stdout),
        upgradable=parse_apt_upgradable(upgradable.stdout),
        held=parse_held(held.stdout),
        caddy_version=(parse_caddy_version(caddy.stdout) or caddy.stdout.strip()[:40]) if caddy.ok else "not installed",
        reboot_pending=reboot_pending,
        pulled=pulled,
    )
    ctx.give(found)
    lines = describe_findings(found, homeserver.display_name)
    if ctx.dry_run:  # every value below is made up: said once, above them
        lines[0] = "What the upgrade will change, as a dry run assumes it (it looks at nothing; each value below is made up):"
    for line in lines:
        ctx.log(line)
    ctx.remember("upgrade.synapse_version", version)
    # It changes nothing: what it reports is whether the upgrade has work to do.
    return Status.DONE if found.anything_to_upgrade or ctx.dry_run else Status.UNCHANGED


def describe_findings(found: Findings, homeserver_name: str = "Synapse") -> list[str]:
    """The "what will change" summary shown before anything changes."""
    lines = ["What the upgrade will change:"]
    planned = found.packages
    if planned:
        shown = ", ".join(str(p) for p in planned[:8]) + (f", and {len(planned) - 8} more" if len(planned) > 8 else "")
        lines.append(f"  OS packages: {len(planned)} to upgrade: {shown}")
    else:
        lines.append("  OS packages: all up to date")
    if found.held:
        lines.append(f"  held (left as they are): {', '.join(found.held)}")
    kept = [name for name in found.kept_back if name not in found.held]
    if kept:
        lines.append(f"  kept back (a full-upgrade would remove packages for them): {', '.join(kept)}")
    for service in found.services:
        is_homeserver = service.service == found.homeserver
        name = homeserver_name if is_homeserver else service.service
        running = (f"{found.homeserver_version} " if is_homeserver else "") + f"({service.image_ref}, {service.running.describe()})"
        if service.new_image:
            new_version = service.newest.version or "version known once it starts"
            lines.append(f"  {name}: {running} -> new {service.newest.describe()} ({new_version})")
        else:
            lines.append(f"  {name}: {running} is the newest image for {service.image_ref}")
    lines.append(f"  Caddy: {found.caddy_version}" + (" (upgraded with the OS packages)" if any(p.name == "caddy" for p in planned) else ""))
    if found.reboot_pending:
        lines.append("  Reboot: the OS already asks for one")
    if not found.anything_to_upgrade:
        lines.append("Nothing to upgrade.")
    return lines


# --- upgrade.backup -------------------------------------------------------------------------------

async def _install_scripts(ctx: StageContext) -> None:
    from installer.render import render_backup_scripts

    backup, restore = render_backup_scripts(ctx.deployment.backup_items(), keep=ctx.answers.upgrade.keep_backups)
    await ctx.put_file(BACKUP_SCRIPT, backup.encode(), mode=0o700, owner="root:root", backup=False)
    await ctx.put_file(RESTORE_SCRIPT, restore.encode(), mode=0o700, owner="root:root", backup=False)


async def backup(ctx: StageContext) -> Status:
    """A timestamped, restorable archive of the deployment (each component says what it holds),
    the newest N kept."""
    found = ctx.take(Findings)
    if not found.anything_to_upgrade and not ctx.dry_run:
        ctx.log("nothing will change, so no new backup is needed")
        ctx.give(BackupMade(""))
        return Status.UNCHANGED
    await _install_scripts(ctx)
    ctx.progress("archiving the deployment's data")
    result = await ctx.run(BACKUP_SCRIPT, sudo=True, timeout=3600,
                           dry_output=f"backup {BACKUP_DIR}/synapse-YYYYmmddTHHMMSSZ.tar.gz 0")
    made = parse_backup_output(result.stdout)
    if made is None:
        raise StageError("the backup script did not report an archive", "see its output above")
    ctx.give(BackupMade(made.path))
    ctx.remember("upgrade.last_backup", made.path)
    ctx.log(f"backup: {made.path} ({human_size(made.size)}, mode 0600, owner root)")
    for old in made.removed:
        ctx.log(f"removed an older backup (keeping {ctx.answers.upgrade.keep_backups}): {old}")
    ctx.log(f"to restore it: sudo {RESTORE_SCRIPT} {made.path}")
    return Status.DONE


# --- upgrade.packages -----------------------------------------------------------------------------

async def upgrade_packages(ctx: StageContext) -> Status:
    """apt-get upgrade, non-interactive, keeping edited config files; held packages stay."""
    found = ctx.take(Findings)
    if not found.packages and not ctx.dry_run:
        ctx.log("no OS package to upgrade" + (f" (held: {', '.join(found.held)})" if found.held else ""))
        return Status.UNCHANGED
    ctx.progress("upgrading OS packages")
    # preflight ran `apt-get update` moments ago in this same run.
    result = await ctx.run(f"{APT_GET} --with-new-pkgs upgrade", sudo=True, timeout=3600)
    summary = parse_apt_summary(result.stdout)
    if summary is None:
        return Status.DONE
    ctx.log(f"{summary.upgraded} upgraded, {summary.newly_installed} newly installed, {summary.not_upgraded} not upgraded")
    return Status.DONE if summary.changed else Status.UNCHANGED


# --- upgrade.reboot -------------------------------------------------------------------------------

async def _boot_state(ctx: StageContext, *, first: bool) -> tuple[str, bool] | None:
    """(boot ID, whether the marker is still there), or None while the host does not answer."""
    try:
        result = await run_quietly(ctx, BOOT_STATE, shown=first, sudo=False, dry_output="BOOT-ID")
    except Exception:  # the connection is down while the host reboots: keep polling
        return None
    lines = result.stdout.split()
    return (lines[0], "pending" in lines[1:]) if result.ok and lines else None


async def reboot_if_required(ctx: StageContext) -> Status:
    """Reboot when the OS asks for it (with consent), then wait for SSH and every service."""
    required = await ctx.probe(f"test -f {REBOOT_REQUIRED}")
    if not required and not ctx.dry_run:
        ctx.log("no reboot required")
        return Status.SKIPPED
    if ctx.dry_run:
        ctx.log(f"if {REBOOT_REQUIRED} exists, reboot = \"{ctx.answers.upgrade.reboot}\" in the answers decides:")
    else:
        why = await ctx.run(f"cat {REBOOT_REQUIRED}.pkgs", check=False)
        packages = " ".join(why.stdout.split())
        ctx.log("the OS asks for a reboot" + (f" (for {packages})" if packages else ""))

    if not await ctx.consents(ctx.answers.upgrade.reboot, REBOOT_QUESTION, setting="reboot",
                              otherwise="not rebooting (reboot later with `sudo reboot`)"):
        return Status.SKIPPED

    before = await _boot_state(ctx, first=True)
    await ctx.run(f"touch {REBOOT_MARKER}", sudo=True)
    # systemd-run lets this command return before the reboot cuts the connection.
    await ctx.run("systemd-run --no-block --on-active=2 --timer-property=AccuracySec=100ms /bin/systemctl reboot", sudo=True)
    ctx.log("rebooting; waiting for the host to come back")
    await ctx.sleep(REBOOT_GRACE)
    deadline = time.monotonic() + REBOOT_TIMEOUT
    while True:
        now = await _boot_state(ctx, first=False)
        if now is not None and (ctx.dry_run or not now[1] or (before is not None and now[0] != before[0])):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise StageError(
                f"the host did not come back within {REBOOT_TIMEOUT / 60:.0f} minutes of the reboot",
                "check it in the cloud console (serial console), then rerun the upgrade",
            )
        ctx.progress(f"waiting for SSH after the reboot: {left:.0f} s left", 1 - left / REBOOT_TIMEOUT)
        await ctx.sleep(containers.POLL_SECONDS * 2)
    ctx.log("the host is back up")
    for service in ctx.deployment.services:
        ready, why = await wait_ready(ctx, service)
        if not ready:
            raise StageError(f"{_display(ctx, service.name)} is not ready after the reboot: {why}",
                             f"look at `sudo docker logs {service.name}`; start it with `sudo {COMPOSE} up -d`")
    return Status.DONE


# --- upgrade.images -------------------------------------------------------------------------------

async def upgrade_images(ctx: StageContext) -> Status:
    """Recreate the services whose image has a newer version; each one that is not ready on it
    goes back to its previous image."""
    found = ctx.take(Findings)
    changing = found.new_images if not ctx.dry_run else found.services
    if not changing:
        for service in found.services:
            ctx.log(f"{_display(ctx, service.service)} already runs the newest image for {service.image_ref} "
                    f"({short_id(service.newest.id)})")
        ctx.give(ReplacedImages({}))
        return Status.UNCHANGED

    replaced = {s.container.image_id: s.running.size for s in changing}
    ctx.give(ReplacedImages(replaced))
    for service in changing:
        ctx.remember(f"upgrade.previous_image.{service.service}", service.container.image_id)
    ctx.progress("recreating the services on their new images")
    # Services that must follow another's upgrade (workers reading the database the homeserver
    # migrates) stay stopped: the component that declared them starts them once this is done.
    held = {s.name for s in ctx.deployment.services if s.upgrade_after}
    leading = [name for name in (s.service for s in found.services) if name not in held]
    await ctx.run(compose("up", "-d", "--remove-orphans", *(leading if held else ())), sudo=True, timeout=600)
    failures = []
    for service in (s for s in changing if s.service not in held):
        ready, why = await wait_ready(ctx, ctx.deployment.service(service.service), image_id=service.newest.id, fresh=True)
        if not ready:
            failures.append((service, why))
    if not failures:
        version = await ctx.deployment.homeserver.version(ctx, dry_output='{"server_version": "NEW-VERSION"}')
        for service in changing:
            if service.service == found.homeserver:
                ctx.log(f"{_display(ctx, service.service)} {found.homeserver_version} -> {version} "
                        f"({short_id(service.container.image_id)} -> {short_id(service.newest.id)})")
                ctx.remember("upgrade.synapse_version", version)
            else:
                ctx.log(f"{service.service}: {short_id(service.container.image_id)} -> {short_id(service.newest.id)}"
                        + (f" ({service.newest.version})" if service.newest.version else ""))
        return Status.DONE
    backup = ctx.take(BackupMade).path or f"{BACKUP_DIR}/ (the newest synapse-*.tar.gz)"
    for service, why in failures:
        await _roll_back(ctx, found, service, why, backup)
    raise AssertionError("unreachable: _roll_back raises")


async def _roll_back(ctx: StageContext, found: Findings, service: ServiceImages, why: str, backup: str) -> None:
    """Point the service's tag back at its previous image (still on the host: nothing pruned it)
    and recreate it; always ends in a StageError saying where things stand."""
    name = _display(ctx, service.service)
    is_homeserver = service.service == found.homeserver
    failed = (f"{service.newest.version} (image {short_id(service.newest.id)})" if service.newest.version
              else f"image {short_id(service.newest.id)}")
    previous = service.container.image_id
    previous_name = (found.homeserver_version if is_homeserver and found.homeserver_version != "unknown"
                     else f"image {short_id(previous)}")
    ctx.log(f"the new image is not ready ({why}); rolling back to {name} {previous_name}")
    await show_logs(ctx, service.service, 20)
    await ctx.run(f"docker tag {q(previous)} {q(service.image_ref)}", sudo=True)
    await ctx.run(compose("up", "-d", "--force-recreate", service.service), sudo=True, timeout=600)
    back, why_not = await wait_ready(ctx, ctx.deployment.service(service.service), image_id=previous, fresh=True)
    if back and any(s.upgrade_after for s in ctx.deployment.services):
        # The services held back for this upgrade run again, on the images they ran before.
        await ctx.run(compose("up", "-d", "--remove-orphans"), sudo=True, timeout=600)
    if not back:
        raise StageError(f"{name} {failed} did not come up healthy ({why}), and the rollback to "
                         f"{previous_name} did not either ({why_not})",
                         f"restore the backup: sudo {RESTORE_SCRIPT} {backup}")
    running = found.homeserver_version if is_homeserver else "its previous image"
    raise StageError(f"{name} {failed} did not come up healthy ({why}); rolled back to {name} "
                     f"{running} ({short_id(previous)}), which is running and healthy",
                     "see the failed container's log above; rerun the upgrade when a fixed image is published")


# --- upgrade.prune --------------------------------------------------------------------------------

async def prune_images(ctx: StageContext) -> Status:
    """Remove images nothing uses any more (the services' previous images among them)."""
    replaced = ctx.take(ReplacedImages).sizes
    listed = await ctx.run("docker image ls --filter dangling=true --format '{{.ID}} {{.Repository}} {{.Size}}'",
                           sudo=True, dry_output="0123456789ab matrixdotorg/synapse 400MB")
    dangling = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    if not dangling and not replaced:
        ctx.log("no old images to remove")
        return Status.UNCHANGED
    result = await ctx.run("docker image prune -f", sudo=True, dry_output="Total reclaimed space: 0B")
    reclaimed = parse_reclaimed(result.stdout)
    if not ctx.dry_run:
        # Once a tag moved, the previous image is dangling and went with the prune; if it still
        # carries another tag (a version pulled by hand), someone asked for it by name.
        for previous, size in replaced.items():
            if await image(ctx, previous, dry_output="") is not None:
                ctx.log(f"kept the previous image {short_id(previous)}: it still has a tag")
            elif size:
                ctx.log(f"removed the previous image {short_id(previous)} ({human_size(size)})")
    if not dangling and not ctx.dry_run:
        ctx.log("no old images to remove")
        return Status.UNCHANGED
    if ctx.dry_run:
        ctx.log("unused images would be removed; a real run reports the space reclaimed")
    else:
        ctx.log(f"removed {len(dangling)} unused image(s); reclaimed {human_size(reclaimed)}")
    return Status.DONE
