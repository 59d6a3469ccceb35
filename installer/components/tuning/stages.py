"""Stage host.swap: a swap file on a small box that has none, when the answers or the person
running it agree ([tuning] swap). Oracle's images come without swap; on 1-2 GB a burst (a big
sync, a join) then ends in the kernel killing a process. With a swap file it moves idle memory
to disk instead, at the price of slowness while it does; swappiness 10 keeps that for when
memory is really short. A box that swaps all the time is too small, and `--check` says so.
"""

from __future__ import annotations

from installer.engine import StageContext
from installer.events import Status
from installer.host.connect import HostSize

SWAPFILE = "/swapfile"
SYSCTL = "/etc/sysctl.d/90-matrix-installer-swap.conf"
SWAPPINESS = 10


def swap_question(box: str, mib: int) -> str:
    return (f"This box has {box} and no swap. Add a {mib // 1024} GiB swap file ({SWAPFILE})? The kernel then moves "
            f"idle memory to disk instead of killing Synapse or Postgres in a burst; it uses {mib // 1024} GiB of disk "
            "and is slow while it is used (swappiness 10: only when memory runs short).")


async def offer_swap(ctx: StageContext) -> Status:
    from installer.sizing import sizing_for

    size = ctx.take(HostSize)
    sizing = sizing_for(size)
    if not size.tuned:
        ctx.log("sizing is off: no swap file offered")
        return Status.SKIPPED
    if not sizing.swap_offer_mib:
        ctx.log(f"no swap file offered: this box has {sizing.box} (one is offered on boxes of 2 GiB or less)")
        return Status.DONE if ctx.dry_run else Status.SKIPPED  # a dry run's size is assumed: a real run decides
    active = await ctx.run("swapon --show=NAME --noheadings", sudo=True, check=False, dry_output="")
    if size.swap_mib or active.stdout.strip():
        ctx.log(f"the host has swap already ({', '.join(active.stdout.split()) or f'{size.swap_mib} MiB'}): nothing to add")
        return Status.UNCHANGED
    if not await ctx.consents(ctx.answers.tuning.swap, swap_question(sizing.box, sizing.swap_offer_mib), setting="swap",
                              otherwise="no swap file"):
        return Status.DONE if ctx.dry_run else Status.SKIPPED
    mib = sizing.swap_offer_mib
    free = size.disk_free_mib
    if free and free < mib + 2048 and not ctx.dry_run:
        ctx.log(f"no swap file: {free} MiB of disk free, and {mib} MiB of swap would leave less than 2 GiB")
        return Status.SKIPPED
    await ctx.run(f"test -e {SWAPFILE} || (fallocate -l {mib}M {SWAPFILE} || dd if=/dev/zero of={SWAPFILE} bs=1M count={mib}) "
                  f"&& chmod 0600 {SWAPFILE} && mkswap {SWAPFILE} >/dev/null && swapon {SWAPFILE}", sudo=True, timeout=600)
    await ctx.run(f"grep -q '^{SWAPFILE} ' /etc/fstab || echo '{SWAPFILE} none swap sw 0 0' >> /etc/fstab", sudo=True)
    await ctx.put_file(SYSCTL, f"# matrix-installer: swap only when memory runs short\nvm.swappiness = {SWAPPINESS}\n".encode(),
                       mode=0o644)
    await ctx.run(f"sysctl -q -p {SYSCTL}", sudo=True, check=False)
    ctx.log(f"added a {mib // 1024} GiB swap file ({SWAPFILE}, in /etc/fstab), swappiness {SWAPPINESS}")
    return Status.DONE
