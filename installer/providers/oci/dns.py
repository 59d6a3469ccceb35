"""OCI DNS: the deployment's records set in a zone of the tenancy, when the zone is there."""

from __future__ import annotations

from typing import Any

from installer.cloud import CloudError, cloud_for, compartment_of, explain
from installer.components.dns import Record
from installer.engine import StageContext


async def set_in_oci_dns(ctx: StageContext, records: list[Record]) -> tuple[list[Record], bool]:
    """Set the records whose zone is in OCI DNS; returns those left for the user, and whether anything changed."""
    cloud = await cloud_for(ctx)
    try:
        return await _set_in_zones(ctx, cloud, compartment_of(ctx, cloud), records)
    except CloudError as exc:
        raise explain(exc, ctx) from None


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


async def _set_in_zones(ctx: StageContext, cloud: Any, compartment: str, records: list[Record]) -> tuple[list[Record], bool]:
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
        existing = await cloud.get_rrset(zone, record.name, record.rtype)
        have = {(str(i.rdata).rstrip("."), int(i.ttl)) for i in existing}
        if have == {(record.value.rstrip("."), record.ttl)}:
            ctx.log(f"OCI DNS zone {zone.name}: {record.zone_line} (already so)")
            continue
        await cloud.set_rrset(zone, record.name, record.rtype, [record.value], record.ttl)
        ctx.log(f"OCI DNS zone {zone.name}: {record.zone_line} ({'updated' if existing else 'created'})")
        changed = True
    if len(manual) < len(records):
        ctx.log("records in OCI DNS resolve publicly once the domain's NS records point at the zone's OCI name servers")
    return manual, changed
