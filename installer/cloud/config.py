"""The OCI SDK config file, checked line by line before anything contacts Oracle Cloud.

The file is INI (`~/.oci/config`): a `[DEFAULT]` section whose keys every profile inherits, then
one section per profile. We parse it ourselves, keeping line numbers, so each problem names the
line to fix: `FILE:LINE: key: what is wrong, what to do`.

Endpoint override: when the environment variable `MATRIX_INSTALLER_OCI_ENDPOINT` is set (for
example `http://127.0.0.1:8080`, a lab emulator, or a private endpoint reached through a tunnel),
every SDK client is given it as `service_endpoint` instead of the region's public endpoint. Each
service's version path (`/20160918`, `/20180115`) is appended by the SDK.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from installer.sections import mention

ENDPOINT_ENV = "MATRIX_INSTALLER_OCI_ENDPOINT"
REQUIRED = ("user", "fingerprint", "key_file", "tenancy", "region")

_FINGERPRINT = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){15}")
_REGION = re.compile(r"[a-z]{2,}(?:-[a-z0-9]+)+-[0-9]+")
_OCID = r"ocid1\.{kind}\.[a-z0-9-]+\.[a-z0-9-]*\.[a-z0-9._-]+"
_SECTION = re.compile(r"^\s*\[\s*([^\]]*?)\s*\]\s*$")
_ASSIGN = re.compile(r"^\s*([^=:#;\s][^=:]*?)\s*[=:]\s*(.*?)\s*$")


def endpoint_override() -> str | None:
    """The service endpoint every client should use instead of the region's, or None."""
    value = os.environ.get(ENDPOINT_ENV, "").strip()
    return value.rstrip("/") or None


@dataclass
class Entry:
    value: str
    line: int


@dataclass
class Profile:
    name: str
    line: int
    entries: dict[str, Entry] = field(default_factory=dict)


def parse_config(text: str) -> dict[str, Profile]:
    """Sections of an OCI config file with the line of every key (DEFAULT keys are inherited)."""
    profiles: dict[str, Profile] = {}
    current: Profile | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if m := _SECTION.match(line):
            current = profiles.setdefault(m.group(1), Profile(m.group(1), number))
            continue
        if current is not None and (m := _ASSIGN.match(line)):
            current.entries.setdefault(m.group(1).strip().lower(), Entry(m.group(2), number))
    default = profiles.get("DEFAULT")
    if default is not None:
        for profile in profiles.values():
            for key, entry in default.entries.items():
                profile.entries.setdefault(key, entry)
    return profiles


def key_fingerprint(public_key: object) -> str:
    """The API-key fingerprint Oracle shows: MD5 of the DER public key, colon-separated hex."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.md5(der).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _load_private_key(path: Path, passphrase: str | None) -> tuple[object | None, str | None]:
    from cryptography.hazmat.primitives import serialization

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"{path} does not exist: fix the path, or create the key with `oci setup keys`"
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror}): fix its permissions (chmod 600, owned by you)"
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError:
        return None, f"{path} is encrypted: add pass_phrase to this profile"
    except ValueError:
        if b"ENCRYPTED" in data and passphrase:
            return None, f"{path} could not be decrypted: check pass_phrase"
        return None, f"{path} is not a PEM private key: point key_file at the private key (oci_api_key.pem), not the public one"
    return key, None


def check_oci_config(config_path: str, profile: str) -> list[str]:
    """Every problem with one profile of an OCI config file, each as `FILE:LINE: key: ...`."""
    path = Path(config_path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"{path}: not found: create it with `oci setup config` (or the console's API key page), or set {mention('cloud.oci_config')}"]
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot be read ({exc}): fix its permissions (chmod 600)"]

    profiles = parse_config(text)
    if profile not in profiles:
        known = ", ".join(p for p in profiles) or "none"
        return [f"{path}:1: [{profile}]: profile not found (profiles here: {known}): add a [{profile}] section or set {mention('cloud.oci_profile')}"]
    section = profiles[profile]
    problems: list[str] = []

    def problem(key: str, message: str) -> None:
        entry = section.entries.get(key)
        problems.append(f"{path}:{entry.line if entry else section.line}: {key}: {message}")

    entries = section.entries
    session_auth = "security_token_file" in entries
    for key in REQUIRED:
        if key == "user" and session_auth:
            continue
        if not entries.get(key) or not entries[key].value:
            problem(key, f"missing in [{profile}]: add `{key} = ...` (the console's API key page shows the lines to paste)")

    for key, kind in (("user", "user"), ("tenancy", "tenancy")):
        entry = entries.get(key)
        if entry and entry.value and not re.fullmatch(_OCID.format(kind=kind), entry.value):
            problem(key, f"is not a {kind} OCID (ocid1.{kind}.oc1..xxxx): copy it from the console")

    region = entries.get("region")
    if region and region.value and not _REGION.fullmatch(region.value):
        problem("region", f'"{region.value}" is not a region identifier such as "eu-frankfurt-1": use the identifier, not the display name')

    fingerprint = entries.get("fingerprint")
    fingerprint_ok = bool(fingerprint and _FINGERPRINT.fullmatch(fingerprint.value))
    if fingerprint and fingerprint.value and not fingerprint_ok:
        problem("fingerprint", "is malformed: it must be 16 colon-separated lowercase hex pairs (aa:bb:...:ff) as the console shows it")

    key_file = entries.get("key_file")
    if key_file and key_file.value:
        key_path = Path(key_file.value).expanduser()
        if not key_path.is_absolute():
            key_path = path.parent / key_path
        passphrase = entries["pass_phrase"].value if "pass_phrase" in entries else None
        key, why = _load_private_key(key_path, passphrase)
        if why:
            problem("key_file", why)
        elif fingerprint_ok and key is not None:
            actual = key_fingerprint(key.public_key())  # type: ignore[attr-defined]
            if actual != fingerprint.value:  # type: ignore[union-attr]
                problem(
                    "fingerprint",
                    f"does not match key_file {key_path} (its fingerprint is {actual}): "
                    "use the fingerprint of the key you uploaded, or point key_file at that key",
                )
    return problems


def config_value(config_path: str, profile: str, key: str) -> str | None:
    """One value of a profile (DEFAULT inherited), or None; never raises."""
    try:
        text = Path(config_path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    section = parse_config(text).get(profile)
    entry = section.entries.get(key) if section else None
    return entry.value if entry else None


def public_key_pem_fingerprint(pem: bytes) -> str:
    """The fingerprint of a PEM public key (what the console computes on upload)."""
    from cryptography.hazmat.primitives import serialization

    return key_fingerprint(serialization.load_pem_public_key(pem))


__all__ = [
    "ENDPOINT_ENV",
    "check_oci_config",
    "config_value",
    "endpoint_override",
    "key_fingerprint",
    "parse_config",
    "public_key_pem_fingerprint",
]
