"""Workers against the monolith, on the same lab host in one run, alternating: one Synapse process
(`[workers] preset = "none"`), then the workers the auto rule gives that host (`preset = "auto"`),
in ROUNDS rounds ordered ABBA (monolith, workers / workers, monolith / ...), so that a database
grown by the earlier rounds and this shared machine's drift fall on both alike. Each round drives
two client loads, one after the other:

  steady      the server-load benchmark's own load (tests/lab/load.py, with bench/server.py's
              ROUND: K=8 users in R=4 rooms, 1 msg/s each, 20 s): delivery delays p50/p95/p99
              from send to another user's sync, messages/s, errors; pooled over the rounds (as
              bench/server.py pools its own), side by side with the ratios, and Synapse's CPU
              (all its processes) per message. A fixed rate cannot show a throughput gain: both
              carry the same 8 msg/s if they keep up at all;
  saturation  a closed loop (bench/load.py: USERS clients, sync, send, members, as fast as the
              server answers): throughput and p95 latency (medians of the rounds), with their
              ratios, and where the CPU went: each container's and Caddy's (cgroup and /proc
              counters on the lab host), the load generator's own, and the whole machine's.

The lab host sees the runner's cores (2 here), and the load generators run on the runner too: they
take CPU from the server they measure. The README's "Workers: what they bought" says what that
limits, with the figures.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Row, print_rows

USERS = 16
ROUNDS = 4
"""Rounds of each configuration, ordered ABBA."""
SECONDS = 20.0
WARMUP = 5.0
PRESETS = {"monolith": "none", "workers": "auto"}

CPU_COUNTERS = r"""
for c in $(docker ps --format '{{.Names}}'); do
  pid=$(docker inspect -f '{{.State.Pid}}' "$c") || continue
  ns=""
  for line in $(cat /proc/$pid/cgroup); do
    controllers=$(echo "$line" | cut -d: -f2); path=$(echo "$line" | cut -d: -f3)
    case ",$controllers," in *,cpuacct,*)
      for root in /sys/fs/cgroup/cpu,cpuacct /sys/fs/cgroup/cpuacct; do
        [ -f "$root$path/cpuacct.usage" ] && ns=$(cat "$root$path/cpuacct.usage") && break
      done;;
    esac
    if [ -z "$ns" ] && [ "$controllers" = "" ] && [ -f "/sys/fs/cgroup$path/cpu.stat" ]; then
      ns=$(( $(sed -n 's/^usage_usec //p' "/sys/fs/cgroup$path/cpu.stat") * 1000 ))
    fi
  done
  [ -n "$ns" ] && echo "$c $ns"
done
tick=$(getconf CLK_TCK)
for d in /proc/[0-9]*; do
  [ "$(cat $d/comm 2>/dev/null)" = caddy ] && echo "caddy $(awk -v t=$tick '{printf "%d", ($14 + $15) * 1000000000 / t}' $d/stat)"
done
"""
"""Each container's CPU time (ns) on the lab host, from its cgroup (v1 cpuacct, or v2 cpu.stat),
and Caddy's (a systemd service there, not a container) from /proc."""


def cpu_counters(host) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in host.exec(["sh", "-c", CPU_COUNTERS]).stdout.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            found[name] = found.get(name, 0) + int(value)
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole runner, from /proc/stat."""
    values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return sum(values) - idle, sum(values)


@dataclass
class Round:
    """One configuration's round: both loads' figures and where the CPU went while they ran."""

    name: str
    steady: object
    """The server-load benchmark's fixed-rate load (tests.lab.load.Result)."""
    steady_cpu: dict[str, float]
    """CPU seconds each container (and Caddy) used during the steady load."""
    load: object
    """The saturation load (bench.load.Load)."""
    cores: dict[str, float] = field(default_factory=dict)
    """Cores used, on average over the saturation's measured window, by each container (and Caddy)."""
    client_cores: float = 0.0
    machine: float = 0.0
    """The whole runner's busy share (0-1) over the window: other work on it included."""

    def synapse_cores(self) -> tuple[float, float]:
        """(the main process's, all Synapse processes')."""
        return _synapse(self.cores)

    def describe(self) -> str:
        main, synapse = self.synapse_cores()
        others = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.cores.items())
                           if not k.startswith("synapse") and v >= 0.01)
        s = self.steady
        return (f"{self.name}\n      steady: p50 {s.percentile(50):.0f} ms, p95 {s.percentile(95):.0f} ms, "
                f"{s.messages_per_second:.1f} msg/s, {s.delivered}/{s.expected} delivered, errors {s.error_count}, "
                f"Synapse CPU {steady_cpu_per_message([self]):.1f} ms a message"
                f"\n      saturation: {self.load.summary()}\n      cores: Synapse {synapse:.2f} (main process {main:.2f}), "
                f"{others}; load generator {self.client_cores:.2f}; the runner {self.machine * 100:.0f}% busy")


def _synapse(used: dict[str, float]) -> tuple[float, float]:
    """(the main process's, all Synapse processes') share of `used`, by container name."""
    main = used.get("synapse", 0.0)
    return main, main + sum(v for k, v in used.items() if k.startswith("synapse-"))


def steady_cpu_per_message(rounds: list[Round]) -> float:
    """Milliseconds of Synapse's CPU (all its processes) per message sent by the steady load."""
    sent = sum(r.steady.sent for r in rounds)
    return sum(_synapse(r.steady_cpu)[1] for r in rounds) / sent * 1000 if sent else 0.0


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and b == b and a == a else "-"  # (x == x: not NaN, a round with nothing delivered)


def deploy(host, work: Path, name: str):
    """The real command installs (or changes) the lab host with `name`'s preset, as the
    server-load benchmark installs its boxes (tests.lab.load.deploy: Postgres, the sizing)."""
    from tests.lab import load as L

    return L.deploy(host, work, extra=f'[workers]\npreset = "{PRESETS[name]}"\n')


async def make_users(d) -> tuple[list[str], str]:
    """USERS users for the saturation load, made as the steady load's are (tests.lab.load.make_user:
    the admin API, the message rate limit lifted, a token from the admin API), all in one room:
    their tokens and the room."""
    from bench.load import session
    from tests.lab import load as L

    admin = await L.admin_token(d)
    tokens = [L.make_user(d, admin, f"busy{n}")[1] for n in range(USERS)]
    async with session(d.ca_file, 8) as http:
        async with http.post(f"{d.base}/_matrix/client/v3/createRoom", json={"preset": "public_chat"},
                             headers={"Authorization": f"Bearer {tokens[0]}"}) as answer:
            room_id = (await answer.json())["room_id"]
        for token in tokens[1:]:
            while True:  # joins to one room are rate limited (rc_joins_per_room): wait as told
                async with http.post(f"{d.base}/_matrix/client/v3/join/{room_id}", json={},
                                     headers={"Authorization": f"Bearer {token}"}) as answer:
                    data = await answer.json()
                if answer.status != 429:
                    assert answer.status == 200, data
                    break
                await asyncio.sleep(data.get("retry_after_ms", 1000) / 1000 + 0.1)
    return tokens, room_id


async def measured_round(d, name: str, steady, tokens: list[str], room: str) -> Round:
    """The steady load (its CPU counters read before and after), then the saturation load for
    WARMUP + SECONDS (its counters read when the measured window opens and closes)."""
    from bench.load import drive
    from bench.server import ROUND as STEADY
    from tests.lab import load as L

    before = cpu_counters(d.host)
    fixed = await L.load_round(d, steady, STEADY)
    after = cpu_counters(d.host)
    steady_cpu = {k: (after[k] - before.get(k, after[k])) / 1e9 for k in after}
    await asyncio.sleep(2)  # the steady load's last syncs end

    marks: dict[str, tuple] = {}

    def mark(label: str) -> None:
        marks[label] = (time.monotonic(), cpu_counters(d.host), machine_busy())

    timers = [threading.Timer(WARMUP, mark, ("from",)), threading.Timer(WARMUP + SECONDS, mark, ("to",))]
    client_before, wall_before = time.process_time(), time.monotonic()
    for timer in timers:
        timer.start()
    load = await drive(d.base, d.ca_file, tokens, room, seconds=SECONDS, warmup=WARMUP)
    for timer in timers:
        timer.join()
    client = (time.process_time() - client_before) / (time.monotonic() - wall_before)
    (t0, c0, m0), (t1, c1, m1) = marks["from"], marks["to"]
    cores = {k: (c1[k] - c0.get(k, c1[k])) / 1e9 / (t1 - t0) for k in c1}
    machine = (m1[0] - m0[0]) / (m1[1] - m0[1]) if m1[1] > m0[1] else 0.0
    return Round(name, fixed, steady_cpu, load, cores, client, machine)


async def alternate(host, work: Path) -> list[Round]:
    """Both loads' users made on the monolith, then the rounds in ABBA order, the deployment
    switched by the real command where the order changes configuration."""
    from bench.server import ROUND as STEADY
    from tests.lab import load as L

    d = await asyncio.to_thread(deploy, host, work, "monolith")
    steady = await L.prepare(d, STEADY)
    rounds: list[Round] = []
    try:
        tokens, room = await make_users(d)
        order = [name for r in range(ROUNDS) for name in (("monolith", "workers") if r % 2 == 0
                                                           else ("workers", "monolith"))]
        deployed = "monolith"
        for number, name in enumerate(order, start=1):
            if name != deployed:
                started = time.monotonic()
                d = await asyncio.to_thread(deploy, host, work, name)  # the loop stays live: the clients' connections
                deployed = name
                running = sorted(n for n in host.exec("docker ps --format '{{.Names}}'").stdout.split()
                                 if n.startswith("synapse-"))
                print(f"  switched to {name} in {time.monotonic() - started:.0f} s; workers: "
                      f"{', '.join(running) or 'none'}", flush=True)
                await asyncio.sleep(5)  # the processes settle (caches, the health checks' first rounds)
            rounds.append(await measured_round(d, name, steady, tokens, room))
            print(f"  round {number}, {rounds[-1].describe()}", flush=True)  # as it goes; the summary follows
    finally:
        await steady.close()
    return rounds


def measure() -> tuple[list[tuple], list[Row], list[str]]:
    """(the steady load's rows, bench.server.print_compared's, monolith then workers; the
    saturation's rows; notes)."""
    from bench.server import ROUND as STEADY
    from bench.server import load_rows
    from tests.lab import lab
    from tests.lab import load as L
    from tests.lab.scenarios import ready_host

    lab.ensure_docker_engine()
    work = Path(tempfile.mkdtemp(prefix="mi-bench-workers-"))
    notes: list[str] = []
    try:
        with ready_host(lab.build_host_image(), lab.session_key(work), lab.build_synapse_image(),
                        postgres_image=lab.build_postgres_image(), redis_image=lab.build_redis_image()) as host:
            rounds = asyncio.run(alternate(host, work))
            cores = host.exec("nproc").stdout.strip()
            notes.append(f"the lab host sees {cores} cores; {ROUNDS} rounds of each configuration ordered ABBA, each "
                         f"round the steady load then the saturation load ({USERS} clients, sync, send, members in a "
                         f"loop, {WARMUP:.0f} s warm-up and {SECONDS:.0f} s measured); both load generators on the "
                         "same cores as the server")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {name: [r for r in rounds if r.name == name] for name in PRESETS}

    merged = {name: L.merge([r.steady for r in rs]) for name, rs in by.items()}
    steady_rows = load_rows(merged["monolith"], merged["workers"])
    steady_rows.append(("Synapse CPU per message (all its processes)", steady_cpu_per_message(by["monolith"]),
                        steady_cpu_per_message(by["workers"]), "ms", "lower"))
    notes.append(f"steady: {STEADY.describe()}, pooled over {ROUNDS} rounds each; p95 of each round's pair (workers / "
                 "monolith): " + ", ".join(_ratio(w.steady.percentile(95), m.steady.percentile(95))
                                           for w, m in zip(by["workers"], by["monolith"])))
    for name, r in merged.items():
        if r.error_count:
            notes.append(f"steady, {name}: {r.error_count} errors ({r.errors}); a round's failed sends are not "
                         f"delivered nor delayed, so its delays are of what got through; the first: {r.first_errors}")
    notes.append(f"steady: a fixed rate ({STEADY.users * STEADY.rate:g} msg/s in all) cannot show a throughput gain: "
                 "its messages/s only says whether each kept up; the saturation rows say what each could carry")

    rate = {name: statistics.median(r.load.throughput for r in rs) for name, rs in by.items()}
    p95 = {name: statistics.median(r.load.percentile(95) for r in rs) for name, rs in by.items()}
    pairs = [(a.load.throughput, b.load.throughput) for a, b in zip(by["workers"], by["monolith"])]
    notes.append("saturation: throughput ratio of each round's pair (workers / monolith): "
                 + ", ".join(_ratio(w, m) for w, m in pairs))
    for name, rs in by.items():
        if errors := sum(r.load.errors for r in rs):
            answered = {kind: sum(len(r.load.latencies.get(kind, [])) for r in rs) for kind in ("sync", "send", "members")}
            notes.append(f"saturation, {name}: {errors} failed requests over its rounds (answered: "
                         + ", ".join(f"{k} {v}" for k, v in answered.items()) + "); where sends fail, the cheaper "
                         "reads left over raise the throughput and lower the p95: those figures do not compare")
    for name, rs in by.items():
        mains = [r.synapse_cores() for r in rs]
        notes.append(f"saturation, {name}, medians: Synapse {statistics.median(s for _, s in mains):.2f} cores (main "
                     f"process {statistics.median(m for m, _ in mains):.2f}), postgres "
                     f"{statistics.median(r.cores.get('postgres', 0.0) for r in rs):.2f}, caddy "
                     f"{statistics.median(r.cores.get('caddy', 0.0) for r in rs):.2f}, redis "
                     f"{statistics.median(r.cores.get('redis', 0.0) for r in rs):.2f}, load generator "
                     f"{statistics.median(r.client_cores for r in rs):.2f}, the runner "
                     f"{statistics.median(r.machine for r in rs) * 100:.0f}% busy")
    rows = [
        Row("saturation throughput: workers vs one process (req/s)", rate["workers"], rate["monolith"], "/s",
            rate["workers"] / rate["monolith"] if rate["monolith"] else 0.0, ">= 1.0x"),
        Row("saturation p95 latency: workers vs one process", p95["workers"], p95["monolith"], "s",
            p95["workers"] / p95["monolith"] if p95["monolith"] else 0.0, "<= 1.0x"),
    ]
    return steady_rows, rows, notes


def main() -> None:
    from bench.server import print_compared

    logging.getLogger("nio.responses").setLevel(logging.ERROR)  # a failed sync is counted (and its first shown)
    steady_rows, rows, notes = measure()
    print("\nWorkers: the server-load benchmark's load (tests/lab/load.py) on one process and on the workers "
          "(lab host, one run)")
    print_compared(("monolith", "workers"), steady_rows)
    print_rows("Workers: the saturation load (bench/load.py) on one process and on the workers (lab host, one run)",
               rows)
    for note in notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
