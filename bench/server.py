"""The server it builds, under a client load: two deployments on two lab boxes of the same size
(2 GiB, this runner's 2 cores, as each host's /proc/meminfo and CPUs say), side by side, the
same load in alternating rounds:

  seed  SQLite and Synapse's generated defaults, as the manual guide leaves them (the installer
        with [database] engine = "sqlite" and the sizing switched off: MATRIX_INSTALLER_UNTUNED=1);
  ours  what the installer deploys: Postgres, and Synapse sized for the box (installer.sizing).

The load (tests/lab/load.py, shared with tests/lab/test_tuning_lab.py): K=8 users (matrix-nio) in
R=4 rooms of 4 members, each user sending 1 message a second (8 msg/s, 24 deliveries/s), while
every user's /sync loop receives; 3 rounds of 20 s per deployment, alternating (seed, ours / ours,
seed / seed, ours), since this machine's 2 cores are shared with other work and drift. Sized to
fit a few minutes here (~3 min to set both boxes up, ~3 min of load) and to keep the client (one
Python process with 8 sync loops on the same cores) below saturation: twice the users at 1.5
msg/s each already queues ours for seconds on this shared machine (see the README).

Printed: p50/p95/p99 delay from send to arrival in another user's sync, messages/s, errors, peak
and steady RSS of Synapse and Postgres (cgroup memory.stat, every 0.5 s), CPU per message, the
database's size afterwards and before/after the state compression, Synapse's own profile of the
requests, and, from one more round on ours with pg_stat_statements, what Postgres spends per
message (statements, transactions, time planning and executing). `python -m bench server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

from tests.lab.load import LOAD

MIB = 1024 * 1024


ROUNDS = 3
ROUND = dataclasses.replace(LOAD, seconds=20.0, drain=15.0)
"""Each configuration gets ROUNDS rounds of the load, 20 s each, alternating with the other's
(seed, ours / ours, seed / seed, ours): both lab boxes run side by side, so that this shared
machine's drift (other work on its 2 cores) falls on both alike."""
CONFIGS = (("seed", "sqlite", False), ("ours", "postgres", True))


def measure(keep: bool = False) -> dict[str, dict]:
    from concurrent.futures import ThreadPoolExecutor

    from tests.lab import lab
    from tests.lab import load as L
    from tests.lab.scenarios import ready_host

    lab.ensure_docker_engine()
    work = Path(tempfile.mkdtemp(prefix="mi-bench-server-"))
    figures: dict[str, dict] = {}
    try:
        images = (lab.build_host_image(), lab.session_key(work), lab.build_synapse_image())
        postgres, compressor = lab.build_postgres_image(), lab.build_compressor_image()
        with contextlib.ExitStack() as stack:
            started = time.monotonic()

            def up(config: tuple[str, str, bool]) -> L.Deployed:
                name, engine, tuned = config
                host = stack.enter_context(ready_host(*images, postgres_image=postgres, memory_mib=L.BOX_MIB, cores=2,
                                                      compressor_image=compressor))
                return L.deploy(host, work / name, engine=engine, tuned=tuned)

            with ThreadPoolExecutor(2) as pool:
                deployed = dict(zip((c[0] for c in CONFIGS), pool.map(up, CONFIGS)))
            print(f"  both boxes ready and installed in {time.monotonic() - started:.0f} s", flush=True)
            results = asyncio.run(_alternate(deployed))
            profile = results.pop("postgres_profile")
            for name, d in deployed.items():
                figures[name] = {"result": L.merge(results[name]), "memory": L.container_memory(d.host, "synapse"),
                                 "db": L.database_size(d)}
            figures["ours"]["postgres_profile"] = profile
            figures["ours"]["compression"] = compress_once(deployed["ours"])
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        lab.stop_docker_engine()
    return figures


async def _alternate(deployed: dict) -> dict[str, list]:
    from tests.lab import load as L

    prepared = {name: await L.prepare(d, ROUND) for name, d in deployed.items()}
    results: dict[str, list] = {name: [] for name in deployed}
    try:
        for round in range(ROUNDS):
            order = list(deployed) if round % 2 == 0 else list(reversed(deployed))
            for name in order:
                results[name].append(await L.load_round(deployed[name], prepared[name], ROUND))
                r = results[name][-1]
                print(f"  round {round + 1} {name}: p50 {r.percentile(50):.0f} ms, p95 {r.percentile(95):.0f} ms, "
                      f"errors {r.error_count}", flush=True)
        # Where ours spends the time the seed's in-process SQLite does not: one more round, profiled.
        results["postgres_profile"] = await L.postgres_profile(deployed["ours"], prepared["ours"], ROUND)
    finally:
        for p in prepared.values():
            await p.close()
    return results


def compress_once(d) -> dict:
    """Run the nightly state compression now (the timer's own service) and read what it recorded."""
    from installer.components.tuning.health import COMPRESS_STAMP

    done = d.host.exec("systemctl start matrix-compress-state.service", timeout=600)
    stamp = d.host.exec(f"cat {COMPRESS_STAMP}").stdout.split()
    return {"ok": done.returncode == 0 and len(stamp) >= 4 and stamp[1] == "ok",
            "before": int(stamp[2]) if len(stamp) >= 4 else 0, "after": int(stamp[3]) if len(stamp) >= 4 else 0,
            "log": d.host.exec("journalctl -u matrix-compress-state --no-pager -n 8 -o cat").stdout.strip()}


def _share(part: int, whole: int) -> float:
    return part / whole * 100 if whole else 0.0


def load_rows(a, b) -> list[tuple[str, float, float, str, str]]:
    """The load's own figures for two results of it (tests.lab.load.Result), a's then b's:
    (measure, a, b, unit, better). bench/workers.py prints them too."""
    out = [(f"delivery delay p{p}", a.percentile(p), b.percentile(p), "ms", "lower") for p in (50, 95, 99)]
    out.append(("messages/s sent and answered", a.messages_per_second, b.messages_per_second, "/s", "higher"))
    out.append(("deliveries (of expected)", _share(a.delivered, a.expected), _share(b.delivered, b.expected), "%", "higher"))
    out.append(("errors (send, sync, lost)", a.error_count, b.error_count, "", "lower"))
    return out


def rows(figures: dict[str, dict]) -> list[tuple[str, float, float, str, str]]:
    """(measure, seed, ours, unit, better): lower is better except throughput."""
    seed, ours = figures["seed"]["result"], figures["ours"]["result"]
    out = load_rows(seed, ours)
    for container in ("synapse", "postgres"):
        s_peak, s_steady = seed.rss(container)
        o_peak, o_steady = ours.rss(container)
        if s_peak or o_peak:
            out.append((f"{container} RSS peak", s_peak / MIB, o_peak / MIB, "MiB", "lower"))
            out.append((f"{container} RSS steady", s_steady / MIB, o_steady / MIB, "MiB", "lower"))
    s_total = sum(seed.rss(c)[0] for c in ("synapse", "postgres"))
    o_total = sum(ours.rss(c)[0] for c in ("synapse", "postgres"))
    out.append(("Synapse + database RSS peak (sum of peaks)", s_total / MIB, o_total / MIB, "MiB", "lower"))
    for container in ("synapse", "postgres"):
        s_cpu, o_cpu = seed.cpu.get(container, 0.0), ours.cpu.get(container, 0.0)
        if s_cpu or o_cpu:
            out.append((f"{container} CPU per message", s_cpu / max(seed.sent, 1) * 1000, o_cpu / max(ours.sent, 1) * 1000, "ms", "lower"))
    out.append(("database size (data)", figures["seed"]["db"]["data"] / MIB, figures["ours"]["db"]["data"] / MIB, "MiB", "lower"))
    out.append(("database files on disk", figures["seed"]["db"]["disk"] / MIB, figures["ours"]["db"]["disk"] / MIB, "MiB", "lower"))
    return out


def print_compared(names: tuple[str, str], table: list[tuple[str, float, float, str, str]]) -> None:
    """Rows of (measure, a, b, unit, better) side by side, with b/a and whether b is the better."""
    a_name, b_name = names
    width = max(10, len(f"{b_name}/{a_name}"))
    print(f"  {'measure':<44} {a_name:>10} {b_name:>10} {b_name + '/' + a_name:>{width}}  better")
    for name, a, b, unit, better in table:
        ratio = f"{b / a:.2f}x" if a else "-"
        good = (b < a if better == "lower" else b > a) if a != b else None
        verdict = {True: "improved", False: "NOT improved", None: "same"}[good]
        print(f"  {name:<44} {a:>8.1f}{unit[:2]:<2} {b:>8.1f}{unit[:2]:<2} {ratio:>{width}}  {better} is better: {verdict}")


def print_table(figures: dict[str, dict]) -> None:
    from tests.lab import load as L

    print(f"\nServer under load: {ROUND.describe()}, {ROUNDS} rounds each, alternating, on two lab boxes of "
          f"{L.BOX_MIB // 1024} GiB and 2 cores side by side")
    print_compared(("seed", "ours"), rows(figures))
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
    print("  profile (Synapse's access log, medians of the last round: wall, CPU, waiting for a database connection,"
          " in database transactions, transactions):")
    for name in ("seed", "ours"):
        for kind, p in figures[name]["result"].profile.items():
            print(f"    {name} {kind:<4} n={p['n']:<5.0f} wall {p['wall_ms']:6.1f} ms (p95 {p['wall_p95_ms']:6.1f}), "
                  f"CPU {p['cpu_ms']:5.1f} ms, db wait {p['db_wait_ms']:5.1f} ms, db {p['db_ms']:5.1f} ms in {p['db_txns']:.0f} txns")
    pg = figures["ours"].get("postgres_profile")
    if pg:
        print(f"  ours, Postgres per message sent (one more round with pg_stat_statements, not among the figures above): "
              f"{pg['statements']:.0f} statements in {pg['transactions']:.0f} transactions, "
              f"{pg['plan_ms']:.1f} ms planning them and {pg['exec_ms']:.1f} ms executing them")
        for calls, plan, run, query in pg["top"]:
            print(f"    {calls:>6} calls, per message {plan:4.1f} ms planning + {run:4.1f} ms executing: {query}")
    c = figures["ours"].get("compression")
    if c:
        print(f"  ours, state compression after the load (the nightly timer's service, run now): "
              f"{'ok' if c['ok'] else 'FAILED'}, database {c['before'] / MIB:.1f} MiB -> {c['after'] / MIB:.1f} MiB")
        if not c["ok"]:
            print("    " + c["log"].replace("\n", "\n    "))


def main() -> None:
    figures = measure()
    print_table(figures)


if __name__ == "__main__":
    main()
