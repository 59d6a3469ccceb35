"""Caddy's stages: host.caddy (installed and running, from Caddy's own repository or the
distribution's) and caddy.config (the deployment's Caddyfile, validated on the host before Caddy
loads it)."""

from __future__ import annotations

import re
import shlex

from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.apt import add_keyring, apt_install, ensure_service, installed, sources_changed

q = shlex.quote

CADDYFILE = "/etc/caddy/Caddyfile"
CANDIDATE = "/etc/caddy/Caddyfile.matrix-installer-new"
"""The new file is validated here first, so the live one is never replaced by a broken one."""


def validate_command(path: str) -> str:
    # As the caddy user with its HOME (both packages use /var/lib/caddy): validation provisions
    # the local CA (tls internal) in the storage the service itself uses, not in root's home.
    return f"runuser -u caddy -- env HOME=/var/lib/caddy caddy validate --adapter caddyfile --config {q(path)}"


CADDY_KEY_URL = "https://dl.cloudsmith.io/public/caddy/stable/gpg.key"
CADDY_KEYRING = "/usr/share/keyrings/caddy-stable-archive-keyring.gpg"
CADDY_SOURCES = "/etc/apt/sources.list.d/caddy-stable.list"
CADDY_SOURCE_LINE = (f"deb [signed-by={CADDY_KEYRING}] https://dl.cloudsmith.io/public/caddy/stable/deb/debian any-version main\n"
                     f"deb-src [signed-by={CADDY_KEYRING}] https://dl.cloudsmith.io/public/caddy/stable/deb/debian any-version main\n")


def port_holders(listing: str, ports: list[int]) -> dict[int, list[str]]:
    """Which programs listen on `ports`, from `ss -Htlnp` ("nginx (pid 812)"); caddy is left out."""
    held: dict[int, list[str]] = {}
    for line in listing.splitlines():
        words = line.split()
        if len(words) < 4 or not words[3].rpartition(":")[2].isdigit():
            continue
        port = int(words[3].rpartition(":")[2])
        if port not in ports:
            continue
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if name != "caddy" and f"{name} (pid {pid})" not in held.get(port, []):
                held.setdefault(port, []).append(f"{name} (pid {pid})")
    return held


async def check_web_ports_free(ctx: StageContext) -> None:
    """Caddy needs 80 and 443 (and 8448): another web server there would make it fail to start,
    after the installer had changed things. Found before anything is installed."""
    from installer.components.caddy import listening_ports

    ports = listening_ports(ctx.deployment)
    listing = await ctx.run("ss -Htlnp", sudo=True, check=False, dry_output="")
    if not listing.ok:
        ctx.log("cannot list the listening ports here (no ss): not checked whether another web server holds them")
        return
    if held := port_holders(listing.stdout, ports):
        names = sorted({name.split(" (")[0] for holders in held.values() for name in holders})
        said = "; ".join(f"port {port}: {', '.join(holders)}" for port, holders in sorted(held.items()))
        raise StageError(f"another program already listens where Caddy must: {said}. Nothing was installed",
                         f"stop it and keep it from starting again (e.g. sudo systemctl disable --now {names[0]}), "
                         "or move it to other ports; then rerun")


async def install_caddy(ctx: StageContext) -> Status:
    """Caddy from Caddy's own apt repository ("vendor") or the distribution ("distro"); enabled, running."""
    changed = False
    await check_web_ports_free(ctx)
    if await installed(ctx, "caddy"):
        version = await ctx.run("dpkg-query -W -f='${Version}' caddy", dry_output="2.8.4")
        ctx.log(f"caddy {version.stdout.strip()} is installed")
    else:
        if ctx.answers.packages.source == "vendor":
            await add_keyring(ctx, CADDY_KEY_URL, CADDY_KEYRING, dearmor=True)
            if await ctx.put_file(CADDY_SOURCES, CADDY_SOURCE_LINE.encode(), mode=0o644):
                sources_changed(ctx)
        await apt_install(ctx, "caddy")
        changed = True
    if await ensure_service(ctx, "caddy"):
        changed = True
    return Status.DONE if changed else Status.UNCHANGED



# --- caddy.config -----------------------------------------------------------------------------

async def _reload(ctx: StageContext, active: bool):
    if active:
        return await ctx.run("systemctl reload caddy", sudo=True, check=False, timeout=120)
    return await ctx.run("systemctl enable caddy && systemctl restart caddy", sudo=True, check=False, timeout=120)


async def configure(ctx: StageContext) -> Status:
    """Write /etc/caddy/Caddyfile when it differs (the previous one kept as a .bak), `caddy validate`
    first, then reload; the previous file is restored if Caddy does not take the new one."""
    from installer.render import RenderError

    try:
        wanted = ctx.deployment.caddyfile().encode()
    except RenderError as exc:
        raise StageError(f"the Caddyfile cannot be written safely: {exc}", "check the domain answers") from None
    current = await ctx.read_file(CADDYFILE)
    active = await ctx.probe("systemctl is-active --quiet caddy", sudo=True)
    if current == wanted:
        if active:
            ctx.log(f"{CADDYFILE} is up to date and Caddy is running")
            return Status.UNCHANGED
        result = await _reload(ctx, active=False)
        if not result.ok:
            raise StageError("Caddy does not start with the current Caddyfile", "on the host: sudo journalctl -u caddy -n 50")
        return Status.DONE

    await ctx.put_file(CANDIDATE, wanted, mode=0o644, owner="root:root", backup=False)
    check = await ctx.run(validate_command(CANDIDATE), sudo=True, check=False, timeout=120)
    await ctx.run(f"rm -f {q(CANDIDATE)}", sudo=True)
    if not check.ok:
        last = "; ".join((check.stderr.strip() or check.stdout.strip()).splitlines()[-3:])
        raise StageError(f"Caddy rejects the new Caddyfile, so the previous one stays in place: {last}",
                         "this is a bug in the installer's template or a value it let through: please report it")
    await ctx.put_file(CADDYFILE, wanted, mode=0o644, owner="root:root")
    result = await _reload(ctx, active)
    if result.ok:
        ctx.log("Caddy runs the new configuration" + (" (certificates come from its local CA: tls = \"internal\")"
                                                      if ctx.answers.domain.tls == "internal" else ""))
        return Status.DONE
    if current is not None:
        await ctx.put_file(CADDYFILE, current, mode=0o644, owner="root:root", backup=False)
        await _reload(ctx, active)
        raise StageError("Caddy did not load the new Caddyfile; the previous one is restored and reloaded",
                         "on the host: sudo journalctl -u caddy -n 50 shows why")
    raise StageError("Caddy did not start with the new Caddyfile", "on the host: sudo journalctl -u caddy -n 50 shows why")
