"""Workers against the monolith: the same client load (bench/load.py) on the same lab host in one
run, first on one Synapse process (`[workers] preset = "none"`), then on the workers the auto rule
gives that host (`preset = "auto"`), then on one process again (so that a database grown by the
first phases, or the machine's drift, shows). Throughput and p95 latency, with their ratios.

The lab host sees the runner's cores (2 here), and the load generator runs on the runner too: it
takes CPU from the server it measures. See the README's Benchmarks for what that limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Row, print_rows

USERS = 16
SECONDS = 30.0
WARMUP = 5.0
SERVER_NAME = "example.test"
MATRIX_HOST = "matrix.example.test"
ADMIN_PASSWORD = "bench-admin-password-1"


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


def measure() -> tuple[list[Row], list[str]]:
    from bench.load import drive
    from tests.lab import lab
    from tests.lab.scenarios import ready_host

    lab.ensure_docker_engine()
    work = Path(tempfile.mkdtemp(prefix="mi-bench-workers-"))
    notes: list[str] = []
    loads = {}
    try:
        with ready_host(lab.build_host_image(), lab.session_key(work), lab.build_synapse_image(),
                        postgres_image=lab.build_postgres_image(), redis_image=lab.build_redis_image()) as host:
            base = f"https://{MATRIX_HOST}:{host.https_port}"
            install(host, work, "none", 0)
            ca = work / "ca.crt"
            ca.write_bytes(host.caddy_root_ca())
            tokens, room = asyncio.run(make_users(host, base, ca))
            for number, (name, preset) in enumerate((("monolith", "none"), ("workers", "auto"), ("monolith again", "none")),
                                                    start=1):
                started = time.monotonic()
                install(host, work, preset, number)
                workers = sorted(n for n in host.exec("docker ps --format '{{.Names}}'").stdout.split() if n.startswith("synapse-"))
                notes.append(f"{name}: switched in {time.monotonic() - started:.0f} s; workers: {', '.join(workers) or 'none'}")
                time.sleep(5)  # the processes settle (caches, the health checks' first rounds)
                loads[name] = asyncio.run(drive(base, "127.0.0.1", ca, tokens, room, seconds=SECONDS, warmup=WARMUP))
                notes.append(f"{name}: {loads[name].summary()}")
            cores = host.exec("nproc").stdout.strip()
            notes.append(f"the lab host sees {cores} cores; {USERS} clients, {WARMUP:.0f} s warm-up, {SECONDS:.0f} s measured, "
                         "the load generator on the same cores")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mono = [loads["monolith"], loads["monolith again"]]
    mono_rate = sum(l.throughput for l in mono) / 2
    mono_p95 = sum(l.percentile(95) for l in mono) / 2
    workers = loads["workers"]
    rows = [
        Row("throughput: workers vs one process (req/s)", workers.throughput, mono_rate, "/s",
            workers.throughput / mono_rate if mono_rate else 0.0, ">= 1.0x"),
        Row("p95 latency: workers vs one process", workers.percentile(95), mono_p95, "s",
            workers.percentile(95) / mono_p95 if mono_p95 else 0.0, "<= 1.0x"),
    ]
    return rows, notes


def main() -> None:
    rows, notes = measure()
    print_rows("Workers: the same client load on one process and on the workers (lab host, one run)", rows)
    for note in notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
