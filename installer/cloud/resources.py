"""Network resources the stages make: waiting for them to become AVAILABLE, and finding the ones a
previous run made.

A VCN, an internet gateway or a subnet is PROVISIONING for a moment after its create call returns;
using it before then can fail with 409 IncorrectState. Other OCI tools wait the same way: Juju's
OCI provider (juju/juju provider/oci/networking.go) polls each new VCN, security list and subnet
until AVAILABLE, as Terraform's provider does for its created states.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from installer.engine import StageContext

SETTLING = ("PROVISIONING", "UPDATING")


async def until_available(ctx: StageContext, what: str, resource: Any, get: Callable[[str], Awaitable[Any]]) -> Any:
    """`resource` once AVAILABLE, polled through `get(id)` with progress; StageError when it goes
    elsewhere (TERMINATED, FAILED) or stays PROVISIONING past the timeout."""
    from installer.cloud import timing_for
    from installer.engine import StageError

    timing = timing_for(ctx)
    waited = 0.0
    while resource.lifecycle_state != "AVAILABLE":
        if resource.lifecycle_state not in SETTLING or waited > timing.running_timeout:
            raise StageError(f"{what} {resource.id} is {resource.lifecycle_state}", "check it in the console, then rerun")
        ctx.progress(f"waiting for the {what}: {resource.lifecycle_state}")
        await ctx.sleep(timing.settle_interval)
        waited += timing.settle_interval
        resource = await get(resource.id)
    return resource


async def remembered(ctx: StageContext, key: str, get: Callable[[str], Awaitable[Any]], vcn_id: str) -> Any | None:
    """The resource whose OCID the state keeps under `key`, if it still exists in `vcn_id` and is not going
    away. Lists show a new resource only a moment after it is made, so a rerun asks by OCID first."""
    from installer.cloud.api import CloudError

    rid = ctx.facts.get(key)
    if not rid:
        return None
    try:
        resource = await get(rid)
    except CloudError as exc:
        if exc.not_found:
            return None
        raise
    if getattr(resource, "vcn_id", vcn_id) != vcn_id or resource.lifecycle_state not in ("AVAILABLE", *SETTLING):
        return None
    return resource
