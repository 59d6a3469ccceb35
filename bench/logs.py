"""Log throughput: a remote command's output (`seq 1 N` over our SSH layer, from a real sshd) into
the Provision screen's log pane of the running app (headless Textual), and how long the event
loop (which also handles key presses) ever stalls meanwhile."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import Row, print_rows

LINES = 100_000
SECRETS = ("correct-horse-battery-staple", 'p@ss"w\\ord\'42', "registration-shared-secret-0123456789abcdef",
           "syt_YWRtaW4_token_9f8e7d6c", "Zm9vYmFy-b64ish+/=")
"""Registered as the run's secrets: every streamed line is masked against them, as in a real run."""
WORST: list = []  # (begin, end) of the longest stall, for profiling


async def _measure(server) -> tuple[float, float, float]:
    from textual.widgets import Log

    from installer.answers import Answers
    from installer.engine import RunOptions, Stage
    from installer.events import Status
    from installer.ssh import SshRemote, SshTarget
    from screens.app import InstallerApp
    from screens.provision import ProvisionScreen

    timing: dict[str, float] = {}

    async def stream(ctx) -> Status:
        remote = SshRemote(SshTarget(server.host, server.port, server.user, server.client_key, server.host_key))
        ctx.attach_remote(remote)
        for secret in SECRETS:  # a real run masks these in every line: the admin password, tokens, ...
            ctx.secret(secret)
        await ctx.run("true")  # connect outside the timing
        timing["start"] = time.perf_counter()
        await ctx.run(f"seq 1 {LINES}", timeout=120)
        timing["streamed"] = time.perf_counter()
        return Status.DONE

    def plan(mode: str, answers: Answers) -> list[Stage]:
        return [Stage("host.stream", "Stream output", stream)]

    answers = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    app = InstallerApp(answers, RunOptions(dry_run=True), plan=plan, provider_check=lambda a, o: [],
                       env=lambda name: "bench-admin-password", found=None)
    gaps: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def probe() -> None:
        """Wakes every 5 ms on the app's loop (where key presses are handled): any lateness is a stall."""
        tick = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append((tick, now))
            tick = now

    async with app.run_test(size=(120, 40)) as pilot:
        prober = asyncio.create_task(probe())
        await pilot.press("enter")
        for _ in range(5):  # Cloud, Domain, Keys, Registration, Review -> Install
            await pilot.pause()
            await pilot.press("ctrl+n")
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
            if isinstance(app.screen, ProvisionScreen):
                pane = app.screen.query_one("#log", Log)
                if any(line == f"  {LINES}" for line in pane.lines[-3:]):
                    break
        shown = time.perf_counter()
        done.set()
        await prober
    worst_stall, window = max((end - begin - 0.005, (begin, end)) for begin, end in gaps if end > timing["start"] and begin < shown)
    WORST[:] = window
    return LINES / (shown - timing["start"]), LINES / (timing["streamed"] - timing["start"]), worst_stall


def measure() -> tuple[list[Row], float]:
    from tests.fixtures.sshd import _start

    workdir = Path(tempfile.mkdtemp(prefix="mi-bench-logs-"))
    server = _start(workdir)
    try:
        on_screen, over_ssh, stall = asyncio.run(_measure(server))
    finally:
        server.process.terminate()
        server.process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return [
        Row("lines/s into the log pane vs the 100k lines/s goal", on_screen, 100_000, "/s", on_screen / 100_000, ">= 1.0x"),
        Row("worst event-loop stall while streaming vs 100 ms", stall * 1000, 100, "ms", stall / 0.1, "<= 1.0x"),
    ], over_ssh


def main() -> None:
    rows, over_ssh = measure()
    print_rows(f"Log throughput ({LINES:,} lines of `seq` over SSH into the running app, headless)", rows)
    print(f"  (the SSH channel alone delivered {over_ssh:,.0f} lines/s; key presses are handled on the stalled loop)")


if __name__ == "__main__":
    main()
