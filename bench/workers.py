"""Workers against the monolith: the same client load (bench/load.py) on the same lab host in one
run, alternating: one Synapse process (`[workers] preset = "none"`), then the workers the auto
rule gives that host (`preset = "auto"`), in ROUNDS rounds ordered ABBA (monolith, workers /
workers, monolith / ...), so that a database grown by the earlier rounds and this shared machine's
drift fall on both alike. Throughput and p95 latency (medians of the rounds), with their ratios,
and where the CPU went in each round: each container's and Caddy's (cgroup and /proc counters on
the lab host), the load generator's own, and the whole machine's.

The lab host sees the runner's cores (2 here), and the load generator runs on the runner too: it
takes CPU from the server it measures. The README's "Workers: what they bought" says what that
limits, with the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, Row, print_rows

USERS = 16
ROUNDS = 4
"""Rounds of each configuration, ordered ABBA."""
SECONDS = 20.0
WARMUP = 5.0
SERVER_NAME = "example.test"
MATRIX_HOST = "matrix.example.test"
ADMIN_PASSWORD = "bench-admin-password-1"
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
    """One configuration's round: the load's figures and where the CPU went while it was measured."""

    name: str
    load: object
    cores: dict[str, float] = field(default_factory=dict)
    """Cores used, on average over the measured window, by each container (and Caddy)."""
    client_cores: float = 0.0
    machine: float = 0.0
    """The whole runner's busy share (0-1) over the window: other work on it included."""

    def synapse_cores(self) -> tuple[float, float]:
        """(the main process's, all Synapse processes')."""
        main = self.cores.get("synapse", 0.0)
        return main, main + sum(v for k, v in self.cores.items() if k.startswith("synapse-"))

    def describe(self) -> str:
        main, synapse = self.synapse_cores()
        others = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.cores.items())
                           if not k.startswith("synapse") and v >= 0.01)
        return (f"{self.name}: {self.load.summary()}\n      cores: Synapse {synapse:.2f} (main process {main:.2f}), "
                f"{others}; load generator {self.client_cores:.2f}; the runner {self.machine * 100:.0f}% busy")


def install(host, work: Path, preset: str, run: int) -> dict:
    from tests.lab.scenarios import existing_server_answers

    answers = work / "answers.toml"
    answers.write_text(existing_server_answers(host, server_name=SERVER_NAME, matrix_host=MATRIX_HOST,
                                               extra=f'[workers]\npreset = "{preset}"\n'))
    report = work / f"report-{run}.json"
    subprocess.run([sys.executable, "-m", "installer", "--answers", str(answers), "--state-dir", str(work / "state"),
                    "--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                   stdin=subprocess.DEVNULL, env={**os.environ, "MATRIX_ADMIN_PASSWORD": ADMIN_PASSWORD})
    result = json.loads(report.read_text())
    failed = [s for s in result["stages"] if s["status"] == "failed" and s["name"] != "federation.check"]
    if failed:
        raise RuntimeError(f"the install ({preset}) failed: {failed}")
    return result


def admin_api(host, token: str, method: str, path: str, body: dict) -> dict:
    """The admin API on the host's loopback (Caddy does not pass /_synapse/admin)."""
    out = host.exec(f"curl -fsS -X {method} -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' "
                    f"-d '{json.dumps(body)}' http://127.0.0.1:8008{path}", check=True).stdout
    return json.loads(out or "{}")


async def make_users(host, base: str, ca: Path) -> tuple[list[str], str]:
    """USERS users made through the admin API, exempt from the message rate limit (a load test, not
    a spammer), logged in by it (login has its own rate limit), all in one room: their tokens."""
    from bench.load import login, session

    async with session("127.0.0.1", ca, 8) as http:
        admin = await login(http, base, "admin", ADMIN_PASSWORD)
        tokens = []
        for n in range(USERS):
            user = f"@load{n}:{SERVER_NAME}"
            admin_api(host, admin, "PUT", f"/_synapse/admin/v2/users/{user}", {"password": f"load-password-{n}"})
            admin_api(host, admin, "POST", f"/_synapse/admin/v1/users/{user}/override_ratelimit",
                      {"messages_per_second": 0, "burst_count": 0})
            tokens.append(admin_api(host, admin, "POST", f"/_synapse/admin/v1/users/{user}/login", {})["access_token"])
        async with http.post(f"{base}/_matrix/client/v3/createRoom", json={"preset": "public_chat"},
                             headers={"Authorization": f"Bearer {tokens[0]}"}) as answer:
            room_id = (await answer.json())["room_id"]
        for token in tokens[1:]:
            while True:  # joins to one room are rate limited (rc_joins_per_room): wait as told
                async with http.post(f"{base}/_matrix/client/v3/join/{room_id}", json={},
                                     headers={"Authorization": f"Bearer {token}"}) as answer:
                    data = await answer.json()
                if answer.status != 429:
                    assert answer.status == 200, data
                    break
                await asyncio.sleep(data.get("retry_after_ms", 1000) / 1000 + 0.1)
    return tokens, room_id


def measured_round(host, name: str, base: str, ca: Path, tokens: list[str], room: str) -> Round:
    """The load for WARMUP + SECONDS; CPU counters read when the measured window opens and closes."""
    from bench.load import drive

    marks: dict[str, tuple] = {}

    def mark(label: str) -> None:
        marks[label] = (time.monotonic(), cpu_counters(host), machine_busy())

    timers = [threading.Timer(WARMUP, mark, ("from",)), threading.Timer(WARMUP + SECONDS, mark, ("to",))]
    client_before, wall_before = time.process_time(), time.monotonic()
    for timer in timers:
        timer.start()
    load = asyncio.run(drive(base, "127.0.0.1", ca, tokens, room, seconds=SECONDS, warmup=WARMUP))
    for timer in timers:
        timer.join()
    client = (time.process_time() - client_before) / (time.monotonic() - wall_before)
    (t0, c0, m0), (t1, c1, m1) = marks["from"], marks["to"]
    cores = {k: (c1[k] - c0.get(k, c1[k])) / 1e9 / (t1 - t0) for k in c1}
    machine = (m1[0] - m0[0]) / (m1[1] - m0[1]) if m1[1] > m0[1] else 0.0
    return Round(name, load, cores, client, machine)


def measure() -> tuple[list[Row], list[str]]:
    from tests.lab import lab
    from tests.lab.scenarios import ready_host

    lab.ensure_docker_engine()
    work = Path(tempfile.mkdtemp(prefix="mi-bench-workers-"))
    notes: list[str] = []
    rounds: list[Round] = []
    try:
        with ready_host(lab.build_host_image(), lab.session_key(work), lab.build_synapse_image(),
                        postgres_image=lab.build_postgres_image(), redis_image=lab.build_redis_image()) as host:
            base = f"https://{MATRIX_HOST}:{host.https_port}"
            install(host, work, "none", 0)
            ca = work / "ca.crt"
            ca.write_bytes(host.caddy_root_ca())
            tokens, room = asyncio.run(make_users(host, base, ca))
            order = [name for r in range(ROUNDS) for name in (("monolith", "workers") if r % 2 == 0
                                                               else ("workers", "monolith"))]
            deployed = "monolith"
            for number, name in enumerate(order, start=1):
                if name != deployed:
                    started = time.monotonic()
                    install(host, work, PRESETS[name], number)
                    deployed = name
                    running = sorted(n for n in host.exec("docker ps --format '{{.Names}}'").stdout.split()
                                     if n.startswith("synapse-"))
                    print(f"  switched to {name} in {time.monotonic() - started:.0f} s; workers: "
                          f"{', '.join(running) or 'none'}", flush=True)
                    time.sleep(5)  # the processes settle (caches, the health checks' first rounds)
                rounds.append(measured_round(host, name, base, ca, tokens, room))
                print(f"  round {number}, {rounds[-1].describe()}", flush=True)  # as it goes; the summary follows
            cores = host.exec("nproc").stdout.strip()
            notes.append(f"the lab host sees {cores} cores; {USERS} clients (sync, send, members in a loop), "
                         f"{ROUNDS} rounds each ordered ABBA, {WARMUP:.0f} s warm-up and {SECONDS:.0f} s measured "
                         "per round; the load generator on the same cores")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {name: [r for r in rounds if r.name == name] for name in PRESETS}
    rate = {name: statistics.median(r.load.throughput for r in rs) for name, rs in by.items()}
    p95 = {name: statistics.median(r.load.percentile(95) for r in rs) for name, rs in by.items()}
    pairs = [(a.load.throughput, b.load.throughput) for a, b in zip(by["workers"], by["monolith"])]
    notes.append("throughput ratio of each round's pair (workers / monolith): "
                 + ", ".join(f"{w / m:.2f}x" for w, m in pairs if m))
    for name, rs in by.items():
        mains = [r.synapse_cores() for r in rs]
        notes.append(f"{name}, medians: Synapse {statistics.median(s for _, s in mains):.2f} cores (main process "
                     f"{statistics.median(m for m, _ in mains):.2f}), postgres "
                     f"{statistics.median(r.cores.get('postgres', 0.0) for r in rs):.2f}, caddy "
                     f"{statistics.median(r.cores.get('caddy', 0.0) for r in rs):.2f}, load generator "
                     f"{statistics.median(r.client_cores for r in rs):.2f}, the runner "
                     f"{statistics.median(r.machine for r in rs) * 100:.0f}% busy")
    rows = [
        Row("throughput: workers vs one process (req/s)", rate["workers"], rate["monolith"], "/s",
            rate["workers"] / rate["monolith"] if rate["monolith"] else 0.0, ">= 1.0x"),
        Row("p95 latency: workers vs one process", p95["workers"], p95["monolith"], "s",
            p95["workers"] / p95["monolith"] if p95["monolith"] else 0.0, "<= 1.0x"),
    ]
    return rows, notes


def main() -> None:
    rows, notes = measure()
    print_rows("Workers: the same client load on one process and on the workers (lab host, one run)", rows)
    for note in notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
