"""The server it builds, under a client load: two deployments on the same lab box (2 GiB, this
runner's 2 cores, as the host's /proc/meminfo and CPUs say), the same load, one after the other:

  seed  SQLite and Synapse's generated defaults, as the manual guide leaves them (the installer
        with [database] engine = "sqlite" and the sizing switched off: MATRIX_INSTALLER_UNTUNED=1);
  ours  what the installer deploys: Postgres, and Synapse sized for the box (installer.sizing).

The load (tests/lab/load.py, shared with tests/lab/test_tuning_lab.py): K=8 users (matrix-nio) in
R=4 rooms of 4 members, each user sending 1 message a second for 45 s (8 msg/s, 24 deliveries/s),
while every user's /sync loop receives. Chosen to fit this 2-core machine in a few minutes (two lab
boxes, two installs, two loads: ~6 min) and to keep the client (one Python process with 8 sync
loops, on the same 2 cores) well below saturation, so that the delays are the server's.

Printed: p50/p95/p99 delay from send to arrival in another user's sync, messages/s, errors, peak
and steady RSS of Synapse and Postgres (cgroup memory.stat, sampled every 0.5 s), the database's
size afterwards. `python -m bench server`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024


def measure(keep: bool = False) -> dict[str, dict]:
    from tests.lab import lab
    from tests.lab import load as L
    from tests.lab.scenarios import ready_host

    lab.ensure_docker_engine()
    work = Path(tempfile.mkdtemp(prefix="mi-bench-server-"))
    figures: dict[str, dict] = {}
    try:
        images = (lab.build_host_image(), lab.session_key(work), lab.build_synapse_image())
        postgres = lab.build_postgres_image()
        for name, engine, tuned in (("seed", "sqlite", False), ("ours", "postgres", True)):
            started = time.monotonic()
            with ready_host(*images, postgres_image=postgres, memory_mib=L.BOX_MIB, cores=2) as host:
                d = L.deploy(host, work / name, engine=engine, tuned=tuned)
                installed = time.monotonic() - started
                result = asyncio.run(L.run_load(d, L.LOAD))
                memory = L.container_memory(host, "synapse")
                size = L.database_size(d)
                figures[name] = {"result": result, "memory": memory, "db": size, "installed": installed,
                                 "seconds": time.monotonic() - started}
                print(f"  {name}: ready and installed in {installed:.0f} s, loaded in "
                      f"{figures[name]['seconds'] - installed:.0f} s", flush=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        lab.stop_docker_engine()
    return figures


def rows(figures: dict[str, dict]) -> list[tuple[str, float, float, str, str]]:
    """(measure, seed, ours, unit, better): lower is better except throughput."""
    out = []
    seed, ours = figures["seed"]["result"], figures["ours"]["result"]
    for p in (50, 95, 99):
        out.append((f"delivery delay p{p}", seed.percentile(p), ours.percentile(p), "ms", "lower"))
    out.append(("messages/s sent and answered", seed.messages_per_second, ours.messages_per_second, "/s", "higher"))
    out.append(("deliveries (of expected)", seed.delivered, ours.delivered, f"/{ours.expected}", "higher"))
    out.append(("errors (send, sync, lost)", seed.error_count, ours.error_count, "", "lower"))
    for container in ("synapse", "postgres"):
        s_peak, s_steady = seed.rss(container)
        o_peak, o_steady = ours.rss(container)
        if s_peak or o_peak:
            out.append((f"{container} RSS peak", s_peak / MIB, o_peak / MIB, "MiB", "lower"))
            out.append((f"{container} RSS steady", s_steady / MIB, o_steady / MIB, "MiB", "lower"))
    s_total = sum(seed.rss(c)[0] for c in ("synapse", "postgres"))
    o_total = sum(ours.rss(c)[0] for c in ("synapse", "postgres"))
    out.append(("Synapse + database RSS peak (sum of peaks)", s_total / MIB, o_total / MIB, "MiB", "lower"))
    out.append(("database size (data)", figures["seed"]["db"]["data"] / MIB, figures["ours"]["db"]["data"] / MIB, "MiB", "lower"))
    out.append(("database files on disk", figures["seed"]["db"]["disk"] / MIB, figures["ours"]["db"]["disk"] / MIB, "MiB", "lower"))
    return out


def print_table(figures: dict[str, dict]) -> None:
    from tests.lab import load as L

    print(f"\nServer under load: {L.LOAD.describe()}, on a lab box of {L.BOX_MIB // 1024} GiB and 2 cores")
    print(f"  {'measure':<44} {'seed':>10} {'ours':>10} {'ours/seed':>10}  better")
    for name, seed, ours, unit, better in rows(figures):
        ratio = f"{ours / seed:.2f}x" if seed else "-"
        good = (ours < seed if better == "lower" else ours > seed) if seed != ours else None
        verdict = {True: "improved", False: "NOT improved", None: "same"}[good]
        print(f"  {name:<44} {seed:>8.1f}{unit[:2]:<2} {ours:>8.1f}{unit[:2]:<2} {ratio:>10}  {better} is better: {verdict}")
    ours = figures["ours"]
    print(f"  ours: Synapse's cgroup limit {int(ours['memory']['max']) // MIB if ours['memory']['max'].isdigit() else '?'} MiB, "
          f"OOM kills {ours['memory']['oom_kill']}, restarts {ours['memory']['restarts']}, status {ours['memory']['status']}")
    seed_mem = figures["seed"]["memory"]
    print(f"  seed: Synapse's cgroup limit {'none' if not seed_mem['max'].isdigit() or int(seed_mem['max']) > 2**50 else seed_mem['max']}, "
          f"OOM kills {seed_mem['oom_kill']}, restarts {seed_mem['restarts']}")
    for name in ("seed", "ours"):
        r = figures[name]["result"]
        if r.first_errors:
            print(f"  {name} first errors: {r.first_errors}")


def main() -> None:
    figures = measure()
    print_table(figures)


if __name__ == "__main__":
    main()
