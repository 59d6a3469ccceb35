"""A closed-loop client load on a Matrix server, to find how much it carries: each user's client
(an access token each) loops over an incremental /sync (no wait), a message sent to a room they
share, and a read of the room's members, as fast as the server answers. `drive(...)` returns
throughput and latency percentiles, by kind. bench/workers.py drives it beside the server-load
benchmark's fixed-rate load (tests/lab/load.py), which cannot show a gain in throughput: it sends
the same messages a second whatever the server could carry.

Requests go to https://MATRIX_HOST:PORT with every name resolved to loopback (where the lab
publishes its ports) and the lab's CA trusted: what a user's client sees, Caddy included.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from tests.lab.matrix_client import LoopbackResolver


@dataclass
class Load:
    """What was measured over the measuring window (the warm-up left out)."""

    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float, kind: str | None = None) -> float:
        values = sorted(self.latencies.get(kind, []) if kind else [x for v in self.latencies.values() for x in v])
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {len(v)} (p95 {self.percentile(95, k) * 1000:.0f} ms)" for k, v in sorted(self.latencies.items()))
        return (f"{self.requests} requests in {self.seconds:.0f} s = {self.throughput:.1f}/s, p50 "
                f"{self.percentile(50) * 1000:.0f} ms, p95 {self.percentile(95) * 1000:.0f} ms, {self.errors} errors; {kinds}")


def session(ca_file: Path, connections: int) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=str(ca_file))
    connector = aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=context, limit=connections)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


async def drive(base: str, ca_file: Path, tokens: list[str], room_id: str, *,
                seconds: float = 30.0, warmup: float = 5.0) -> Load:
    """Every user's client at once (one access token each, logged in already), for `warmup` +
    `seconds`; what the last `seconds` saw."""
    async with session(ca_file, len(tokens) * 2) as http:
        started = time.monotonic()
        measure_from = started + warmup
        stop = measure_from + seconds
        load = Load(seconds)
        room = quote(room_id, safe="")

        async def timed(kind: str, method: str, url: str, token: str, body: Any = None) -> dict:
            began = time.monotonic()
            try:
                async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as answer:
                    data = await answer.json(content_type=None)
                    ok = answer.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError):
                data, ok = {}, False
            if began >= measure_from and time.monotonic() <= stop:
                if ok:
                    load.latencies.setdefault(kind, []).append(time.monotonic() - began)
                else:
                    load.errors += 1
            return data or {}

        async def client(token: str) -> None:
            since = ""
            while time.monotonic() < stop:
                sync = await timed("sync", "GET", f"{base}/_matrix/client/v3/sync?timeout=0"
                                   + (f"&since={quote(since)}" if since else ""), token)
                since = sync.get("next_batch", since)
                await timed("send", "PUT", f"{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
                            token, {"msgtype": "m.text", "body": "load"})
                await timed("members", "GET", f"{base}/_matrix/client/v3/rooms/{room}/joined_members", token)

        await asyncio.gather(*(client(t) for t in tokens))
        return load


__all__ = ["Load", "drive", "session"]
