"""Stage dns.records: the records that point the deployment's names at the host.

When the provider serves the zone (OCI DNS) the records are set through its API. Otherwise the
exact records are shown and the stage waits, polling DNS with a countdown, until they resolve to
the host's address; the person running it may stop the wait (ctx.skippable).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from installer.cloud import Timing, timing_for
from installer.components.dns import Record, to_publish_elsewhere
from installer.components.dns.lookup import lookup, resolver
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.interaction import SkippableWait


def _matches(record: Record, seen: set[str]) -> bool:
    if record.rtype == "SRV":
        want = record.value.split()
        return any(v.split()[2:] == want[2:] for v in seen)
    return seen == {record.value}


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified)


async def ensure_records(ctx: StageContext) -> Status:
    """Set the records in the provider's DNS when it serves the zone; else show them and wait
    until they resolve."""
    for line in to_publish_elsewhere(ctx.answers):
        ctx.log(line)
    address = await ctx.deployment.provider.host_address(ctx)
    records = ctx.deployment.records(address)
    if not ctx.dry_run and not _is_public(address) and ctx.options.dns_server is None:
        ctx.log(f"the host's address {address} is not a public one (a lab?): public DNS records cannot point at it")
        for record in records:
            ctx.log(f"    {record.zone_line}")
        return Status.SKIPPED

    return await _publish(ctx, records)


async def _publish(ctx: StageContext, records: list[Record]) -> Status:
    """Set the records in the provider's DNS, or show them and wait until they resolve."""
    manual, changed = await ctx.deployment.provider.publish_records(ctx, records)
    if not manual:
        return Status.DONE if changed else Status.UNCHANGED

    ctx.log("create these records at your DNS provider:")
    for record in manual:
        ctx.log(f"    {record.zone_line}")
    if ctx.dry_run:
        ctx.log("then this step waits until they resolve")
        return Status.DONE
    outcome = await _wait_for_records(ctx, manual)
    if outcome is Status.UNCHANGED and changed:
        return Status.DONE
    return outcome


async def _wait_for_records(ctx: StageContext, records: list[Record]) -> Status:
    """Poll DNS until every record resolves as wanted: UNCHANGED when they already did at the first
    look, DONE when they appeared while waiting, SKIPPED when the user stopped the wait."""
    timing = timing_for(ctx)
    dns = resolver(ctx.options.dns_server)
    with ctx.skippable("waiting for DNS records") as wait:
        return await _poll_records(ctx, records, dns, wait, timing)


async def _poll_records(ctx: StageContext, records: list[Record], dns: Any, wait: SkippableWait, timing: Timing) -> Status:
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timing.dns_timeout
    first = True
    answered = False
    while True:
        looked_up = {r: await lookup(dns, r.name, r.rtype) for r in records}
        answered = answered or any(found is not None for found in looked_up.values())
        seen = {r: found or set() for r, found in looked_up.items()}
        pending = [r for r in records if not _matches(r, seen[r])]
        if not pending:
            ctx.log("DNS records resolve as wanted: " + ", ".join(f"{r.name} {r.rtype}" for r in records))
            return Status.UNCHANGED if first else Status.DONE
        first = False
        next_poll = loop.time() + timing.dns_poll_interval
        while (now := loop.time()) < next_poll:
            left = deadline - now
            if wait.stopped:
                ctx.log("stopped waiting for DNS at the user's request; the records are not confirmed")
                return Status.SKIPPED
            if left <= 0 and not answered:
                where = f"the DNS server {ctx.options.dns_server[0]}" if ctx.options.dns_server else "this machine's DNS resolver"
                raise StageError(
                    f"{where} did not answer any query in {_duration(timing.dns_timeout)}: the records could not be checked",
                    "check that the resolver is running and reachable from here (--dns-server ADDR[:PORT]), then rerun",
                )
            if left <= 0:
                status = "; ".join(f"{r.name} {r.rtype} -> {', '.join(sorted(seen[r])) or 'nothing'}" for r in pending)
                raise StageError(
                    f"DNS records still not visible after {_duration(timing.dns_timeout)}: {status}",
                    "create the records listed in the log at your DNS provider (or fix them), then rerun",
                )
            names = ", ".join(r.name for r in pending)
            ctx.progress(f"waiting for DNS: {names}; {int(left) // 60}:{int(left) % 60:02d} left",
                         min(1.0, (now - started) / timing.dns_timeout) if timing.dns_timeout else None)
            await wait.pause(min(1.0, left, max(0.0, next_poll - now)))



IPV6_COMMAND = "ip -6 -o addr show scope global"


def public_ipv6(text: str) -> str | None:
    """The host's public IPv6 address from `ip -6 -o addr show scope global`: a global unicast
    address on a real interface (not Docker's bridges), stable (not temporary or deprecated)."""
    for line in text.splitlines():
        words = line.split()
        if "inet6" not in words or len(words) < 4:
            continue
        interface = words[1].rstrip(":")
        if interface.startswith(("docker", "br-", "veth", "lo")):
            continue
        if {"temporary", "deprecated", "tentative", "dadfailed"} & set(words):
            continue
        try:
            ip = ipaddress.ip_address(words[words.index("inet6") + 1].split("/")[0])
        except (ValueError, IndexError):
            continue
        if ip.version == 6 and ip.is_global:
            return str(ip)
    return None


async def ensure_aaaa(ctx: StageContext) -> Status:
    """AAAA records for every name this box serves, when the host has a public IPv6 address
    (`[domain] ipv6`, on by default): other servers may then come over IPv6, and the federation
    test checks each address."""
    found = await ctx.run(IPV6_COMMAND, check=False, dry_output="")
    if ctx.dry_run:
        ctx.log("then, if the host has a public IPv6 address, AAAA records for "
                + ", ".join(ctx.deployment.hostnames) + " pointing at it (set through the provider's DNS, or shown and waited for)")
        return Status.DONE
    address = public_ipv6(found.stdout)
    if address is None:
        ctx.log("the host has no public IPv6 address: A records only")
        return Status.SKIPPED
    records = [Record(host, "AAAA", address) for host in ctx.deployment.hostnames]
    ctx.log(f"the host's public IPv6 address is {address}")
    return await _publish(ctx, records)
