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


# --- Oracle Cloud as it really behaves (issue 20) --------------------------------------------
AD1, AD2, AD3 = "Uocm:PHX-AD-1", "Uocm:PHX-AD-2", "Uocm:PHX-AD-3"


def launch_details(handle: EmulatorHandle, subnet: str, *, shape: str = "VM.Standard.A1.Flex", ad: str = AD1,
                   ocpus: float = 1.0, memory: float = 6.0, boot_gb: int | None = None, metadata: dict | None = None):
    arm = "aarch64" in shape or ".A1." in shape
    image = next(i for i in handle.state.images if i["displayName"] == (
        "Canonical-Ubuntu-24.04-aarch64-2024.10.08-0" if arm else "Canonical-Ubuntu-24.04-2024.10.08-0"))
    m = oci.core.models
    return m.LaunchInstanceDetails(
        compartment_id=TENANCY, availability_domain=ad, shape=shape,
        shape_config=m.LaunchInstanceShapeConfigDetails(ocpus=ocpus, memory_in_gbs=memory) if shape.endswith(".Flex") else None,
        source_details=m.InstanceSourceViaImageDetails(image_id=image["id"], boot_volume_size_in_gbs=boot_gb),
        create_vnic_details=m.CreateVnicDetails(subnet_id=subnet), metadata=metadata or {"ssh_authorized_keys": "ssh-ed25519 AAAA"},
    )


def refused(call, *args, **kwargs) -> oci.exceptions.ServiceError:
    with pytest.raises(oci.exceptions.ServiceError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_shapes_are_listed_per_availability_domain_and_micro_launches_only_where_listed(oci_emulator: EmulatorHandle) -> None:
    compute, _ = clients(oci_emulator)
    every = oci.pagination.list_call_get_all_results
    by_ad = {ad: {s.shape: s.billing_type for s in every(compute.list_shapes, TENANCY, availability_domain=ad).data}
             for ad in (AD1, AD2, AD3)}
    assert by_ad[AD1] == by_ad[AD2] == {"VM.Standard.A1.Flex": "LIMITED_FREE", "VM.Standard.E4.Flex": "PAID"}
    assert by_ad[AD3]["VM.Standard.E2.1.Micro"] == "ALWAYS_FREE"
    ids = oci_emulator.state.add_network()
    error = refused(compute.launch_instance, launch_details(oci_emulator, ids["subnet"], shape="VM.Standard.E2.1.Micro", ad=AD1))
    assert (error.status, error.code, error.message) == (404, "NotAuthorizedOrNotFound", "shape VM.Standard.E2.1.Micro not found")
    assert compute.launch_instance(launch_details(oci_emulator, ids["subnet"], shape="VM.Standard.E2.1.Micro", ad=AD3)).data.id


def test_always_free_limits_answer_with_oracles_limit_exceeded_texts(oci_emulator: EmulatorHandle) -> None:
    compute, _ = clients(oci_emulator)
    subnet = oci_emulator.state.add_network()["subnet"]
    compute.launch_instance(launch_details(oci_emulator, subnet, ocpus=3, memory=18))
    error = refused(compute.launch_instance, launch_details(oci_emulator, subnet, ocpus=2, memory=6, ad=AD2))
    assert (error.status, error.code) == (400, "LimitExceeded")
    assert error.message == ("The following service limits were exceeded: standard-a1-core-count, standard-a1-core-regional-count. "
                             "Request a service limit increase from the service limits page in the console. ")
    compute.launch_instance(launch_details(oci_emulator, subnet, ocpus=1, memory=6))  # exactly 4 OCPUs and 24 GB
    for _ in range(2):
        compute.launch_instance(launch_details(oci_emulator, subnet, shape="VM.Standard.E2.1.Micro", ad=AD3))
    error = refused(compute.launch_instance, launch_details(oci_emulator, subnet, shape="VM.Standard.E2.1.Micro", ad=AD3))
    assert error.message.startswith("The following service limits were exceeded: standard-e2-micro-core-count. ")


def test_boot_volumes_share_200_gb_and_metadata_is_capped_at_32000_bytes(oci_emulator: EmulatorHandle) -> None:
    compute, _ = clients(oci_emulator)
    subnet = oci_emulator.state.add_network()["subnet"]
    compute.launch_instance(launch_details(oci_emulator, subnet, boot_gb=150))
    error = refused(compute.launch_instance, launch_details(oci_emulator, subnet, boot_gb=60))
    assert (error.code, error.message.split(". ")[0]) == ("LimitExceeded", "The following service limits were exceeded: total-storage-gb")
    big = {"ssh_authorized_keys": "ssh-ed25519 AAAA", "user_data": "A" * 32_000}
    error = refused(compute.launch_instance, launch_details(oci_emulator, subnet, metadata=big))
    assert (error.status, error.code) == (400, "InvalidParameter") and "32000 bytes" in error.message


def test_network_resources_provision_and_show_in_lists_a_moment_later(oci_emulator: EmulatorHandle) -> None:
    _, network = clients(oci_emulator)
    m = oci.core.models
    vcn = network.create_vcn(m.CreateVcnDetails(compartment_id=TENANCY, cidr_blocks=["10.0.0.0/16"], display_name="v")).data
    assert vcn.lifecycle_state == "PROVISIONING"
    assert network.list_vcns(TENANCY).data == []  # not listed yet
    assert [v.id for v in network.list_vcns(TENANCY).data] == [vcn.id]
    error = refused(network.create_internet_gateway, m.CreateInternetGatewayDetails(compartment_id=TENANCY, vcn_id=vcn.id, is_enabled=True))
    assert (error.status, error.code) == (409, "IncorrectState")
    states = [network.get_vcn(vcn.id).data.lifecycle_state for _ in range(3)]
    assert states == ["PROVISIONING", "PROVISIONING", "AVAILABLE"]
    igw = network.create_internet_gateway(m.CreateInternetGatewayDetails(compartment_id=TENANCY, vcn_id=vcn.id, is_enabled=True)).data
    assert igw.lifecycle_state == "PROVISIONING"


def test_a_create_repeated_with_its_retry_token_answers_the_first_result(oci_emulator: EmulatorHandle) -> None:
    _, network = clients(oci_emulator)
    details = oci.core.models.CreateVcnDetails(compartment_id=TENANCY, cidr_blocks=["10.0.0.0/16"], display_name="v")
    first = network.create_vcn(details, opc_retry_token="token-1").data
    again = network.create_vcn(details, opc_retry_token="token-1").data
    other = network.create_vcn(details, opc_retry_token="token-2").data
    assert first.id == again.id != other.id
    assert len(oci_emulator.state.store["vcns"]) == 2


def test_injected_409_and_502_look_like_oracles(oci_emulator: EmulatorHandle) -> None:
    compute, _ = clients(oci_emulator)
    oci_emulator.state.inject("list_images", 409, "LockConflict", "The resource is locked by another operation.")
    oci_emulator.state.inject_bad_gateway("list_images")
    error = refused(compute.list_images, TENANCY)
    assert (error.status, error.code) == (409, "LockConflict")
    error = refused(compute.list_images, TENANCY)
    assert error.status == 502 and not error.code and "502 Bad Gateway" in error.message  # a gateway's page, not Oracle's JSON
    assert compute.list_images(TENANCY).data


def test_console_history_is_captured_asynchronously_and_read_in_pages(oci_emulator: EmulatorHandle) -> None:
    compute, _ = clients(oci_emulator)
    emu = oci_emulator.state
    emu.console_boot_bytes = 50_000
    instance = compute.launch_instance(launch_details(oci_emulator, emu.add_network()["subnet"])).data
    history = compute.capture_console_history(oci.core.models.CaptureConsoleHistoryDetails(instance_id=instance.id)).data
    assert history.lifecycle_state == "REQUESTED"
    assert refused(compute.get_console_history_content, history.id).status == 409
    assert [compute.get_console_history(history.id).data.lifecycle_state for _ in range(2)] == ["GETTING-HISTORY", "SUCCEEDED"]
    first = compute.get_console_history_content(history.id)
    assert len(first.data) == 10240 and int(first.headers["opc-bytes-remaining"]) > 39_000
    assert refused(compute.get_console_history_content, history.id, length=100).status == 400
    rest = compute.get_console_history_content(history.id, offset=10240, length=1_000_000)
    assert rest.headers["opc-bytes-remaining"] == "0"
    assert len(first.data) + len(rest.data) > 50_000


def test_dns_zones_have_a_scope_and_bad_rdata_cannot_be_parsed(oci_emulator: EmulatorHandle) -> None:
    config = oci.config.from_file(oci_emulator.config_path)
    dns = oci.dns.DnsClient(config, service_endpoint=oci_emulator.url, retry_strategy=oci.retry.NoneRetryStrategy())
    private = oci_emulator.state.add_zone("example.org", scope="PRIVATE")
    public = oci_emulator.state.add_zone("example.org")
    assert {z.id for z in dns.list_zones(TENANCY, name="example.org").data} == {private["id"], public["id"]}
    assert [z.id for z in dns.list_zones(TENANCY, name="example.org", scope="GLOBAL").data] == [public["id"]]
    assert dns.get_zone("example.org").data.id == public["id"]  # by name: the GLOBAL one
    assert dns.get_zone("example.org", scope="PRIVATE", view_id=private["viewId"]).data.id == private["id"]
    m = oci.dns.models
    bad = m.UpdateRRSetDetails(items=[m.RecordDetails(domain="matrix.example.org", rtype="A", rdata="cnode1", ttl=300)])
    error = refused(dns.update_rr_set, public["id"], "matrix.example.org", "A", bad)
    assert (error.status, error.code, error.message) == (400, "CannotParseRequest", 'Invalid value for items[0].rdata: bad A A: "cnode1"')
