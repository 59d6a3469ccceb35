"""Oracle Cloud for the stages: the client (real or dry-run), the compartment, errors explained.

Nothing here imports the `oci` SDK at module level; `OciCloud.open` does, in a thread, the first
time a cloud stage runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from installer.cloud.api import CloudError, DryRunCloud, OciCloud
from installer.cloud.config import ENDPOINT_ENV, check_oci_config, endpoint_override
from installer.cloud.timing import Timing

if TYPE_CHECKING:
    from installer.engine import StageContext

__all__ = [
    "ENDPOINT_ENV",
    "CloudClient",
    "CloudError",
    "DryRunCloud",
    "OciCloud",
    "Timing",
    "check_oci_config",
    "cloud_for",
    "compartment_of",
    "endpoint_override",
    "explain",
    "timing_for",
]


@dataclass
class CloudClient:
    """The run's one cloud client (a resource of the run: ctx.resource(CloudClient))."""

    client: OciCloud | DryRunCloud | None = None


def timing_for(ctx: StageContext) -> Timing:
    return ctx.resource(Timing)


async def cloud_for(ctx: StageContext) -> OciCloud | DryRunCloud:
    """The run's cloud client, made once and shared by the cloud and DNS stages."""
    from installer.engine import StageError

    held = ctx.resource(CloudClient)
    cached = held.client
    if cached is not None:
        return cached.bind(ctx.cloud_call, lambda text: _throttled(ctx, text))  # announced under the calling stage
    c = ctx.answers.cloud
    if ctx.dry_run:
        client: OciCloud | DryRunCloud = DryRunCloud.for_config(c.oci_config, c.oci_profile, ctx.cloud_call)
    else:
        if problems := check_oci_config(c.oci_config, c.oci_profile):
            for line in problems:
                ctx.log(line)
            raise StageError(
                f"the OCI config is not usable: {problems[0]}",
                f"fix {Path(c.oci_config).expanduser()} as listed in the log, then rerun",
            )
        try:
            timing = timing_for(ctx)
            client = await OciCloud.open(c.oci_config, c.oci_profile, ctx.cloud_call, timing)
        except CloudError as exc:
            raise StageError(f"the OCI SDK cannot use profile [{c.oci_profile}]: {exc.message}",
                             f"fix {c.oci_config}, then rerun") from None
        if client.endpoint:
            ctx.log(f"Oracle Cloud endpoint override ({ENDPOINT_ENV}): {client.endpoint}")
    held.client = client
    return client.bind(ctx.cloud_call, lambda text: _throttled(ctx, text))


def _throttled(ctx: StageContext, text: str) -> None:
    ctx.progress(text)


def compartment_of(ctx: StageContext, cloud: OciCloud | DryRunCloud) -> str:
    """Where resources go: the answers' compartment, else the tenancy (root compartment)."""
    return ctx.answers.cloud.compartment_id or cloud.tenancy


def explain(error: CloudError, ctx: StageContext) -> Exception:
    """A StageError saying what went wrong in the user's terms and what to do about it."""
    from installer.engine import StageError

    c = ctx.answers.cloud
    config = f"{c.oci_config} [{c.oci_profile}]"
    what = f"{error.status} {error.code}: {error.message}".strip()
    ref = f" (opc-request-id {error.request_id})" if error.request_id else ""
    if error.status == 401 or error.code == "NotAuthenticated":
        return StageError(
            f"Oracle Cloud rejected this machine's API key signature ({what})",
            f"check that key_file and fingerprint in {config} belong to an API key uploaded for this user "
            "(console: your profile > API keys), and that this machine's clock is right; then rerun",
        )
    if error.code in ("LimitExceeded", "QuotaExceeded"):
        asked = f" (this launch asks for {c.ocpus} OCPUs and {c.memory_gb} GB)" if c.shape.endswith(".Flex") else ""
        return StageError(
            f"an Oracle Cloud service limit stops this: {error.message.strip()}",
            "Always Free allows VM.Standard.A1.Flex up to 4 OCPUs and 24 GB in total across the region"
            f"{asked}, two VM.Standard.E2.1.Micro, and 200 GB of boot and block volumes: terminate an instance "
            "you do not need (and delete its boot volume), lower cloud.ocpus / cloud.memory_gb, or request a limit "
            "increase; then rerun",
        )
    if error.shape_not_offered:
        return StageError(
            f"{error.operation or 'a cloud call'}: {error.message} in the availability domain tried{ref}",
            "leave cloud.availability_domain empty so every domain that offers the shape is tried, or choose another cloud.shape",
        )
    if error.status == 404 or error.code == "NotAuthorizedOrNotFound":
        return StageError(
            f"{error.operation or 'a cloud call'}: not found, or not allowed for this user ({what}){ref}",
            "check cloud.compartment_id and that your user's group has a policy such as "
            "`Allow group <yours> to manage all-resources in compartment <it>`; then rerun",
        )
    if error.status == 429:
        return StageError(f"Oracle Cloud keeps answering 429 TooManyRequests ({error.message})", "wait a few minutes, then rerun")
    if error.status == 0:
        where = ctx.resource(CloudClient).client
        endpoint = getattr(where, "endpoint", None) or "the region's endpoint"
        return StageError(
            f"cannot reach Oracle Cloud at {endpoint}: {error.message}",
            f"check the network (and {ENDPOINT_ENV} if set), then rerun",
        )
    return StageError(
        f"{error.operation or 'a cloud call'} failed: {what}{ref}",
        "rerun to retry; if it keeps failing, give Oracle support the opc-request-id",
    )
