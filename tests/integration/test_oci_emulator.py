"""The emulator itself answers as Oracle does: signatures, error shape, paging, etags."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import oci
import pytest

from tests.oci_emulator.fixtures import TENANCY, EmulatorHandle, write_config


def clients(handle: EmulatorHandle, config_path: str | None = None):
    config = oci.config.from_file(config_path or handle.config_path)
    kwargs = {"service_endpoint": handle.url, "retry_strategy": oci.retry.NoneRetryStrategy()}
    return oci.core.ComputeClient(config, **kwargs), oci.core.VirtualNetworkClient(config, **kwargs)


def test_unsigned_request_gets_401_in_oracles_error_shape(oci_emulator: EmulatorHandle) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{oci_emulator.url}/20160918/instances?compartmentId={TENANCY}")
    assert caught.value.code == 401
    assert caught.value.headers["opc-request-id"]
    assert json.loads(caught.value.read()) == {
        "code": "NotAuthenticated",
        "message": "The required information to complete authentication was not provided or was incorrect.",
    }


def test_signature_by_the_wrong_key_is_rejected(oci_emulator: EmulatorHandle, tmp_path) -> None:
    # The registered key's ID, signed with another private key: the signature cannot verify.
    config = write_config(tmp_path / "config", oci_emulator.other_key, fingerprint=oci_emulator.key.fingerprint)
    compute, _ = clients(oci_emulator, str(config))
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        compute.list_instances(TENANCY)
    assert (caught.value.status, caught.value.code) == (401, "NotAuthenticated")


def test_signed_body_is_checked(oci_emulator: EmulatorHandle) -> None:
    _, network = clients(oci_emulator)
    vcn = network.create_vcn(oci.core.models.CreateVcnDetails(compartment_id=TENANCY, cidr_blocks=["10.0.0.0/16"], display_name="v")).data
    assert vcn.display_name == "v" and vcn.default_security_list_id.startswith("ocid1.securitylist.")


def test_paging_follows_opc_next_page(oci_emulator: EmulatorHandle) -> None:
    compute, _ = clients(oci_emulator)
    first = compute.list_images(TENANCY, operating_system="Canonical Ubuntu")
    assert len(first.data) == 2 and first.next_page
    everything = oci.pagination.list_call_get_all_results(compute.list_images, TENANCY, operating_system="Canonical Ubuntu").data
    assert len(everything) == 7
    assert oci_emulator.state.count("GET", "list_images") == 5


def test_security_list_etag_and_if_match(oci_emulator: EmulatorHandle) -> None:
    _, network = clients(oci_emulator)
    ids = oci_emulator.state.add_network()
    got = network.get_security_list(ids["securityList"])
    etag = got.headers["etag"]
    details = oci.core.models.UpdateSecurityListDetails(ingress_security_rules=got.data.ingress_security_rules)
    network.update_security_list(ids["securityList"], details, if_match=etag)
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        network.update_security_list(ids["securityList"], details, if_match=etag)
    assert caught.value.status == 412


def test_instance_lifecycle_advances_over_polls(oci_emulator: EmulatorHandle) -> None:
    compute, network = clients(oci_emulator)
    ids = oci_emulator.state.add_network()
    arm = next(i for i in oci_emulator.state.images if i["displayName"] == "Canonical-Ubuntu-24.04-aarch64-2024.10.08-0")
    m = oci.core.models
    details = m.LaunchInstanceDetails(
        compartment_id=TENANCY, availability_domain="Uocm:PHX-AD-1", shape="VM.Standard.A1.Flex",
        shape_config=m.LaunchInstanceShapeConfigDetails(ocpus=1.0, memory_in_gbs=6.0),
        source_details=m.InstanceSourceViaImageDetails(image_id=arm["id"]),
        create_vnic_details=m.CreateVnicDetails(subnet_id=ids["subnet"]), metadata={"ssh_authorized_keys": "ssh-ed25519 AAAA"},
    )
    launched = compute.launch_instance(details).data
    assert launched.lifecycle_state == "PROVISIONING"
    states = [compute.get_instance(launched.id).data.lifecycle_state for _ in range(4)]
    assert states == ["PROVISIONING", "PROVISIONING", "RUNNING", "RUNNING"]
    (attachment,) = compute.list_vnic_attachments(TENANCY, instance_id=launched.id).data
    assert attachment.lifecycle_state == "ATTACHED"
    assert network.get_vnic(attachment.vnic_id).data.public_ip


def test_wrong_architecture_image_is_refused(oci_emulator: EmulatorHandle) -> None:
    compute, _ = clients(oci_emulator)
    ids = oci_emulator.state.add_network()
    x86 = next(i for i in oci_emulator.state.images if i["displayName"] == "Canonical-Ubuntu-24.04-2024.10.08-0")
    m = oci.core.models
    details = m.LaunchInstanceDetails(
        compartment_id=TENANCY, availability_domain="Uocm:PHX-AD-1", shape="VM.Standard.A1.Flex",
        shape_config=m.LaunchInstanceShapeConfigDetails(ocpus=1.0, memory_in_gbs=6.0),
        source_details=m.InstanceSourceViaImageDetails(image_id=x86["id"]),
        create_vnic_details=m.CreateVnicDetails(subnet_id=ids["subnet"]), metadata={"ssh_authorized_keys": "ssh-ed25519 AAAA"},
    )
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        compute.launch_instance(details)
    assert (caught.value.status, caught.value.code) == (400, "InvalidParameter")
