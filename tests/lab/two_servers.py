"""Two lab hosts that federate: a runner network joining them, names that resolve to each from
inside their Synapse containers, and one lab CA that both Caddys issue under and everything trusts.

What the lab adds to a deployment the installer made, and nothing else:
- DNS: the lab hosts sit on a runner network (`LabNetwork`) with their names as network aliases
  (example.test and matrix.example.test on one, other.test and matrix.other.test on the other).
  Docker's DNS answers them; each lab host's /etc/resolv.conf names it (Docker writes that), and
  the nested Docker's DNS in the Synapse containers forwards to it. The network's addresses are
  taken from 240.0.0.0/4 (reserved, never routed on the internet): Synapse refuses to federate
  with private and documentation ranges (its default ip_range_blacklist), as it would on the
  internet, so the lab must not use them.
- Trust in the lab CA (`LabCA`), the lab's stand-in for a public CA:
  - its root is put in Caddy's storage before the install (with the `caddy` user the Debian
    package would make, made the same way), so `tls = "internal"` issues under it instead of a
    root of its own;
  - the lab host's system trust store has it (/usr/local/share/ca-certificates/), for the
    self-test that runs there;
  - the Synapse image the lab loads as `matrixdotorg/synapse:latest` is the stand-in with the root
    appended to /etc/ssl/certs/ca-certificates.crt (Synapse's federation client and Python's ssl
    read that bundle).
Nothing in /opt/matrix, the Caddyfile, homeserver.yaml or the compose file is touched.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from tests.lab import lab as _lab

CA_NAME = "matrix-installer lab CA"
CADDY_PKI = "/var/lib/caddy/.local/share/caddy/pki/authorities/local"
TRUST_FILE = "/usr/local/share/ca-certificates/matrix-installer-lab-ca.crt"
SYNAPSE_TAG = "matrixdotorg/synapse:latest"


@dataclass
class LabNetwork:
    """A runner network for lab hosts, in a /24 of 240.0.0.0/4 no other network uses."""

    name: str
    subnet: str

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[LabNetwork]:
        name = f"matrix-installer-lab-fed-{os.getpid()}-{random.randrange(1 << 16):04x}"
        last = ""
        for _ in range(20):
            subnet = f"240.{random.randrange(256)}.{random.randrange(256)}.0/24"
            made = _lab.docker("network", "create", "--subnet", subnet, "--label", f"{_lab.LABEL}.pid={os.getpid()}",
                               name, check=False, timeout=60)
            if made.returncode == 0:
                break
            last = made.stderr
        else:
            raise _lab.LabError(f"no free 240.x.y.0/24 network for the lab: {last}")
        try:
            yield cls(name, subnet)
        finally:
            _lab.docker("network", "rm", name, check=False, timeout=60)

    def address(self, host: _lab.LabHost) -> str:
        """The lab host's address on this network."""
        fmt = "{{(index .NetworkSettings.Networks \"" + self.name + "\").IPAddress}}"
        return _lab.docker("inspect", "--format", fmt, host.container, timeout=30).stdout.strip()


class LabCA:
    """One root CA for the lab (made here, per test module), EC P-256 as Caddy makes its own."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption())

    def seed_caddy(self, host: _lab.LabHost) -> None:
        """Caddy's local CA on this host is the lab's: its root in Caddy's storage, owned by the
        `caddy` user made as the Debian package's postinst makes it (it then keeps it)."""
        host.exec("getent group caddy >/dev/null || groupadd --system caddy; "
                  "getent passwd caddy >/dev/null || useradd --system --gid caddy --create-home --home-dir /var/lib/caddy "
                  "--shell /usr/sbin/nologin --comment 'Caddy web server' caddy; "
                  f"install -d -m 0700 -o caddy -g caddy /var/lib/caddy/.local /var/lib/caddy/.local/share "
                  f"/var/lib/caddy/.local/share/caddy /var/lib/caddy/.local/share/caddy/pki "
                  f"/var/lib/caddy/.local/share/caddy/pki/authorities {CADDY_PKI}", check=True)
        host.exec(f"install -m 0644 -o caddy -g caddy /dev/stdin {CADDY_PKI}/root.crt", input=self.cert_pem.decode(), check=True)
        host.exec(f"install -m 0600 -o caddy -g caddy /dev/stdin {CADDY_PKI}/root.key", input=self.key_pem.decode(), check=True)

    def trust_on_host(self, host: _lab.LabHost) -> None:
        host.exec(f"cat > {TRUST_FILE} && update-ca-certificates >/dev/null", input=self.cert_pem.decode(), check=True)

    def trusting_image(self, host: _lab.LabHost, lab_tag: str, *, as_tag: str = SYNAPSE_TAG) -> None:
        """Load the stand-in `lab_tag` into the host, and tag as `as_tag` a copy of it whose CA
        bundle (/etc/ssl/certs/ca-certificates.crt) ends with the lab's root."""
        if host.exec(["docker", "image", "inspect", lab_tag], timeout=60).returncode != 0:
            host.load_image(lab_tag)
        script = (
            "set -e; c=$(docker create \"$1\"); trap 'docker rm -f \"$c\" >/dev/null; rm -f /tmp/lab-bundle.crt' EXIT; "
            "docker cp \"$c\":/etc/ssl/certs/ca-certificates.crt /tmp/lab-bundle.crt; "
            "cat >> /tmp/lab-bundle.crt; "
            "docker cp /tmp/lab-bundle.crt \"$c\":/etc/ssl/certs/ca-certificates.crt; "
            "docker commit -m 'matrix-installer lab: trusts the lab CA' \"$c\" \"$2\" >/dev/null"
        )
        host.exec(["sh", "-c", script, "sh", lab_tag, as_tag], input=self.cert_pem.decode(), check=True)


def parallel(*calls):
    """Run the callables on threads; return their results in order (the first error is raised)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


def dnsmasq(*zones: str, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    """dnsmasq on the runner answering every name in `zones` with 127.0.0.1 (where the lab's
    ports are published), plus `extra` options; returns the process and its port."""
    import shutil
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", f"--port={port}",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=", "--conf-file=/dev/null"]
    for zone in zones:
        args += [f"--local=/{zone}/", f"--address=/{zone}/127.0.0.1"]
    args += list(extra)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc, port
