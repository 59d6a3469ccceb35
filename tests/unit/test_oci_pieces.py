"""Pure pieces of the cloud stages: image choice, ingress rule matching, cloud-init, DNS records."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace as NS

import pytest
from ruamel.yaml import YAML

from installer.answers import Answers
from installer.cloud.api import CloudError
from installer.cloud.limits import metadata_problem
from installer.cloud.notices import idle_reclaim_notice
from installer.cloud.shapes import why_not_offered
from installer.cloud.userdata import HostKey, UserDataError, generate_host_key, host_key_fingerprint, render_user_data
from installer.components.base import Port
from installer.components.dns import to_publish_elsewhere
from installer.deployment import Deployment
from installer.providers.oci.stages import pick_image, rule_allows


def wanted_records(answers, address):
    return Deployment.build(answers).records(address)


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
    assert rule_allows(rule, Port(port)) is allowed


def test_rule_allows_udp_ranges() -> None:
    relay = Port((49152, 49200), "udp")
    udp = NS(protocol="17", source="0.0.0.0/0", source_type="CIDR_BLOCK",
             udp_options=NS(destination_port_range=NS(min=49000, max=49300), source_port_range=None))
    assert rule_allows(udp, relay)
    assert not rule_allows(udp, Port((49000, 49400), "udp"))  # only part of the range
    assert not rule_allows(tcp("0.0.0.0/0", 49000, 49300), relay)


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
    # Element Web's own name is served here too (element.<server name> unless [element] host says).
    assert lines == ["matrix.example.org. 300 IN A 203.0.113.10", "example.org. 300 IN A 203.0.113.10",
                     "element.example.org. 300 IN A 203.0.113.10"]
    srv = base.replace("domain", delegation="srv")
    assert [r.zone_line for r in wanted_records(srv, "203.0.113.10")] == [
        "matrix.example.org. 300 IN A 203.0.113.10",
        "example.org. 300 IN A 203.0.113.10",  # its certificate for the server name is served here (:8448)
        "element.example.org. 300 IN A 203.0.113.10",
        "_matrix-fed._tcp.example.org. 300 IN SRV 0 10 8448 matrix.example.org.",
    ]
    v6 = [r.zone_line for r in wanted_records(base, "2001:db8::7")]
    assert v6 == ["matrix.example.org. 300 IN AAAA 2001:db8::7", "example.org. 300 IN AAAA 2001:db8::7",
                  "element.example.org. 300 IN AAAA 2001:db8::7"]
    same = base.replace("domain", matrix_host="example.org", delegation="none").replace("element", enabled=False)
    assert [r.zone_line for r in wanted_records(same, "203.0.113.10")] == ["example.org. 300 IN A 203.0.113.10"]


def test_a_server_name_served_elsewhere_gets_the_documents_to_publish_there():

    base = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    lines = to_publish_elsewhere(base.replace("domain", serve_server_name=False))
    assert 'https://example.org/.well-known/matrix/server  {"m.server": "matrix.example.org:443"}' in lines[1]
    assert '{"m.homeserver": {"base_url": "https://matrix.example.org"}}' in lines[2] and "Access-Control-Allow-Origin" in lines[0]
    assert to_publish_elsewhere(base) == [] and to_publish_elsewhere(base.replace("domain", serve_server_name=False, delegation="srv")) == []


def test_the_firewall_stage_titles_name_8448_when_federation_uses_it():
    from installer.plan import install_plan

    base = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    titles = {s.name: s.title for s in install_plan(base.replace("domain", delegation="srv").replace("calls", turn=False))}
    assert titles["cloud.ingress"] == "Security list: ingress 80/443/8448"
    assert titles["host.firewall"] == "Host firewall: 80/443/8448 before the REJECT"
    no_calls = base.replace("calls", turn=False)
    assert {s.name: s.title for s in install_plan(no_calls)}["host.firewall"] == "Host firewall: 80/443 before the REJECT"
    # TURN adds its ports, UDP among them: the titles say which protocol.
    titles = {s.name: s.title for s in install_plan(base)}
    assert titles["cloud.ingress"] == "Security list: ingress tcp 80/443/3478/5349, udp 3478/49152-49200"
    assert titles["host.firewall"] == "Host firewall: tcp 80/443/3478/5349, udp 3478/49152-49200 before the REJECT"


# --- Oracle Cloud as it really behaves (issue 20) --------------------------------------------
@pytest.mark.parametrize(("status", "code", "message", "kind"), [
    (500, "InternalError", "Out of host capacity.", "capacity"),
    (500, "InternalError", "Out of capacity for shape VM.Standard.A1.Flex in availability domain AD-1. Please try again later.", "capacity"),
    (503, "InternalError", "Insufficient capacity in this domain", "capacity"),
    (500, "InternalError", "Internal error", "transient"),
    (502, "", "502 Bad Gateway", "transient"),
    (501, "NotImplemented", "not here", "fatal"),
    (409, "IncorrectState", "The VCN is PROVISIONING", "transient"),
    (409, "LockConflict", "locked", "transient"),
    (409, "Conflict", "a gateway already exists", "fatal"),
    (404, "NotAuthorizedOrNotFound", "shape VM.Standard.E2.1.Micro not found", "not offered here"),
    (404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.", "fatal"),
    (400, "LimitExceeded", "You have reached your service limit of 1 in this Availability Domain for VM.Standard2.1. "
                           "Please try launching the instance in a different Availability Domain or Region.", "not offered here"),
    (400, "LimitExceeded", "The following service limits were exceeded: standard-a1-core-count. Request a service limit "
                           "increase from the service limits page in the console. ", "fatal"),
])
def test_cloud_errors_are_told_apart_by_code_and_message_family(status: int, code: str, message: str, kind: str) -> None:
    error = CloudError(status, code, message, "compute.launch_instance")
    found = ("capacity" if error.out_of_capacity else "transient" if error.transient
             else "not offered here" if error.shape_not_offered or error.limit_in_this_ad else "fatal")
    assert found == kind


def test_progress_names_the_error_briefly() -> None:
    assert CloudError(429, "TooManyRequests", "slow down").gist == "too many requests (429)"
    assert CloudError(409, "IncorrectState", "x").gist == "409 IncorrectState: busy with another change"
    assert CloudError(502, "", "<html>").gist == "502 Bad Gateway"
    assert CloudError(503, "ServiceUnavailable", "x").gist == "503 ServiceUnavailable"


def test_micro_is_wanted_only_where_it_is_always_free() -> None:
    offered = [NS(shape="VM.Standard.A1.Flex", billing_type="LIMITED_FREE"), NS(shape="VM.Standard.E2.1.Micro", billing_type="PAID")]
    assert why_not_offered("VM.Standard.A1.Flex", offered) is None
    assert why_not_offered("VM.Standard.E4.Flex", offered) == "not offered"
    assert why_not_offered("VM.Standard.E2.1.Micro", offered) == "offered as PAID, not Always Free"
    assert why_not_offered("VM.Standard.E2.1.Micro", [NS(shape="VM.Standard.E2.1.Micro", billing_type="ALWAYS_FREE")]) is None


def test_metadata_over_32000_bytes_is_refused_before_launching() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ada@laptop"
    assert metadata_problem(key, "I2Nsb3VkLWNvbmZpZwo=" * 100) is None
    problem = metadata_problem(key, "A" * 32_000)
    assert problem is not None and problem.endswith("bytes; Oracle accepts at most 32,000")


def test_the_idle_reclaim_notice_is_for_oracle_cloud_only() -> None:
    base = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    a1 = idle_reclaim_notice(base.replace("cloud", provider="oci"))
    assert a1[0].startswith("If its CPU, network and memory stay under 20% for 7 days, Oracle stops the VM.")
    assert "not deleted" in a1[1] and "matrix-installer --check example.org" in a1[1]
    assert "Pay As You Go" in a1[2] and "keep-alive" in a1[2]
    micro = idle_reclaim_notice(base.replace("cloud", provider="oci", shape="VM.Standard.E2.1.Micro"))
    assert micro[0].startswith("If its CPU and network stay under 20% for 7 days")
    assert idle_reclaim_notice(base.replace("cloud", provider="existing")) == []
