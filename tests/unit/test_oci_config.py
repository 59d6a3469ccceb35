"""The OCI config check: each problem names the file and line to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from installer.cloud.config import check_oci_config, endpoint_override, key_fingerprint, parse_config
from tests.oci_emulator.fixtures import ApiKey, write_config


@pytest.fixture
def key(oci_api_keys: tuple[ApiKey, ApiKey]) -> ApiKey:
    return oci_api_keys[0]


def test_a_good_config_has_no_problems(tmp_path: Path, key: ApiKey) -> None:
    assert check_oci_config(str(write_config(tmp_path / "config", key)), "DEFAULT") == []


def test_fingerprint_of_another_key_points_at_the_fingerprint_line(tmp_path: Path, oci_api_keys) -> None:
    key, other = oci_api_keys
    config = write_config(tmp_path / "config", key, fingerprint=other.fingerprint)
    (problem,) = check_oci_config(str(config), "DEFAULT")
    assert problem.startswith(f"{config}:3: fingerprint: does not match key_file {key.private_path}")
    assert f"its fingerprint is {key.fingerprint}" in problem


def test_malformed_fingerprint(tmp_path: Path, key: ApiKey) -> None:
    config = write_config(tmp_path / "config", key, fingerprint="12:34:56")
    (problem,) = check_oci_config(str(config), "DEFAULT")
    assert problem.startswith(f"{config}:3: fingerprint: is malformed: it must be 16 colon-separated")


def test_missing_profile_lists_the_profiles(tmp_path: Path, key: ApiKey) -> None:
    config = write_config(tmp_path / "config", key, profile="WORK")
    (problem,) = check_oci_config(str(config), "DEFAULT")
    assert problem.startswith(f"{config}:1: [DEFAULT]: profile not found (profiles here: WORK)")


def test_unreadable_key_file_points_at_key_file(tmp_path: Path, key: ApiKey) -> None:
    config = write_config(tmp_path / "config", key, key_file=str(tmp_path / "gone.pem"))
    (problem,) = check_oci_config(str(config), "DEFAULT")
    assert problem.startswith(f"{config}:6: key_file: {tmp_path / 'gone.pem'} does not exist")


def test_public_key_given_as_key_file(tmp_path: Path, key: ApiKey) -> None:
    public = tmp_path / "oci_api_key_public.pem"
    public.write_bytes(key.public_pem)
    config = write_config(tmp_path / "config", key, key_file=str(public))
    (problem,) = check_oci_config(str(config), "DEFAULT")
    assert ":6: key_file:" in problem and "not the public one" in problem


def test_encrypted_key_needs_pass_phrase(tmp_path: Path, key: ApiKey) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "enc.pem"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"sesame")))
    config = write_config(tmp_path / "config", key, key_file=str(path), fingerprint=key_fingerprint(private.public_key()))
    (problem,) = check_oci_config(str(config), "DEFAULT")
    assert ":6: key_file:" in problem and "add pass_phrase" in problem
    config.write_text(config.read_text() + "pass_phrase=sesame\n")
    assert check_oci_config(str(config), "DEFAULT") == []


def test_region_and_ocids(tmp_path: Path, key: ApiKey) -> None:
    config = write_config(tmp_path / "config", key, region="Frankfurt", user="alice", tenancy="ocid1.compartment.oc1..x")
    problems = check_oci_config(str(config), "DEFAULT")
    assert [p.split(": ")[0:2] for p in problems] == [
        [f"{config}:2", "user"], [f"{config}:4", "tenancy"], [f"{config}:5", "region"],
    ]
    assert 'not a region identifier such as "eu-frankfurt-1"' in problems[2]


def test_missing_keys_point_at_the_section_and_default_is_inherited(tmp_path: Path, key: ApiKey) -> None:
    config = tmp_path / "config"
    config.write_text(
        "# written by hand\n"
        "[DEFAULT]\n"
        f"key_file = {key.private_path}\n"
        f"fingerprint = {key.fingerprint}\n"
        "\n"
        "[WORK]\n"
        "user = ocid1.user.oc1..aaaa\n"
        "tenancy = ocid1.tenancy.oc1..bbbb\n"
    )
    (problem,) = check_oci_config(str(config), "WORK")
    assert problem.startswith(f"{config}:6: region: missing in [WORK]")
    assert parse_config(config.read_text())["WORK"].entries["key_file"].line == 3


def test_missing_file(tmp_path: Path) -> None:
    (problem,) = check_oci_config(str(tmp_path / "nope"), "DEFAULT")
    assert "not found" in problem and "oci setup config" in problem


def test_fingerprint_matches_what_oracle_computes(key: ApiKey) -> None:
    import hashlib

    der = key.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.fingerprint.replace(":", "") == hashlib.md5(der).hexdigest()
    assert len(key.fingerprint.split(":")) == 16


def test_endpoint_override(monkeypatch) -> None:
    monkeypatch.delenv("MATRIX_INSTALLER_OCI_ENDPOINT", raising=False)
    assert endpoint_override() is None
    monkeypatch.setenv("MATRIX_INSTALLER_OCI_ENDPOINT", "http://127.0.0.1:8080/")
    assert endpoint_override() == "http://127.0.0.1:8080"


async def test_an_sdk_config_error_is_said_in_words_not_by_its_class_name(tmp_path: Path, key: ApiKey) -> None:
    """Where the SDK refuses a config our own check let through, its class name (ProfileNotFound,
    InvalidConfig) is not the error's code: its message is what is said."""
    from installer.cloud.api import CloudError, OciCloud

    config = write_config(tmp_path / "config", key, profile="WORK")
    with pytest.raises(CloudError) as caught:
        await OciCloud.open(str(config), "DEFAULT", lambda line: None)
    error = caught.value
    assert error.code == "" and error.status == 0 and error.message
    assert "Invalid" not in str(error) and "NotFound" not in str(error) and "0 " not in str(error)
    assert error.message.startswith("the profile has ") and "region missing" in error.message
