"""Stage host.health (`--check` only): the server's health, read over SSH in one command, beside the
federation test. Optional and cheap: it runs only when this machine's state knows the deployment
(its address, pinned host key and SSH answers: installer.host.saved, the connection it shares with
the backup checks), connects with a short timeout, and whatever goes wrong reaching the host is a
note: the stage never fails, so the federation test always runs. What it read is the report's
check "host-health", failed when something needs action (then `--check` exits 1 after the test).
("server-health" is the host's own self-test's last result: installer.components.selftest.)

Reported, each with what needs action flagged: Synapse's memory against its container's limit
(and any out-of-memory kill), the box's memory and swap, disk free, the database's size, media
(local uploads, the remote cache and its retention), and the last state compression run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from installer.engine import StageContext
from installer.events import Status
from installer.host.layout import PROJECT

MIB = 1024 * 1024
CHECK = "host-health"
"""The report's check: passed when nothing needs action."""
COMPRESS_STAMP = f"{PROJECT}/compress-state.last"
"""One line the compression timer writes after each run: epoch seconds, ok|failed, database bytes before, after."""

_CGROUP = ("cg() { pid=$(docker inspect -f '{{.State.Pid}}' \"$1\" 2>/dev/null) || return; "
           "v1=$(sed -n 's/^[0-9]*:memory://p' /proc/$pid/cgroup); "
           "if [ -n \"$v1\" ] && [ -d /sys/fs/cgroup/memory$v1 ]; then echo /sys/fs/cgroup/memory$v1; "
           "else echo /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$pid/cgroup); fi; }; ")
HEALTH_COMMAND = _CGROUP + f"""P={PROJECT}; c=$(cg synapse)
echo "synapse_rss=$(awk '/^(anon|rss|file_mapped|mapped_file) /{{s+=$2}} END{{print s+0}}' $c/memory.stat 2>/dev/null)"
echo "synapse_limit=$(docker inspect -f '{{{{.HostConfig.Memory}}}}' synapse 2>/dev/null)"
echo "synapse_oom=$(cat $c/memory.events $c/memory.oom_control 2>/dev/null | sed -n 's/^oom_kill //p' | head -n 1)"
echo "synapse_state=$(docker inspect -f '{{{{.State.Status}}}} {{{{.RestartCount}}}} {{{{.State.OOMKilled}}}}' synapse 2>/dev/null)"
echo "memory=$(awk '/^MemTotal:/{{t=$2}} /^MemAvailable:/{{a=$2}} /^SwapTotal:/{{s=$2}} /^SwapFree:/{{f=$2}} END{{print t, a, s, f}}' /proc/meminfo)"
echo "disk=$(df -Pk $P 2>/dev/null | tail -n 1 | awk '{{print $2, $4}}')"
if docker inspect postgres >/dev/null 2>&1; then
  echo "db=postgres $(docker exec postgres psql -U synapse -d synapse -Atc "select pg_database_size('synapse')" 2>/dev/null)"
else echo "db=sqlite $(du -cb $P/data/homeserver.db* 2>/dev/null | tail -n 1 | cut -f1)"; fi
echo "media=$(du -sk $P/data/media_store/local_content 2>/dev/null | cut -f1) $(du -sk $P/data/media_store/remote_content 2>/dev/null | cut -f1)"
echo "retention=$(sed -n '/^media_retention:/,/^[^ ]/s/^ *remote_media_lifetime: *//p' $P/data/homeserver.yaml)"
echo "compress=$(cat {COMPRESS_STAMP} 2>/dev/null)"
"""
DRY_HEALTH = ("synapse_rss=209715200\nsynapse_limit=536870912\nsynapse_oom=0\nsynapse_state=running 0 false\n"
              "memory=1003520 301056 2097148 2000000\ndisk=48254668 40000000\ndb=postgres 52428800\nmedia=10240 2048\n"
              "retention=90d\ncompress=\n")


@dataclass
class Health:
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Health:
        return cls({k.strip(): v.strip() for k, _, v in (line.partition("=") for line in text.splitlines()) if k.strip()})

    def ints(self, name: str) -> list[int]:
        return [int(w) for w in self.values.get(name, "").split() if w.isdigit()]


def _mib(n: float) -> str:
    return f"{n / MIB / 1024:.1f} GiB" if n >= 1024 * MIB else f"{n / MIB:.0f} MiB"


def findings(health: Health, *, now: float | None = None) -> list[tuple[str, bool]]:
    """(line, needs action) for each part of the health, in order."""
    now = time.time() if now is None else now
    out: list[tuple[str, bool]] = []
    rss, limit = (health.ints("synapse_rss") or [0])[0], (health.ints("synapse_limit") or [0])[0]
    state = health.values.get("synapse_state", "").split()
    oom = (health.ints("synapse_oom") or [0])[0]
    if not state:
        out.append(("Synapse: no container named synapse on the host", True))
    else:
        share = rss / limit if limit else 0
        line = (f"Synapse memory: {_mib(rss)} of its {_mib(limit)} limit ({share:.0%})" if limit
                else f"Synapse memory: {_mib(rss)}, no container limit (an install of this version sets one)")
        act = share >= 0.9
        if act:
            line += ": near its limit; autotuning should hold it below: look for a huge room or an old config"
        out.append((line, act))
        if oom or (len(state) > 2 and state[2] == "true"):
            out.append((f"Synapse was killed for memory ({oom or 1} time(s)) and restarted {state[1] if len(state) > 1 else '?'} "
                        "time(s): the box is too small for what it serves, or a room too large got in", True))
        elif state[0] != "running":
            out.append((f"Synapse's container is {state[0]}", True))
    memory = health.ints("memory")
    if len(memory) == 4:
        total, available, swap, swap_free = (v * 1024 for v in memory)
        used_swap = swap - swap_free
        line = f"box memory: {_mib(available)} available of {_mib(total)}; swap " + (
            f"{_mib(used_swap)} used of {_mib(swap)}" if swap else "none")
        act = bool(swap) and used_swap > swap / 2 and available < total / 10
        out.append((line + (": it lives in swap; a bigger box (or fewer large rooms) would be faster" if act else ""), act))
    disk = health.ints("disk")
    if len(disk) == 2:
        total, free = disk[0] * 1024, disk[1] * 1024
        act = free < total / 10 or free < 2 * 1024 * MIB
        out.append((f"disk: {_mib(free)} free of {_mib(total)}" + (": free some space (old backups, images) or grow the volume"
                                                                     if act else ""), act))
    db = health.values.get("db", "").split()
    if len(db) == 2 and db[1].isdigit():
        size = int(db[1])
        act = len(disk) == 2 and size > disk[1] * 1024
        out.append((f"database ({db[0]}): {_mib(size)}" + (": more than the free disk; a backup's dump would not fit" if act else ""), act))
    media = health.ints("media")
    retention = health.values.get("retention", "")
    if "media" in health.values:  # a store not made yet (nothing uploaded or fetched) is empty: its du says nothing
        local, remote = (media + [0, 0])[:2]
        out.append((f"media: {_mib(local * 1024)} uploaded here (kept), {_mib(remote * 1024)} cached from other servers ("
                    + (f"deleted after {retention} unseen)" if retention else "kept forever: no media_retention)"), False))
    compress = health.values.get("compress", "").split()
    if len(compress) >= 2 and compress[0].replace(".", "").isdigit():
        age_days = (now - float(compress[0])) / 86400
        ok = compress[1] == "ok"
        sizes = f", database {_mib(int(compress[2]))} -> {_mib(int(compress[3]))}" if len(compress) >= 4 and compress[3].isdigit() else ""
        act = not ok or age_days > 3
        out.append((f"state compression: last run {age_days:.1f} days ago, {'ok' if ok else 'FAILED'}{sizes}"
                    + (": see `journalctl -u matrix-compress-state`" if act else ""), act))
    else:
        out.append(("state compression: no run recorded on this host", False))
    return out


async def server_health(ctx: StageContext) -> Status:
    """Connect to the deployment's host (as this machine's state knows it: installer.host.saved),
    read its health, say what needs action."""
    from installer.host.saved import open_saved_host

    saved = await open_saved_host(ctx)
    if saved is None:  # no run from here knows it (said by open_saved_host)
        return Status.SKIPPED
    if saved.problem:  # a note: the federation test still runs
        ctx.log(f"server health not checked: {saved.problem}")
        return Status.SKIPPED
    try:
        result = await ctx.run(HEALTH_COMMAND, sudo=True, check=False, timeout=60, dry_output=DRY_HEALTH)
    except Exception as exc:  # noqa: BLE001 - never failing: a note
        ctx.log(f"server health not read: {str(exc).splitlines()[0][:200]}")
        return Status.SKIPPED
    if ctx.dry_run:
        return Status.PLANNED
    lines = findings(Health.parse(result.stdout))
    for line, act in lines:
        ctx.log(("ACTION: " if act else "") + line)
    actions = [line for line, act in lines if act]
    ctx.log(f"server health: {len(actions)} thing(s) need action" if actions else "server health: nothing needs action")
    # In the report as the check "host-health": one that needs action fails the --check (exit 1)
    # after the federation test has run, as a stale backup does.
    ctx.report_check(CHECK, not actions, "; ".join(line for line, _ in lines), " / ".join(actions) or None)
    return Status.DONE
