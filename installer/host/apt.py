"""Packages and services on the host, for install and upgrade alike: apt (one at a time, lists
refreshed once per run), the vendors' repositories, systemd units."""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass, field

from installer.engine import StageContext, StageError

q = shlex.quote

APT_ENV = "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a"
APT_OPTIONS = "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=600"
"""Keep the admin's edited config files; wait for the dpkg lock instead of failing
(unattended-upgrades runs right after a VM's first boot)."""
APT_GET = f"{APT_ENV} apt-get -q -y {APT_OPTIONS}"
APT_TIMEOUT = 1800


@dataclass
class AptState:
    """The run's apt: one command at a time (stages run concurrently), and whether the package
    lists are fresh (refreshed once per run, and again after a new source)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    fresh: bool = False


def sources_changed(ctx: StageContext) -> None:
    """An apt source was added: the next install refreshes the package lists first."""
    ctx.resource(AptState).fresh = False


async def refresh_lists(ctx: StageContext) -> None:
    """`apt-get update` once per run (the caller holds the lock)."""
    apt = ctx.resource(AptState)
    if not apt.fresh:
        await ctx.run(f"{APT_GET} update", sudo=True, timeout=APT_TIMEOUT)
        apt.fresh = True


async def apt_install(ctx: StageContext, *packages: str) -> None:
    """Install packages (refreshing the lists once per run, and again after a new source)."""
    async with ctx.resource(AptState).lock:
        await refresh_lists(ctx)
        result = await ctx.run(f"{APT_GET} install {' '.join(q(p) for p in packages)}", sudo=True,
                               timeout=APT_TIMEOUT, check=False)
    if not result.ok:
        missing = re.findall(r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation candidate", result.stderr)
        if missing:
            names = ", ".join(a or b for a, b in missing)
            raise StageError(f"this system's package lists have no {names}",
                             'set packages.source = "vendor" in the answers to use the vendor\'s own repository')
        tail = "; ".join(result.stderr.strip().splitlines()[-3:])
        raise StageError(f"apt-get install {' '.join(packages)} failed (status {result.exit_status}): {tail}",
                         "run the same apt-get command on the host to see the whole story, fix it, then rerun")


async def installed(ctx: StageContext, package: str) -> bool:
    return await ctx.probe(f"dpkg-query -W -f='${{Status}}' {q(package)} 2>/dev/null | grep -q 'install ok installed'")


async def package_known(ctx: StageContext, package: str) -> bool:
    """Whether apt could install `package` from the configured sources."""
    async with ctx.resource(AptState).lock:
        await refresh_lists(ctx)
    result = await ctx.run(f"apt-cache policy {q(package)}", check=False,
                           dry_output=f"{package}:\n  Installed: (none)\n  Candidate: 1.0\n")
    m = re.search(r"Candidate:\s*(\S+)", result.stdout)
    return bool(m and m.group(1) != "(none)")


async def ensure_service(ctx: StageContext, unit: str) -> bool:
    """The unit enabled and running; returns whether anything had to change."""
    enabled = await ctx.probe(f"systemctl is-enabled --quiet {q(unit)}", sudo=True)
    active = await ctx.probe(f"systemctl is-active --quiet {q(unit)}", sudo=True)
    if enabled and active:
        return False
    await ctx.run(f"systemctl enable --now {q(unit)}", sudo=True, timeout=300)
    return True


async def add_keyring(ctx: StageContext, url: str, keyring: str, *, dearmor: bool) -> bool:
    """Fetch a repository's signing key on the host into `keyring` (0644) unless it is there."""
    if await ctx.probe(f"test -s {q(keyring)}", sudo=True):
        return False
    for tool in (("curl", "gnupg") if dearmor else ("curl",)):
        if not await ctx.probe(f"command -v {'gpg' if tool == 'gnupg' else tool} >/dev/null", sudo=True):
            await apt_install(ctx, tool, "ca-certificates")
    await ctx.run(f"install -d -m 0755 {q(keyring.rsplit('/', 1)[0])}", sudo=True)
    fetch = f"curl -fsSL --retry 3 {q(url)}"
    if dearmor:
        await ctx.run(f"{fetch} | gpg --batch --yes --dearmor -o {q(keyring)} && chmod 0644 {q(keyring)}", sudo=True, timeout=120)
    else:
        await ctx.run(f"{fetch} -o {q(keyring)} && chmod 0644 {q(keyring)}", sudo=True, timeout=120)
    return True
