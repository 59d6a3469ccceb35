"""Which availability domains offer the chosen shape, asked with `list_shapes` before any launch.

A shape is not offered in every availability domain (AD): in most three-AD regions
VM.Standard.E2.1.Micro launches only in the one AD the console marks "Always Free eligible" (where
`list_shapes` gives it billing_type ALWAYS_FREE), and VM.Standard.A1.Flex is missing from some
ADs. A launch where the shape is not offered fails with 404 NotAuthorizedOrNotFound "shape ... not
found", which reads like a permissions problem; asking first avoids it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from installer.cloud.api import DryRunCloud, OciCloud
    from installer.engine import StageContext

ALWAYS_FREE_ONLY = ("VM.Standard.E2.1.Micro",)
"""Shapes launched only where Oracle bills them as Always Free (anywhere else they are not free, or not there)."""


def ad_label(ad: str) -> str:
    """An AD without its tenancy prefix: "Uocm:PHX-AD-1" -> "PHX-AD-1"."""
    return ad.rsplit(":", 1)[-1]


def why_not_offered(shape: str, offered: Sequence[Any]) -> str | None:
    """Why an AD whose `list_shapes` answer is `offered` will not take `shape`, or None when it will."""
    listed = [s for s in offered if getattr(s, "shape", None) == shape]
    if not listed:
        return "not offered"
    if shape in ALWAYS_FREE_ONLY and not any(getattr(s, "billing_type", None) == "ALWAYS_FREE" for s in listed):
        billing = getattr(listed[0], "billing_type", None) or "no billing type"
        return f"offered as {billing}, not Always Free"
    return None


async def availability_domains_for(ctx: StageContext, cloud: OciCloud | DryRunCloud, compartment: str) -> list[str]:
    """The ADs to launch in, in order: the answers' one, else every AD of the region, keeping only
    those whose `list_shapes` offers the shape. Raises StageError when none does."""
    from installer.engine import StageError

    c = ctx.answers.cloud
    ads = [c.availability_domain] if c.availability_domain else await cloud.list_availability_domains(compartment)
    if not ads:
        raise StageError("the region reports no availability domains", "check region in the OCI config")
    offering: list[str] = []
    skipped: list[str] = []
    for ad in ads:
        reason = why_not_offered(c.shape, await cloud.list_shapes(compartment, ad))
        if reason:
            skipped.append(f"{ad_label(ad)} ({reason})")
        else:
            offering.append(ad)
    if offering and skipped:
        ctx.log(f"{c.shape} is offered in {', '.join(ad_label(a) for a in offering)}; skipped: {', '.join(skipped)}")
    if offering:
        return offering
    if c.availability_domain:
        raise StageError(
            f"{c.shape} is not offered in {c.availability_domain} (cloud.availability_domain): {', '.join(skipped)}",
            "leave cloud.availability_domain empty so every domain that offers the shape is tried, or choose another cloud.shape",
        )
    hint = ("VM.Standard.E2.1.Micro is Always Free only in your home region: set region in the OCI config to it, "
            "or choose VM.Standard.A1.Flex" if c.shape in ALWAYS_FREE_ONLY
            else "choose another cloud.shape, or another region in the OCI config")
    raise StageError(f"{c.shape} is not offered in any availability domain of this region: {', '.join(skipped)}", hint)
