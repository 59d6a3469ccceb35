"""What the end-to-end lab tests (and bench/run.py) share: a lab host made ready for a full run,
answers for it as an existing server, and the real command run against it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.lab import lab as _lab

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def ready_host(image: str, key: Path, synapse_image: str, *, rebootable: bool = False,
               postgres_image: str | None = None, memory_mib: int | None = None,
               cores: int | None = None, compressor_image: str | None = None, network: str | None = None,
               aliases: tuple[str, ...] = (), redis_image: str | None = None,
               private_network: _lab.LabNetwork | None = None) -> Iterator[_lab.LabHost]:
    """A fresh lab host with Docker in it and the stand-in Synapse image loaded under the real
    image's name (there is no registry here to pull it from); removed afterwards.
    `postgres_image` (the `postgres_image` fixture): also load the stand-in Postgres, as
    `postgres:17-alpine` (tests.lab.lab.POSTGRES_IMAGE); `redis_image`, the stand-in Redis as
    `redis:7-alpine`. `memory_mib`, `cores`: the box's size as the installer will read it
    (LabHost.start). `compressor_image` (lab.build_compressor_image): the state compressor's
    stand-in, under the real name the nightly timer runs. `network`, `aliases`: a runner network
    the host starts on, names resolving to it (LabHost.start). `private_network`: a second network
    the host joins before Docker starts in it (so the nested Docker's own networks keep clear of
    it); its address there is `host.private_address`."""
    host = _lab.LabHost.start(image, key, rebootable=rebootable, memory_mib=memory_mib, cores=cores,
                              network=network, aliases=aliases)
    try:
        if private_network is not None:
            host.private_address = private_network.join(host)
        host.preinstall_docker()
        host.load_image(synapse_image, as_tag="matrixdotorg/synapse:latest")
        if postgres_image:
            host.load_image(postgres_image, as_tag=_lab.POSTGRES_IMAGE)
        if compressor_image:
            from installer.components.tuning.compress import COMPRESSOR_IMAGE

            host.load_image(compressor_image, as_tag=COMPRESSOR_IMAGE)
        if redis_image:
            host.load_image(redis_image, as_tag=_lab.REDIS_IMAGE)
        yield host
    finally:
        host.stop()


WITHOUT_WEB_CLIENT_AND_CALLS = '[element]\nenabled = false\n[calls]\nturn = false\n'
"""What the lab tests that are not about them leave out: Element Web's releases are not reachable
here (tests/integration/test_calls_element_lab.py serves a stand-in), and coturn costs a minute."""


NOT_APPLICABLE_ON_THE_LAB = ("dns.aaaa", "host.swap")
"""Stages that report skipped (does not apply) on every run on a lab host: it has no public IPv6
address (no AAAA records), and it is a large box (a swap file is offered on boxes of 2 GiB or less)."""


def existing_server_answers(host: _lab.LabHost, *, server_name: str = "example.test", matrix_host: str = "matrix.example.test",
                            domain: str = "", registration: str = "", extra: str = "", key: Path | None = None,
                            address: str = "127.0.0.1", web_client_and_calls: bool = False) -> str:
    """Answers for the lab host as an existing server: its address (`address`: the published
    ports' loopback unless given), key (the lab's own unless given) and pinned host key, Debian's
    own packages (the vendors' repositories are unreachable), Caddy's local CA. Element Web and
    TURN are left out unless `web_client_and_calls`."""
    if not web_client_and_calls:
        extra = f"{extra}\n{WITHOUT_WEB_CLIENT_AND_CALLS}"
    return f"""version = 1
[domain]
server_name = "{server_name}"
matrix_host = "{matrix_host}"
tls = "internal"
{domain}
[cloud]
provider = "existing"
[packages]
source = "distro"
[ssh]
host = "{address}"
port = {host.ssh_port if address == "127.0.0.1" else 22}
private_key = "{key or host.private_key_path}"
host_key = "{host.host_key}"
[registration]
{registration}
{extra}
"""


@dataclass
class Command:
    """`matrix-installer --answers F` against a lab host, through --connect-to and the lab's DNS."""

    answers: Path
    state_dir: Path
    dns_port: int
    connect_to: tuple[str, ...]
    env: dict[str, str]
    peer: str = "none"
    """--peer for the outbound check: "none" where no other server is there to reach (a lab of
    one host); the two-server lab gives the other one."""

    def run(self, report: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        args = [sys.executable, "-m", "installer", "--answers", str(self.answers), "--state-dir", str(self.state_dir),
                "--report", str(report), "--dns-server", f"127.0.0.1:{self.dns_port}", *extra]
        if "--peer" not in extra:
            args += ["--peer", self.peer]
        for mapping in self.connect_to:
            args += ["--connect-to", mapping]
        done = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT, stdin=subprocess.DEVNULL,
                              env={**os.environ, **self.env})
        assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
        return done, json.loads(report.read_text())


def https_mappings(host: _lab.LabHost, *names: str) -> tuple[str, ...]:
    """--connect-to values sending NAME:443 to the lab's published HTTPS port."""
    return tuple(f"{name}:443:127.0.0.1:{host.https_port}" for name in names)
