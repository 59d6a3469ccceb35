"""Pytest fixtures: a test API key pair, an OCI config file, and the emulator serving on 127.0.0.1.

List this module in `pytest_plugins` (or import the fixtures). `oci_emulator` also sets
MATRIX_INSTALLER_OCI_ENDPOINT for the test, so code under test reaches the emulator; a subprocess
(the CLI) gets the same from `handle.env`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from installer.cloud.config import ENDPOINT_ENV, key_fingerprint
from tests.oci_emulator.server import Emulator, Server

TENANCY = "ocid1.tenancy.oc1..aaaaaaaaemulatortenancy"
USER = "ocid1.user.oc1..aaaaaaaaemulatoruser"
REGION = "us-phoenix-1"


@dataclass(frozen=True)
class ApiKey:
    private_path: Path
    public_pem: bytes
    fingerprint: str
    public_key: Any

    @property
    def key_id(self) -> str:
        return f"{TENANCY}/{USER}/{self.fingerprint}"


def make_api_key(folder: Path, name: str) -> ApiKey:
    """An RSA 2048 API key pair as the console makes them: PEM files, private one 0600."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    folder.mkdir(parents=True, exist_ok=True)
    private_path = folder / f"{name}.pem"
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    private_path.chmod(0o600)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (folder / f"{name}_public.pem").write_bytes(public_pem)
    return ApiKey(private_path, public_pem, key_fingerprint(key.public_key()), key.public_key())


def write_config(path: Path, key: ApiKey, *, profile: str = "DEFAULT", fingerprint: str | None = None,
                 key_file: str | None = None, region: str = REGION, user: str = USER, tenancy: str = TENANCY) -> Path:
    """An OCI config file in the layout `oci setup config` writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"[{profile}]\n"
        f"user={user}\n"
        f"fingerprint={fingerprint if fingerprint is not None else key.fingerprint}\n"
        f"tenancy={tenancy}\n"
        f"region={region}\n"
        f"key_file={key_file if key_file is not None else key.private_path}\n"
    )
    path.chmod(0o600)
    return path


@dataclass
class EmulatorHandle:
    url: str
    config_path: str
    profile: str
    state: Emulator
    key: ApiKey
    other_key: ApiKey
    tenancy: str = TENANCY

    def inject(self, *args: Any, **kwargs: Any) -> Any:
        return self.state.inject(*args, **kwargs)

    @property
    def env(self) -> dict[str, str]:
        return {ENDPOINT_ENV: self.url}


@pytest.fixture(scope="session")
def oci_api_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[ApiKey, ApiKey]:
    """The registered test key, and a second key the emulator has never seen."""
    folder = tmp_path_factory.mktemp("oci-keys")
    return make_api_key(folder, "oci_api_key"), make_api_key(folder, "stranger_key")


@pytest.fixture
def oci_emulator(tmp_path: Path, oci_api_keys: tuple[ApiKey, ApiKey], monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorHandle]:
    """A fresh emulator (empty tenancy), its config file, and MATRIX_INSTALLER_OCI_ENDPOINT pointing at it."""
    key, other = oci_api_keys
    emulator = Emulator(tenancy=TENANCY, keys={key.key_id: key.public_key})
    server = Server(emulator).start()
    config = write_config(tmp_path / "oci" / "config", key)
    monkeypatch.setenv(ENDPOINT_ENV, server.url)
    try:
        yield EmulatorHandle(server.url, str(config), "DEFAULT", emulator, key, other)
    finally:
        server.stop()
