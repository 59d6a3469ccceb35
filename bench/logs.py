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
        await ctx.run("true")  # connect outside the timing
        timing["start"] = time.perf_counter()
        await ctx.run(f"seq 1 {LINES}", timeout=120)
        timing["streamed"] = time.perf_counter()
        return Status.DONE

    def plan(mode: str, answers: Answers) -> list[Stage]:
        return [Stage("host.stream", "Stream output", stream)]

    answers = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    app = InstallerApp(answers, RunOptions(dry_run=True), plan=plan, oci_check=lambda config, profile: [],
                       env=lambda name: True, found=None)
    worst_stall = 0.0
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        for _ in range(5):  # Cloud, Domain, Keys, Registration, Review -> Install
            await pilot.pause()
            await pilot.press("ctrl+n")
        while not isinstance(app.screen, ProvisionScreen):
            await pilot.pause(0.01)
        pane = app.screen.query_one("#log", Log)
        tick = time.perf_counter()
        deadline = tick + 120
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            if "start" in timing:
                worst_stall = max(worst_stall, now - tick - 0.005)
            tick = now
            if any(line == f"  {LINES}" for line in pane.lines[-3:]):
                break
        shown = time.perf_counter()
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
