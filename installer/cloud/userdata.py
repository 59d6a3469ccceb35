"""The VM's first-boot configuration: an SSH host key known in advance, and cloud-init user data.

The host key pair is made here, so the host's identity is known before the first SSH connection
(no trust on first use). Only the public half is kept in state; the private half goes into the
user data, which is a secret: it is never logged.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from installer import checks

_PRIVATE_KEY = re.compile(
    r"-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----\n?"
)


@dataclass(frozen=True)
class HostKey:
    private_openssh: str
    public_line: str


def generate_host_key(comment: str = "") -> HostKey:
    """A new ed25519 host key pair: OpenSSH private key text and the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return HostKey(private, f"{public} {comment}" if comment else public)


def host_key_fingerprint(public_line: str) -> str:
    """The SHA256 fingerprint OpenSSH prints (`ssh-keygen -lf`)."""
    import hashlib

    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class UserDataError(ValueError):
    pass


def render_user_data(host_key: HostKey, hostname: str) -> str:
    """cloud-init user data (text) from templates/cloud-init.yaml.j2; every value checked first."""
    from installer.render import render

    if problem := checks.ssh_public_key(host_key.public_line):
        raise UserDataError(f"host public key {problem}")
    if not host_key.public_line.startswith("ssh-ed25519 "):
        raise UserDataError("host public key must be ssh-ed25519")
    if not _PRIVATE_KEY.fullmatch(host_key.private_openssh):
        raise UserDataError("host private key is not an OpenSSH private key")
    if problem := checks.hostname(hostname, fqdn=False):
        raise UserDataError(f"hostname {problem}")
    return render("cloud-init.yaml.j2", host_key_private=host_key.private_openssh,
                  host_key_public=host_key.public_line, hostname=hostname)


def encode_user_data(text: str) -> str:
    """Base64, as OCI's `user_data` metadata key wants it."""
    return base64.b64encode(text.encode()).decode()
