"""A client load against a lab deployment, as users would make it: K users (matrix-nio, from the
package index) in R rooms, each sending at a fixed rate while every user's /sync loop receives
what the others send; the delay from send to arrival, errors, throughput; the memory of
Synapse's and Postgres's containers from the lab host's cgroups, sampled while it runs; the
database's size afterwards. bench/server.py runs it against two deployments side by side;
tests/lab/test_tuning_lab.py runs it against the tuned one on a small box.

The lab host is the only target: every request goes to its published HTTPS port on loopback.
"""

from __future__ import annotations

import asyncio
import re
import json
import os
import shlex
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nio

from tests.lab import lab as _lab
from tests.lab.matrix_client import LoopbackResolver, client
from tests.lab.scenarios import ROOT, existing_server_answers

SERVER_NAME = "example.test"
MATRIX_HOST = "matrix.example.test"
ADMIN = "admin"
ADMIN_PASSWORD = "load-admin-password-1"
PASSWORD_ENV = "MI_LOAD_ADMIN_PASSWORD"
BOX_MIB = 2048
"""The lab box the load runs on: 2 GiB (so the sizing gives Synapse a 1 GiB limit), this runner's 2 cores."""


@dataclass(frozen=True)
class Load:
    """K users in R rooms (each user in `rooms_per_user` of them), each sending `rate` messages a
    second for `seconds`, open loop (a slow answer does not slow the sender down)."""

    users: int = 8
    rooms: int = 4
    rooms_per_user: int = 2
    rate: float = 1.0
    seconds: float = 45.0
    drain: float = 20.0
    """Seconds after the last send for the last messages to arrive (later ones count as lost)."""

    def members(self, room: int) -> list[int]:
        return [u for u in range(self.users) if room in self.rooms_of(u)]

    def rooms_of(self, user: int) -> list[int]:
        return [(user + k) % self.rooms for k in range(self.rooms_per_user)]

    def describe(self) -> str:
        return (f"K={self.users} users, R={self.rooms} rooms ({self.rooms_per_user} per user, "
                f"{len(self.members(0))} members each), {self.rate:g} msg/s per user for {self.seconds:g} s")


LOAD = Load()


@dataclass
class Deployed:
    host: _lab.LabHost
    work: Path
    ca_file: Path
    engine: str
    tuned: bool
    report: dict

    def client(self, user: str) -> nio.AsyncClient:
        return client(MATRIX_HOST, self.host.https_port, self.ca_file, user)

    def http(self) -> aiohttp.ClientSession:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=context))

    @property
    def base(self) -> str:
        return f"https://{MATRIX_HOST}:{self.host.https_port}"


def deploy(host: _lab.LabHost, work: Path, *, engine: str = "postgres", tuned: bool = True, extra: str = "",
           timeout: float = 1200) -> Deployed:
    """The real command installs the lab host as an existing server (`tuned=False`: Synapse's
    generated defaults, the benchmark's seed; the sizing is switched off by the environment).
    `extra`: more answers (bench/workers.py's `[workers]`); run again on the same `work`, it
    changes the deployment in place, as a rerun of the command does."""
    from installer.host.connect import UNTUNED_ENV

    work.mkdir(parents=True, exist_ok=True)
    answers = work / "answers.toml"
    answers.write_text(existing_server_answers(
        host, server_name=SERVER_NAME, matrix_host=MATRIX_HOST,
        registration=f'admin_user = "{ADMIN}"\nadmin_password_env = "{PASSWORD_ENV}"',
        extra=f'[database]\nengine = "{engine}"\n{extra}'))
    report = work / "report.json"
    env = {**os.environ, PASSWORD_ENV: ADMIN_PASSWORD}
    env.pop(UNTUNED_ENV, None)
    if not tuned:
        env[UNTUNED_ENV] = "1"
    done = subprocess.run([sys.executable, "-m", "installer", "--answers", str(answers), "--state-dir", str(work / "state"),
                           "--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(report.read_text())
    # The federation test needs DNS and the lab's CA (other tests cover it): every other stage must pass.
    failed = {s["name"]: s.get("error") for s in result["stages"]
              if s["status"] not in ("done", "unchanged", "skipped") and s["name"] != "federation.check"}
    assert not failed, (failed, done.stdout[-4000:])
    ca = work / "caddy-root.crt"
    ca.write_bytes(host.caddy_root_ca())
    return Deployed(host, work, ca, engine, tuned, result)


# --- memory, from the lab host's cgroups --------------------------------------------------------

SAMPLE_SECONDS = 0.5
_CGROUP = ("cg() { pid=$(docker inspect -f '{{.State.Pid}}' \"$1\" 2>/dev/null) || return; "
           "v1=$(sed -n 's/^[0-9]*:memory://p' /proc/$pid/cgroup); "
           "if [ -n \"$v1\" ] && [ -d /sys/fs/cgroup/memory$v1 ]; then echo /sys/fs/cgroup/memory$v1; "
           "else echo /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$pid/cgroup); fi; }; ")
"""The container's memory cgroup, v1 (this runner) or v2 (current distributions)."""
_RSS = "awk '/^(anon|rss|file_mapped|mapped_file) /{s+=$2} END{print s+0}'"
"""Resident bytes from memory.stat: anon + file_mapped (v2), rss + mapped_file (v1)."""


class Sampler:
    """Samples each container's resident memory (cgroup v2 memory.stat: anon + file_mapped, what
    `ps` counts as RSS) every SAMPLE_SECONDS on the lab host, out of band, until stopped."""

    def __init__(self, host: _lab.LabHost, containers: list[str]):
        self.host, self.containers = host, containers
        loop = "".join(f"{c}=$(cg {c}); " for c in containers)
        each = " ".join(f"$(test -n \"${c}\" && {_RSS} \"${c}/memory.stat\" || echo 0)" for c in containers)
        script = (_CGROUP + loop + f"while :; do echo $(date +%s.%N) {each}; sleep {SAMPLE_SECONDS}; done")
        self.proc = subprocess.Popen(["docker", "exec", host.container, "sh", "-c", script],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.started = time.time()

    def stop(self) -> dict[str, list[tuple[float, int]]]:
        self.host.exec("pkill -f 'while :; do echo' || true")
        out, _ = self.proc.communicate(timeout=30)
        samples: dict[str, list[tuple[float, int]]] = {c: [] for c in self.containers}
        for line in out.splitlines():
            words = line.split()
            if len(words) == len(self.containers) + 1:
                for c, value in zip(self.containers, words[1:]):
                    samples[c].append((float(words[0]), int(value)))
        return samples


def cpu_seconds(host: _lab.LabHost, containers: list[str]) -> dict[str, float]:
    """CPU time each container has used so far (cgroup v1 cpuacct.usage, v2 cpu.stat usage_usec)."""
    script = _CGROUP + "".join(
        f"c=$(cg {c}); p=${{c#/sys/fs/cgroup/memory}}; "
        f"echo {c} $(cat /sys/fs/cgroup/cpuacct$p/cpuacct.usage 2>/dev/null || "
        f"echo $(( $(sed -n 's/^usage_usec //p' $c/cpu.stat) * 1000 ))); " for c in containers)
    out = host.exec(script).stdout
    return {w[0]: int(w[1]) / 1e9 for w in (line.split() for line in out.splitlines()) if len(w) == 2 and w[1].isdigit()}


def container_memory(host: _lab.LabHost, name: str) -> dict[str, Any]:
    """The container's cgroup limit, peak (memory.peak: with page cache), OOM kills, and Docker's
    own view (OOMKilled, restarts)."""
    script = (_CGROUP + f"c=$(cg {name}); echo max=$(cat $c/memory.max $c/memory.limit_in_bytes 2>/dev/null); "
              "echo peak=$(cat $c/memory.peak $c/memory.max_usage_in_bytes 2>/dev/null); "
              "echo oom_kill=$(sed -n 's/^oom_kill //p' $c/memory.events $c/memory.oom_control 2>/dev/null); "
              f"echo docker=$(docker inspect -f '{{{{.State.OOMKilled}}}} {{{{.RestartCount}}}} {{{{.State.Status}}}}' {name})")
    out = host.exec(script, check=True).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    oom_killed, restarts, status = (values.get("docker", "") + "  ").split(" ")[:3]
    return {"max": values.get("max", ""), "peak": int(values["peak"]) if values.get("peak", "").isdigit() else None,
            "oom_kill": int(values.get("oom_kill") or 0), "oom_killed": oom_killed == "true",
            "restarts": int(restarts or 0), "status": status}


def database_size(d: Deployed) -> dict[str, int]:
    """Bytes: the database as the server counts it, and its files on disk."""
    if d.engine == "postgres":
        data = d.host.exec("docker exec postgres psql -U synapse -d synapse -Atc \"select pg_database_size('synapse')\"",
                           check=True).stdout.strip()
        disk = d.host.exec("du -sb /opt/matrix/synapse/postgres | cut -f1", check=True).stdout.strip()
        return {"data": int(data), "disk": int(disk)}
    disk = d.host.exec("du -cb /opt/matrix/synapse/data/homeserver.db* | tail -n 1 | cut -f1", check=True).stdout.strip()
    return {"data": int(disk), "disk": int(disk)}


# --- the load ----------------------------------------------------------------------------------------

@dataclass
class Result:
    load: Load
    delays_ms: list[float] = field(default_factory=list)
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    send_ms: list[float] = field(default_factory=list)
    window: float = 0.0
    memory: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    load_started: float = 0.0
    load_ended: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds each container used during the load."""
    profile: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_rounds: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    rounds: int = 1

    first_errors: dict[str, str] = field(default_factory=dict)

    def error(self, kind: str, what: object = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.first_errors.setdefault(kind, str(what)[:300])

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile(self, p: float) -> float:
        if not self.delays_ms:
            return float("nan")
        ordered = sorted(self.delays_ms)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    @property
    def messages_per_second(self) -> float:
        """Messages sent and answered, per second of the load."""
        return (self.sent - self.errors.get("send", 0)) / (self.load.seconds * self.rounds)

    def rss(self, container: str) -> tuple[int, int]:
        """(peak, steady) resident bytes during the load: steady is the median of its second half."""
        if len(self.rss_rounds.get(container, [])) > 1:
            rounds = self.rss_rounds[container]
            return max(p for p, _ in rounds), int(statistics.median(s for _, s in rounds))
        samples = [(t, v * 1) for t, v in self.memory.get(container, []) if self.load_started <= t <= self.load_ended + 5]
        if not samples:
            return 0, 0
        half = [v for t, v in samples if t >= (self.load_started + self.load_ended) / 2]
        return max(v for _, v in samples), int(statistics.median(half or [v for _, v in samples]))


def admin_api(d: Deployed, method: str, path: str, token: str, body: object | None = None) -> tuple[int, dict]:
    """The admin API, which Caddy does not expose: on the lab host's loopback, as an admin would."""
    argv = ["curl", "-sS", "-X", method, "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
            "-w", "\n%{http_code}", f"http://127.0.0.1:8008{path}"]
    if body is not None:
        argv[1:1] = ["--data-binary", "@-"]
    out = d.host.exec(argv, input=json.dumps(body) if body is not None else None, check=True).stdout
    text, _, status = out.rpartition("\n")
    try:
        return int(status), json.loads(text or "{}")
    except ValueError:
        return int(status), {"raw": text}


async def admin_token(d: Deployed) -> str:
    """The admin's access token (one password login through Caddy)."""
    async with d.http() as http, http.post(f"{d.base}/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": ADMIN}, "password": ADMIN_PASSWORD}) as r:
        body = await r.json()
        assert r.status == 200, body
        return body["access_token"]


def make_user(d: Deployed, admin: str, name: str, *, unlimited: bool = True) -> tuple[str, str]:
    """A user made by the admin API (registration stays closed), its rate limits lifted for the
    load (`unlimited`), and an access token for it from the admin API (password logins are rate
    limited per address). Returns (user_id, token)."""
    user_id = f"@{name}:{SERVER_NAME}"
    status, body = admin_api(d, "PUT", f"/_synapse/admin/v2/users/{user_id}", admin, {"password": f"{name}-password-1", "admin": False})
    assert status in (200, 201), body
    if unlimited:
        status, body = admin_api(d, "POST", f"/_synapse/admin/v1/users/{user_id}/override_ratelimit", admin,
                                 {"messages_per_second": 0, "burst_count": 0})
        assert status == 200, body
    status, body = admin_api(d, "POST", f"/_synapse/admin/v1/users/{user_id}/login", admin, {})
    assert status == 200, body
    return user_id, body["access_token"]


def user_client(d: Deployed, user_id: str, token: str) -> nio.AsyncClient:
    made = d.client(user_id)
    made.access_token, made.user_id, made.device_id = token, user_id, "LOAD"
    return made


async def _setup(d: Deployed, load: Load) -> tuple[list[nio.AsyncClient], list[str]]:
    admin = await admin_token(d)
    clients = [user_client(d, *make_user(d, admin, f"load{i}")) for i in range(load.users)]
    rooms = []
    for r in range(load.rooms):
        owner = clients[load.members(r)[0]]
        made = await owner.room_create(name=f"load {r}", preset=nio.RoomPreset.public_chat)
        assert isinstance(made, nio.RoomCreateResponse), made
        rooms.append(made.room_id)
        for u in load.members(r)[1:]:
            joined = await clients[u].join(made.room_id)
            assert isinstance(joined, nio.JoinResponse), joined
    return clients, rooms


@dataclass
class Prepared:
    """The users (logged-in clients) and rooms of a load on one deployment."""

    clients: list[nio.AsyncClient]
    rooms: list[str]
    containers: list[str]

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


async def prepare(d: Deployed, load: Load = LOAD, *, containers: tuple[str, ...] = ("synapse", "postgres")) -> Prepared:
    clients, rooms = await _setup(d, load)
    present = [c for c in containers if d.host.exec(f"docker inspect {shlex.quote(c)} >/dev/null 2>&1").returncode == 0]
    return Prepared(clients, rooms, present)


async def load_round(d: Deployed, prepared: Prepared, load: Load = LOAD) -> Result:
    """One run of the load with the memory sampler, CPU accounting and Synapse's own profile."""
    result = Result(load)
    sampler = Sampler(d.host, prepared.containers)
    cpu_before = cpu_seconds(d.host, prepared.containers)
    try:
        await _drive(prepared.clients, prepared.rooms, load, result)
    finally:
        cpu_after = cpu_seconds(d.host, prepared.containers)
        result.memory = sampler.stop()
    result.cpu = {c: cpu_after[c] - cpu_before[c] for c in cpu_after if c in cpu_before}
    result.profile = request_profile(d.host, result.load_started)
    result.rss_rounds = {c: [result.rss(c)] for c in prepared.containers}
    return result


async def run_load(d: Deployed, load: Load = LOAD) -> Result:
    """Set up the users and rooms, then the load once."""
    prepared = await prepare(d, load)
    try:
        return await load_round(d, prepared, load)
    finally:
        await prepared.close()


def merge(results: list[Result]) -> Result:
    """Rounds of the same load as one result: delays and counts pooled, memory per round (peak:
    the highest; steady: the median of the rounds'), CPU summed, profiles of the last round."""
    merged = Result(results[0].load)
    for r in results:
        merged.delays_ms += r.delays_ms
        merged.send_ms += r.send_ms
        merged.sent += r.sent
        merged.expected += r.expected
        merged.delivered += r.delivered
        for k, v in r.errors.items():
            merged.errors[k] = merged.errors.get(k, 0) + v
        for k, v in r.first_errors.items():
            merged.first_errors.setdefault(k, v)
        for k, v in r.cpu.items():
            merged.cpu[k] = merged.cpu.get(k, 0.0) + v
        for k, v in r.rss_rounds.items():
            merged.rss_rounds.setdefault(k, []).extend(v)
    merged.profile = results[-1].profile
    merged.rounds = len(results)
    return merged


TIMELINE = {"room": {"timeline": {"limit": 200}}}
"""Every message since the last sync (Synapse's default is the last 10 per room)."""


async def _drive(clients: list[nio.AsyncClient], rooms: list[str], load: Load, result: Result) -> None:
    tokens: list[str] = []
    for c in clients:  # each client's starting point: nothing before the load counts
        first = await c.sync(timeout=0, full_state=False)
        assert isinstance(first, nio.SyncResponse), first
        tokens.append(first.next_batch)
    outstanding: dict[str, int] = {}  # message id -> receivers still to see it
    stop = asyncio.Event()

    async def receive(index: int) -> None:
        c, since = clients[index], tokens[index]
        while not stop.is_set():
            answer = await c.sync(timeout=2000, since=since, sync_filter=TIMELINE)
            arrived = time.time_ns()
            if not isinstance(answer, nio.SyncResponse):
                result.error("sync", answer)
                await asyncio.sleep(0.5)
                continue
            since = answer.next_batch
            for room in answer.rooms.join.values():
                for event in room.timeline.events:
                    content = event.source.get("content", {})
                    if "load_id" not in content or event.sender == c.user_id:
                        continue
                    result.delays_ms.append((arrived - int(content["sent_ns"])) / 1e6)
                    result.delivered += 1
                    left = outstanding.get(content["load_id"], 0) - 1
                    if left <= 0:
                        outstanding.pop(content["load_id"], None)
                    else:
                        outstanding[content["load_id"]] = left

    async def send(user: int, n: int) -> None:
        room = load.rooms_of(user)[n % load.rooms_per_user]
        message_id = f"{user}-{n}"
        receivers = len(load.members(room)) - 1
        outstanding[message_id] = receivers
        result.expected += receivers
        result.sent += 1
        started = time.perf_counter()
        answer = await clients[user].room_send(rooms[room], "m.room.message", {
            "msgtype": "m.text", "body": f"load message {message_id}", "load_id": message_id, "sent_ns": str(time.time_ns())})
        result.send_ms.append((time.perf_counter() - started) * 1000)
        if not isinstance(answer, nio.RoomSendResponse):
            result.error("send", answer)
            result.expected -= receivers
            outstanding.pop(message_id, None)

    receivers = [asyncio.create_task(receive(i)) for i in range(len(clients))]
    await asyncio.sleep(1.0)  # every sync loop is waiting
    result.load_started = time.time()
    started = time.monotonic()
    per_user = int(load.rate * load.seconds)
    sends = []
    schedule = sorted((n / load.rate + u / (load.rate * load.users), u, n) for u in range(load.users) for n in range(per_user))
    for at, user, n in schedule:
        delay = started + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sends.append(asyncio.create_task(send(user, n)))
    await asyncio.gather(*sends)
    result.load_ended = time.time()
    deadline = time.monotonic() + load.drain
    while outstanding and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    result.window = time.monotonic() - started
    stop.set()
    await asyncio.gather(*receivers, return_exceptions=True)
    lost = sum(outstanding.values())
    if lost:
        result.errors["lost"] = lost


# --- the profile: where Synapse's time went, from its own access log ---------------------------

_PROCESSED = re.compile(r"Processed request: ([\d.]+)sec/[\d.]+sec ru=\(([\d.]+)sec, ([\d.]+)sec\) "
                        r"db=\(([\d.]+)sec/([\d.]+)sec/(\d+)\) \S+ (\d+) \"(\w+) (\S+)")


def request_profile(host: _lab.LabHost, since: float) -> dict[str, dict[str, float]]:
    """Synapse's own account of each request since `since` (its access log: wall time, CPU (ru),
    time waiting for a database connection, time in database transactions, transactions), as
    medians per kind of request: message sends and syncs that returned events."""
    log = host.exec(f"docker logs --since {int(since)} synapse 2>&1 | grep 'Processed request'", timeout=120).stdout
    kinds: dict[str, list[tuple[float, ...]]] = {"send": [], "sync": []}
    for m in _PROCESSED.finditer(log):
        total, user, system, sched, txn, count, status, method, path = m.groups()
        kind = "send" if method == "PUT" and "/send/" in path else "sync" if "/sync" in path else None
        if kind:
            kinds[kind].append((float(total), float(user) + float(system), float(sched), float(txn), int(count)))
    out = {}
    for kind, rows in kinds.items():
        if rows:
            columns = list(zip(*rows))
            out[kind] = {"n": len(rows), "wall_ms": statistics.median(columns[0]) * 1000,
                         "wall_p95_ms": sorted(columns[0])[int(0.95 * (len(rows) - 1))] * 1000,
                         "cpu_ms": statistics.median(columns[1]) * 1000, "db_wait_ms": statistics.median(columns[2]) * 1000,
                         "db_ms": statistics.median(columns[3]) * 1000, "db_txns": statistics.median(columns[4])}
    return out


# --- the database's side: what Postgres spends per message (pg_stat_statements) ----------------

def _psql(d: Deployed, sql: str) -> str:
    return d.host.exec(["docker", "exec", "postgres", "psql", "-U", "synapse", "-d", "synapse", "-AtF", "\t", "-c", sql],
                       check=True, timeout=120).stdout.strip()


def _restart_database(d: Deployed) -> None:
    d.host.exec("docker restart postgres >/dev/null && docker restart synapse >/dev/null", check=True, timeout=300)
    deadline = time.monotonic() + 180
    while d.host.exec("curl -fsS -m 2 http://127.0.0.1:8008/health >/dev/null").returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("Synapse did not come back after the database's restart: "
                               + d.host.exec("docker logs --tail 30 synapse 2>&1").stdout)
        time.sleep(1)


async def postgres_profile(d: Deployed, prepared: Prepared, load: Load = LOAD) -> dict[str, Any]:
    """One more round of the load on a Postgres deployment with pg_stat_statements (planning
    tracked too) loaded for it, then the deployment as it was: per message sent, the statements,
    transactions, and Postgres's time planning and executing them, and the statements that cost
    most. Not a measured round: the extension's bookkeeping costs time of its own."""
    _psql(d, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    _psql(d, "ALTER SYSTEM SET pg_stat_statements.track_planning = on")
    _restart_database(d)
    try:
        _psql(d, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        _psql(d, "SELECT pg_stat_statements_reset()")
        result = await load_round(d, prepared, load)
        calls, exec_ms, plan_ms, txns = _psql(d, (
            "SELECT sum(calls), sum(total_exec_time), sum(total_plan_time), "
            "sum(calls) FILTER (WHERE query ILIKE 'COMMIT%' OR query ILIKE 'ROLLBACK%') FROM pg_stat_statements")).split("\t")
        top = _psql(d, "SELECT calls, total_plan_time, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
                       "FROM pg_stat_statements ORDER BY total_plan_time + total_exec_time DESC LIMIT 3")
        _psql(d, "DROP EXTENSION pg_stat_statements")
    finally:
        _psql(d, "ALTER SYSTEM RESET shared_preload_libraries")
        _psql(d, "ALTER SYSTEM RESET pg_stat_statements.track_planning")
        _restart_database(d)
    sent = max(result.sent, 1)
    return {"sent": result.sent, "statements": float(calls or 0) / sent, "transactions": float(txns or 0) / sent,
            "plan_ms": float(plan_ms or 0) / sent, "exec_ms": float(exec_ms or 0) / sent,
            "top": [(int(c), float(p) / sent, float(e) / sent, q) for c, p, e, q in
                    (line.split("\t", 3) for line in top.splitlines() if line.count("\t") >= 3)]}
