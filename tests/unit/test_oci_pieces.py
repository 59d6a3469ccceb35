"""Pure pieces of the cloud stages: image choice, ingress rule matching, cloud-init, DNS records."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace as NS

import pytest
from ruamel.yaml import YAML

from installer.answers import Answers
from installer.cloud.userdata import HostKey, UserDataError, generate_host_key, host_key_fingerprint, render_user_data
from installer.published import wanted_records
from installer.stages.cloud import pick_image, rule_allows


def image(name: str, day: int) -> NS:
    return NS(id=f"ocid1.image.{day}", display_name=name, lifecycle_state="AVAILABLE",
              time_created=dt.datetime(2024, 10, day, tzinfo=dt.timezone.utc))


IMAGES = [
    image("Canonical-Ubuntu-24.04-aarch64-2024.10.08-0", 10),
    image("Canonical-Ubuntu-24.04-aarch64-2024.09.20-0", 1),
    image("Canonical-Ubuntu-24.04-Minimal-aarch64-2024.10.20-0", 21),
    image("Canonical-Ubuntu-24.04-2024.10.08-0", 11),
    image("Canonical-Ubuntu-22.04-aarch64-2024.10.15-0", 16),
    image("Canonical-Ubuntu-24.04-aarch64-2024.10.08-0-GPU", 25),
]


def test_newest_plain_image_of_the_right_architecture() -> None:
    assert pick_image(IMAGES, "24.04", "VM.Standard.A1.Flex").display_name == "Canonical-Ubuntu-24.04-aarch64-2024.10.08-0"
    assert pick_image(IMAGES, "24.04", "VM.Standard.E2.1.Micro").display_name == "Canonical-Ubuntu-24.04-2024.10.08-0"
    assert pick_image(IMAGES, "22.04", "VM.Standard.A1.Flex").display_name == "Canonical-Ubuntu-22.04-aarch64-2024.10.15-0"
    assert pick_image(IMAGES, "22.04", "VM.Standard.E2.1.Micro") is None


def tcp(source: str, low: int | None, high: int | None = None, protocol: str = "6") -> NS:
    ports = None if low is None else NS(min=low, max=high or low)
    return NS(protocol=protocol, source=source, source_type="CIDR_BLOCK",
              tcp_options=None if ports is None else NS(destination_port_range=ports, source_port_range=None))


@pytest.mark.parametrize(("rule", "port", "allowed"), [
    (tcp("0.0.0.0/0", 443), 443, True),
    (tcp("0.0.0.0/0", 80, 443), 443, True),
    (tcp("0.0.0.0/0", None), 8448, True),          # every TCP port
    (tcp("0.0.0.0/0", None, protocol="all"), 80, True),
    (tcp("10.0.0.0/8", 443), 443, False),          # not from anywhere
    (tcp("0.0.0.0/0", 22), 443, False),
    (tcp("0.0.0.0/0", 443, protocol="17"), 443, False),  # UDP
])
def test_rule_allows(rule: NS, port: int, allowed: bool) -> None:
    assert rule_allows(rule, port) is allowed


def test_user_data_is_valid_yaml_with_the_host_key() -> None:
    key = generate_host_key()
    text = render_user_data(key, "matrix")
    doc = YAML(typ="safe").load(text)
    assert doc["ssh_keys"] == {"ed25519_private": key.private_openssh, "ed25519_public": key.public_line}
    assert doc["ssh_deletekeys"] is True and doc["ssh_genkeytypes"] == []
    assert host_key_fingerprint(key.public_line).startswith("SHA256:")


@pytest.mark.parametrize("hostname", ["matrix\nruncmd: [reboot]", 'a"b', "x y", ""])
def test_user_data_refuses_unsafe_values(hostname: str) -> None:
    with pytest.raises(UserDataError):
        render_user_data(generate_host_key(), hostname)


def test_user_data_refuses_a_doctored_key() -> None:
    key = generate_host_key()
    with pytest.raises(UserDataError):
        render_user_data(HostKey(key.private_openssh + "runcmd: [reboot]\n", key.public_line), "matrix")
    with pytest.raises(UserDataError):
        render_user_data(HostKey(key.private_openssh, key.public_line + "\nruncmd: [x]"), "matrix")


def test_records_for_each_delegation() -> None:
    base = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    lines = [r.zone_line for r in wanted_records(base, "203.0.113.10")]
    assert lines == ["matrix.example.org. 300 IN A 203.0.113.10", "example.org. 300 IN A 203.0.113.10"]
    srv = base.replace("domain", delegation="srv", serve_server_name=False)
    assert [r.zone_line for r in wanted_records(srv, "203.0.113.10")] == [
        "matrix.example.org. 300 IN A 203.0.113.10",
        "_matrix-fed._tcp.example.org. 300 IN SRV 0 10 8448 matrix.example.org.",
    ]
    same = base.replace("domain", matrix_host="example.org", delegation="none")
    assert [r.zone_line for r in wanted_records(same, "203.0.113.10")] == ["example.org. 300 IN A 203.0.113.10"]


def test_a_server_name_served_elsewhere_gets_the_documents_to_publish_there():
    from installer.published import to_publish_elsewhere

    base = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    lines = to_publish_elsewhere(base.replace("domain", serve_server_name=False))
    assert 'https://example.org/.well-known/matrix/server  {"m.server": "matrix.example.org:443"}' in lines[1]
    assert '{"m.homeserver": {"base_url": "https://matrix.example.org"}}' in lines[2] and "Access-Control-Allow-Origin" in lines[0]
    assert to_publish_elsewhere(base) == [] and to_publish_elsewhere(base.replace("domain", serve_server_name=False, delegation="srv")) == []


def test_the_firewall_stage_titles_name_8448_when_federation_uses_it():
    from installer.plan import install_plan

    base = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    titles = {s.name: s.title for s in install_plan(base.replace("domain", delegation="srv"))}
    assert titles["cloud.ingress"] == "Security list: ingress 80/443/8448"
    assert titles["host.firewall"] == "Host firewall: 80/443/8448 before the REJECT"
    assert {s.name: s.title for s in install_plan(base)}["host.firewall"] == "Host firewall: 80/443 before the REJECT"
