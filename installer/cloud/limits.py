"""Oracle's caps on a launch that the installer can check before asking: the instance metadata size."""

from __future__ import annotations

import json

METADATA_MAX_BYTES = 32_000
"""LaunchInstanceDetails: "The combined size of the `metadata` and `extendedMetadata` objects can be a
maximum of 32,000 bytes" (oci SDK, src/oci/core/models/launch_instance_details.py)."""


def metadata_bytes(metadata: dict[str, str]) -> int:
    """The metadata's size as the API receives it: its JSON encoding."""
    return len(json.dumps(metadata, separators=(",", ":")).encode())


def metadata_problem(ssh_public_key: str, user_data_b64: str) -> str | None:
    """Why Oracle would refuse this launch's metadata (SSH key + cloud-init user data), or None."""
    size = metadata_bytes({"ssh_authorized_keys": ssh_public_key, "user_data": user_data_b64})
    if size <= METADATA_MAX_BYTES:
        return None
    return (f"the instance metadata (SSH public key and cloud-init user data) is {size:,} bytes; "
            f"Oracle accepts at most {METADATA_MAX_BYTES:,}")
