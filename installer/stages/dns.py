"""DNS: A (or, for an IPv6 host, AAAA) records for the Matrix host (and the server name when this box serves it).

When the zone lives in OCI DNS the records are set through the API. Otherwise the exact records
are shown and the stage waits, polling DNS with a countdown, until they resolve to the host's
address; the guided setup can stop the wait (`session.shared["dns.skip_wait"]`, an asyncio.Event).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from installer.cloud import CloudError, cloud_for, compartment_of, explain, timing_for
from installer.cloud.api import DryRunCloud
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.published import Record, to_publish_elsewhere, wanted_records

SKIP_KEY = "dns.skip_wait"


def _resolver(dns_server: tuple[str, int] | None) -> Any:
    import dns.asyncresolver
    import dns.resolver

    try:
        if dns_server:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns_server[0]]
            resolver.port = dns_server[1]
        else:
            resolver = dns.asyncresolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        raise StageError("this machine has no DNS resolver configured", "pass --dns-server ADDR") from None
    resolver.lifetime = 3.0
    return resolver


async def _lookup(resolver: Any, name: str, rtype: str) -> set[str] | None:
    """What DNS answers now for name/type: empty when there is no such record yet, None when the
    DNS server itself gave no answer (a record added would not change that)."""
    import dns.exception
    import dns.resolver

    try:
        answer = await resolver.resolve(name, rtype)
    except (dns.resolver.NoNameservers, dns.exception.Timeout):
        return None
    except dns.exception.DNSException:
        return set()
    if rtype == "SRV":
        return {f"{r.priority} {r.weight} {r.port} {r.target.to_text()}" for r in answer}
    return {r.to_text() for r in answer}


def _matches(record: Record, seen: set[str]) -> bool:
    if record.rtype == "SRV":
        want = record.value.split()
        return any(v.split()[2:] == want[2:] for v in seen)
    return seen == {record.value}


async def _host_address(ctx: StageContext) -> str:
    if ctx.answers.cloud.provider == "oci":
        address = ctx.facts.get("host.address")
        if address:
            return str(address)
        if ctx.dry_run:
            return DryRunCloud.ADDRESS
        raise StageError("the host's public address is not known yet", "the cloud.instance stage must finish first; rerun")
    host = ctx.answers.ssh.host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if ctx.dry_run:  # a dry run contacts nothing, DNS servers included
        return "(address of " + host + ")"
    resolver = _resolver(ctx.options.dns_server)
    found = sorted(await _lookup(resolver, host, "A") or ()) or sorted(await _lookup(resolver, host, "AAAA") or ())
    if not found:
        raise StageError(f"ssh.host {host} does not resolve to an address (no A or AAAA record)",
                         "give its IP address as ssh.host, or fix its DNS")
    return found[0]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified)


async def ensure_records(ctx: StageContext) -> Status:
    """Set the records in OCI DNS when the zone is there; else show them and wait until they resolve."""
    for line in to_publish_elsewhere(ctx.answers):
        ctx.log(line)
    address = await _host_address(ctx)
    records = wanted_records(ctx.answers, address)
    if not ctx.dry_run and not _is_public(address) and ctx.options.dns_server is None:
        ctx.log(f"the host's address {address} is not a public one (a lab?): public DNS records cannot point at it")
        for record in records:
            ctx.log(f"    {record.zone_line}")
        return Status.SKIPPED

    changed = False
    manual = records
    if ctx.answers.cloud.provider == "oci":
        cloud = await cloud_for(ctx)
        try:
            manual, changed = await _set_in_oci(ctx, cloud, compartment_of(ctx, cloud), records)
        except CloudError as exc:
            raise explain(exc, ctx) from None
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


async def _find_zone(cloud: Any, compartment: str, name: str, cache: dict[str, Any]) -> Any | None:
    """The OCI DNS zone holding `name`: the longest suffix that is a zone (walking up the labels)."""
    labels = name.split(".")
    for i in range(len(labels) - 1):
        candidate = ".".join(labels[i:])
        if candidate not in cache:
            cache[candidate] = await cloud.find_zone(compartment, candidate)
        if cache[candidate] is not None:
            return cache[candidate]
    return None


async def _set_in_oci(ctx: StageContext, cloud: Any, compartment: str, records: list[Record]) -> tuple[list[Record], bool]:
    """Set the records whose zone is in OCI DNS; returns those left for the user, and whether anything changed."""
    cache: dict[str, Any] = {}
    manual: list[Record] = []
    changed = False
    for record in records:
        try:
            zone = await _find_zone(cloud, compartment, record.name, cache)
        except CloudError as exc:
            if exc.status not in (403, 404):
                raise
            ctx.log(f"cannot list OCI DNS zones ({exc.code}): the records must be created by hand")
            return records, changed
        if zone is None:
            manual.append(record)
            continue
        existing = await cloud.get_rrset(zone.name, record.name, record.rtype)
        have = {(str(i.rdata).rstrip("."), int(i.ttl)) for i in existing}
        if have == {(record.value.rstrip("."), record.ttl)}:
            ctx.log(f"OCI DNS zone {zone.name}: {record.zone_line} (already so)")
            continue
        await cloud.set_rrset(zone.name, record.name, record.rtype, [record.value], record.ttl)
        ctx.log(f"OCI DNS zone {zone.name}: {record.zone_line} ({'updated' if existing else 'created'})")
        changed = True
    if len(manual) < len(records):
        ctx.log("records in OCI DNS resolve publicly once the domain's NS records point at the zone's OCI name servers")
    return manual, changed


async def _wait_for_records(ctx: StageContext, records: list[Record]) -> Status:
    """Poll DNS until every record resolves as wanted: UNCHANGED when they already did at the first
    look, DONE when they appeared while waiting, SKIPPED when the user stopped the wait."""
    timing = timing_for(ctx)
    resolver = _resolver(ctx.options.dns_server)
    skip: asyncio.Event | None = ctx.session.shared.get(SKIP_KEY)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timing.dns_timeout
    first = True
    answered = False
    while True:
        looked_up = {r: await _lookup(resolver, r.name, r.rtype) for r in records}
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
            if skip is not None and skip.is_set():
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
            tick = min(1.0, left, max(0.0, next_poll - now))
            if skip is not None:
                try:
                    await asyncio.wait_for(skip.wait(), tick)
                except TimeoutError:
                    pass
            else:
                await ctx.sleep(tick)

