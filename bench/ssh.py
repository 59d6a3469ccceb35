"""Remote command overhead: N trivial commands through our SSH layer on one connection, against
OpenSSH's `ssh host true` run N times (a new connection each, as tools without reuse do)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Row, print_rows

OURS_N = 200
OPENSSH_N = 20


async def _ours(server) -> float:
    from installer.ssh import SshRemote, SshTarget

    remote = SshRemote(SshTarget(server.host, server.port, server.user, server.client_key, server.host_key))
    log = lambda line, kind: None  # noqa: E731 - output is not the point here
    await remote.run("true", log=log)  # connect outside the timing
    started = time.perf_counter()
    for _ in range(OURS_N):
        await remote.run("true", log=log)
    per_command = (time.perf_counter() - started) / OURS_N
    await remote.close()
    return per_command


def _openssh(server, workdir: Path) -> float:
    known = workdir / "known_hosts"
    known.write_text(f"[{server.host}]:{server.port} {server.host_key}\n")
    argv = ["ssh", "-q", "-i", str(server.client_key), "-p", str(server.port), "-o", f"UserKnownHostsFile={known}",
            "-o", "BatchMode=yes", "-o", "ControlMaster=no", f"{server.user}@{server.host}", "true"]
    subprocess.run(argv, check=True)
    started = time.perf_counter()
    for _ in range(OPENSSH_N):
        subprocess.run(argv, check=True)
    return (time.perf_counter() - started) / OPENSSH_N


def measure() -> list[Row]:
    from tests.fixtures.sshd import _start

    workdir = Path(tempfile.mkdtemp(prefix="mi-bench-ssh-"))
    server = _start(workdir)
    try:
        ours = asyncio.run(_ours(server))
        theirs = _openssh(server, workdir)
    finally:
        server.process.terminate()
        server.process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return [Row("per command: ours (one connection) vs `ssh host true`", ours * 1000, theirs * 1000, "ms",
                theirs / ours, ">= 20x (anchor / ours)")]


def main() -> None:
    print_rows(f"Remote command overhead ({OURS_N} x `true` ours, {OPENSSH_N} x `ssh host true`, loopback sshd)", measure())


if __name__ == "__main__":
    main()
