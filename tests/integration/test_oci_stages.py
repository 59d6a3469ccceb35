"""The cloud stages against the OCI emulator, through the real SDK and the real Engine."""

from __future__ import annotations

import json
from pathlib import Path

from ruamel.yaml import YAML

from installer.events import Status
from tests.oci_emulator.fixtures import EmulatorHandle, write_config
from tests.oci_emulator.harness import FAST, Runner

AD1, AD2, AD3 = "Uocm:PHX-AD-1", "Uocm:PHX-AD-2", "Uocm:PHX-AD-3"


def state_file(stage_runner: Runner) -> dict:
    return json.loads((stage_runner.state_dir / "example.org" / "state.json").read_text())


async def test_from_nothing_to_a_running_instance(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    emu = oci_emulator.state
    facts = run.state.facts
    for key in ("cloud.vcn_id", "cloud.subnet_id", "cloud.security_list_id", "cloud.internet_gateway_id",
                "cloud.route_table_id", "cloud.instance_id", "cloud.availability_domain", "host.address", "host.host_key"):
        assert facts.get(key), key
    assert [run.status(s) for s in ("cloud.network", "cloud.ingress", "cloud.instance")] == [Status.DONE] * 3
    assert len(emu.store["vcns"]) == len(emu.store["subnets"]) == len(emu.store["internetGateways"]) == 1
    route = emu.store["routeTables"][facts["cloud.route_table_id"]]["routeRules"]
    assert route == [{"destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK",
                      "networkEntityId": facts["cloud.internet_gateway_id"], "description": None, "routeType": None}] or \
        [r["networkEntityId"] for r in route] == [facts["cloud.internet_gateway_id"]]
    (instance,) = emu.instances()
    assert instance["id"] == facts["cloud.instance_id"]
    assert instance["lifecycleState"] == "RUNNING"
    assert instance["shape"] == "VM.Standard.A1.Flex"
    assert instance["shapeConfig"] == {"ocpus": 2.0, "memoryInGBs": 12.0}
    image = next(i for i in emu.images if i["id"] == instance["imageId"])
    assert image["displayName"] == "Canonical-Ubuntu-24.04-aarch64-2024.10.08-0"
    assert emu.count("GET", "list_images") == 2  # three 24.04 arm images, two per page: the pager followed opc-next-page
    assert facts["host.address"].startswith("129.146.7.")
    assert any(p.startswith("waiting for the instance to run: PROVISIONING") for p in run.progress("cloud.instance"))


async def test_rerun_creates_nothing(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    first = await stage_runner(oci_answers)
    assert first.result.ok, first.all_text()
    emu = oci_emulator.state
    writes = emu.count("POST") + emu.count("PUT")
    rerun = await stage_runner(oci_answers)
    assert rerun.result.ok, rerun.all_text()
    assert [rerun.status(s) for s in ("cloud.network", "cloud.ingress", "cloud.instance")] == [Status.UNCHANGED] * 3
    assert emu.count("POST") + emu.count("PUT") == writes
    assert len(emu.instances()) == 1
    assert rerun.state.facts == first.state.facts


async def test_existing_public_subnet_is_used_and_user_rules_are_kept(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    user_rule = {"protocol": "6", "source": "192.0.2.0/24", "sourceType": "CIDR_BLOCK", "isStateless": False,
                 "description": "the user's own postgres rule", "tcpOptions": {"destinationPortRange": {"min": 5432, "max": 5432}}}
    seeded = emu.add_network(public=True, extra_ingress=[user_rule])
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    assert run.status("cloud.network") is Status.UNCHANGED
    assert run.state.facts["cloud.subnet_id"] == seeded["subnet"]
    assert emu.count("POST", "create_vcn") == 0
    rules = emu.security_list(seeded["securityList"])["ingressSecurityRules"]
    assert user_rule in rules
    ports = [r["tcpOptions"]["destinationPortRange"]["min"] for r in rules if r.get("tcpOptions")]
    assert sorted(ports) == [22, 80, 443, 5432]
    assert 8448 not in ports

    again = await stage_runner(oci_answers)
    assert again.status("cloud.ingress") is Status.UNCHANGED
    assert emu.security_list(seeded["securityList"])["ingressSecurityRules"] == rules


async def test_private_subnet_is_not_used(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.add_network(public=False)
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    assert run.status("cloud.network") is Status.DONE
    assert emu.count("POST", "create_vcn") == 1


async def test_subnet_given_in_answers_must_be_public(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    private = oci_emulator.state.add_network(public=False)
    run = await stage_runner(oci_answers.replace("cloud", subnet_id=private["subnet"]), names=("cloud.network",))
    finished = run.finished("cloud.network")
    assert finished.status is Status.FAILED
    assert "private" in finished.error and "cloud.subnet_id" in finished.hint


async def test_security_list_edit_retries_on_412(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    seeded = emu.add_network(public=True)
    concurrent = {"protocol": "17", "source": "0.0.0.0/0", "sourceType": "CIDR_BLOCK", "isStateless": False,
                  "description": "added by someone else meanwhile", "udpOptions": {"destinationPortRange": {"min": 51820, "max": 51820}}}

    def someone_else_edits(e) -> None:
        e.store["securityLists"][seeded["securityList"]]["ingressSecurityRules"].append(concurrent)
        e._bump(seeded["securityList"])

    emu.after("get_security_list", someone_else_edits, times=1)
    run = await stage_runner(oci_answers.replace("domain", delegation="srv"), names=("cloud.network", "cloud.ingress"))
    assert run.result.ok, run.all_text()
    assert emu.count("PUT", "update_security_list", status=412) == 1
    assert emu.count("PUT", "update_security_list", status=200) == 1
    assert any("etag mismatch" in line for line in run.logs("cloud.ingress"))
    rules = emu.security_list(seeded["securityList"])["ingressSecurityRules"]
    assert concurrent in rules
    ports = sorted(r["tcpOptions"]["destinationPortRange"]["min"] for r in rules if r.get("tcpOptions"))
    assert ports == [22, 80, 443, 8448]  # SRV delegation puts federation on 8448


async def test_capacity_errors_move_on_to_another_availability_domain(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject_capacity(AD1, times=3)
    emu.inject_capacity(AD2, times=2)
    emu.inject_capacity(AD3, times=99)
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    (instance,) = emu.instances()
    assert instance["availabilityDomain"] == AD2
    assert run.state.facts["cloud.availability_domain"] == AD2
    assert emu.count("POST", "launch_instance", status=500) == 7
    progress = run.progress("cloud.instance")
    assert progress[0].startswith("attempt 1 in PHX-AD-1 failed: out of host capacity; next try in ")
    assert any(p.startswith("attempt 7 in PHX-AD-1 failed: out of host capacity") for p in progress)
    assert "attempt 2 in PHX-AD-2 failed: out of host capacity; next try in 0.01 s" in progress
    assert "attempt 6 in PHX-AD-3 failed: out of host capacity; next try in 0.02 s" in progress  # second round: doubled
    assert any(line.startswith("launched at attempt 8, after ") for line in run.logs("cloud.instance"))


async def test_capacity_gives_up_at_the_deadline(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    for ad in (AD1, AD2, AD3):
        emu.inject_capacity(ad, times=99)
    run = await stage_runner(oci_answers, launch_retry_minutes=0)
    finished = run.finished("cloud.instance")
    assert finished.status is Status.FAILED
    assert "out of host capacity after 3 attempts" in finished.error
    assert "launch_retry_minutes" in finished.hint
    assert emu.instances() == []
    assert "cloud.instance_id" not in run.state.facts


async def test_too_many_requests_backs_off(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject("launch_instance", 429, "TooManyRequests", "Too many requests for the user", times=2)
    emu.inject("get_instance", 429, "TooManyRequests", "Too many requests for the user", times=1)
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    assert emu.count("POST", "launch_instance", status=429) == 2
    progress = run.progress("cloud.instance")
    assert "attempt 1 in PHX-AD-1 failed: too many requests (429); next try in 0.01 s" in progress
    assert "attempt 2 in PHX-AD-1 failed: too many requests (429); next try in 0.02 s" in progress
    assert "compute.get_instance: too many requests (429); next try in 0.01 s" in progress
    (instance,) = emu.instances()
    assert instance["availabilityDomain"] == AD1


async def test_limit_exceeded_stops_with_a_clear_message(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject("launch_instance", 400, "LimitExceeded",
               "The following service limits were exceeded: standard-a1-core-count. Request a service limit increase.")
    run = await stage_runner(oci_answers)
    finished = run.finished("cloud.instance")
    assert finished.status is Status.FAILED
    assert "service limit" in finished.error and "standard-a1-core-count" in finished.error
    assert "Always Free" in finished.hint
    assert emu.count("POST", "launch_instance") == 1


async def test_terminated_instance_in_state_is_reported_not_replaced(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    first = await stage_runner(oci_answers)
    assert first.result.ok, first.all_text()
    emu = oci_emulator.state
    emu.set_instance_state(first.state.facts["cloud.instance_id"], "TERMINATED")
    launches = emu.count("POST", "launch_instance")
    rerun = await stage_runner(oci_answers)
    finished = rerun.finished("cloud.instance")
    assert finished.status is Status.FAILED
    assert "TERMINATED" in finished.error
    assert "cloud.instance_id" in finished.hint and "state.json" in finished.hint
    assert emu.count("POST", "launch_instance") == launches
    assert len(emu.instances()) == 1


async def test_missing_instance_in_state_is_reported(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    first = await stage_runner(oci_answers)
    emu = oci_emulator.state
    emu.store["instances"].clear()
    rerun = await stage_runner(oci_answers)
    finished = rerun.finished("cloud.instance")
    assert finished.status is Status.FAILED and "no longer exists" in finished.error
    assert emu.count("POST", "launch_instance") == 1
    assert first.state.facts["cloud.instance_id"] in finished.error


async def test_same_named_instance_unknown_to_state_is_not_duplicated(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, tmp_path: Path) -> None:
    await stage_runner(oci_answers)
    fresh = Runner(tmp_path / "other-state")
    run = await fresh(oci_answers)
    finished = run.finished("cloud.instance")
    assert finished.status is Status.FAILED and "already exists" in finished.error
    assert len(oci_emulator.state.instances()) == 1


async def test_wrong_api_key_gets_401_and_a_clear_message(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, tmp_path: Path) -> None:
    # A well-formed, self-consistent config for a key the tenancy has never seen.
    config = write_config(tmp_path / "stranger" / "config", oci_emulator.other_key)
    run = await stage_runner(oci_answers.replace("cloud", oci_config=str(config)))
    finished = run.finished("cloud.network")
    assert finished.status is Status.FAILED
    assert "rejected this machine's API key signature" in finished.error and "401 NotAuthenticated" in finished.error
    assert str(config) in finished.hint and "API keys" in finished.hint
    assert oci_emulator.state.count(status=401) >= 1
    assert oci_emulator.state.count(status=200) == 0


async def test_mismatched_fingerprint_stops_before_any_call(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, tmp_path: Path) -> None:
    config = write_config(tmp_path / "mixed" / "config", oci_emulator.other_key, fingerprint=oci_emulator.key.fingerprint)
    run = await stage_runner(oci_answers.replace("cloud", oci_config=str(config)))
    finished = run.finished("cloud.network")
    assert finished.status is Status.FAILED
    assert f"{config}:3: fingerprint: does not match key_file" in finished.error
    assert oci_emulator.state.requests == []


async def test_user_data_carries_the_host_key_and_secrets_stay_out_of_logs(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, tmp_path: Path) -> None:
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    emu = oci_emulator.state
    (instance,) = emu.instances()
    user_data = emu.user_data[instance["id"]]
    assert user_data.startswith("#cloud-config\n")
    doc = YAML(typ="safe").load(user_data)
    public = run.state.facts["host.host_key"]
    assert doc["ssh_keys"]["ed25519_public"] == public
    assert doc["ssh_keys"]["ed25519_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert doc["hostname"] == "matrix"
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_ssh_private_key(doc["ssh_keys"]["ed25519_private"].encode(), None)
    derived = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert derived == public
    pub_line = Path(f"{oci_answers.ssh.private_key}.pub").read_text().strip()
    assert instance["metadata"]["ssh_authorized_keys"] == pub_line
    text = run.all_text()
    state_text = (stage_runner.state_dir / "example.org" / "state.json").read_text()
    for leak in ("PRIVATE KEY", instance["metadata"]["user_data"][:40], doc["ssh_keys"]["ed25519_private"].splitlines()[1]):
        assert leak not in text and leak not in state_text


async def test_micro_shape_gets_an_x86_image_and_no_shape_config(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    run = await stage_runner(oci_answers.replace("cloud", shape="VM.Standard.E2.1.Micro", ubuntu_version="22.04"))
    assert run.result.ok, run.all_text()
    (instance,) = oci_emulator.state.instances()
    image = next(i for i in oci_emulator.state.images if i["id"] == instance["imageId"])
    assert image["displayName"] == "Canonical-Ubuntu-22.04-2024.10.01-0"
    assert instance["shapeConfig"] is None


async def test_console_history_shows_the_host_key(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    from installer.cloud.api import OciCloud

    run = await stage_runner(oci_answers)
    cloud = await OciCloud.open(oci_emulator.config_path, "DEFAULT", lambda line: None, FAST)
    text = await cloud.console_history(run.state.facts["cloud.instance_id"])
    assert run.state.facts["host.host_key"] in text


async def test_lost_host_key_is_read_back_from_the_console_history(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    first = await stage_runner(oci_answers)
    key = first.state.facts["host.host_key"]
    path = stage_runner.state_dir / "example.org" / "state.json"
    saved = json.loads(path.read_text())
    del saved["facts"]["host.host_key"]
    path.write_text(json.dumps(saved))
    rerun = await stage_runner(oci_answers)
    assert rerun.status("cloud.instance") is Status.UNCHANGED
    assert rerun.state.facts["host.host_key"] == key
    assert oci_emulator.state.count("POST", "capture_console_history") == 1


async def test_unreachable_endpoint_is_explained(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, monkeypatch) -> None:
    monkeypatch.setenv("MATRIX_INSTALLER_OCI_ENDPOINT", "http://127.0.0.1:9")
    run = await stage_runner(oci_answers, names=("cloud.network",))
    finished = run.finished("cloud.network")
    assert finished.status is Status.FAILED
    assert finished.error == "cannot reach Oracle Cloud at http://127.0.0.1:9: connection refused"
    assert "MATRIX_INSTALLER_OCI_ENDPOINT" in finished.hint


async def test_long_capacity_retries_are_not_cut_short_by_the_sdk_circuit_breaker(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    oci_emulator.state.inject_capacity(AD1, times=12)  # the SDK's default breaker opens after 10 failures
    run = await stage_runner(oci_answers.replace("cloud", availability_domain=AD1))
    assert run.result.ok, run.all_text()
    assert oci_emulator.state.count("POST", "launch_instance") == 13


# --- Oracle Cloud as it really behaves (issue 20) --------------------------------------------
MICRO, A1 = "VM.Standard.E2.1.Micro", "VM.Standard.A1.Flex"


def compute_calls(run) -> list[str]:
    return [line.split("(")[0] for line in run.logs("cloud.instance", "cloud") if line.startswith("compute.")]


async def test_micro_launches_in_the_only_domain_that_offers_it(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.offer_only(MICRO, [AD3])
    run = await stage_runner(oci_answers.replace("cloud", shape=MICRO, ubuntu_version="22.04"))
    assert run.result.ok, run.all_text()
    (instance,) = emu.instances()
    assert instance["availabilityDomain"] == AD3
    calls = compute_calls(run)
    assert calls[:3] == ["compute.list_shapes"] * 3 and calls.index("compute.launch_instance") > 2
    assert emu.count("POST", "launch_instance") == 1  # no 404 in AD-1 or AD-2 first
    assert (f"{MICRO} is offered in PHX-AD-3; skipped: PHX-AD-1 (not offered), PHX-AD-2 (not offered)"
            in run.logs("cloud.instance"))


async def test_a1_missing_from_one_domain_is_skipped(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.offer_only(A1, [AD1, AD3])
    emu.inject_capacity(AD1, times=1)
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    (instance,) = emu.instances()
    assert instance["availabilityDomain"] == AD3
    assert emu.count("POST", "launch_instance") == 2  # AD-1 (out of capacity), then AD-3: never AD-2
    assert run.progress("cloud.instance")[0] == "attempt 1 in PHX-AD-1 failed: out of host capacity; next try in 0.01 s"
    assert f"{A1} is offered in PHX-AD-1, PHX-AD-3; skipped: PHX-AD-2 (not offered)" in run.logs("cloud.instance")


async def test_a_shape_not_found_at_launch_means_another_domain_not_a_permission_problem(
        oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject("launch_instance", 404, "NotAuthorizedOrNotFound", f"shape {A1} not found", availabilityDomain=AD1)
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    assert emu.instances()[0]["availabilityDomain"] == AD2
    assert ("attempt 1 in PHX-AD-1 failed: the shape is not offered there (404 NotAuthorizedOrNotFound); trying PHX-AD-2 instead"
            in run.logs("cloud.instance"))
    assert "policy" not in run.all_text()


async def test_a_shape_not_found_anywhere_says_so(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.offer_only(MICRO, [])
    run = await stage_runner(oci_answers.replace("cloud", shape=MICRO))
    finished = run.finished("cloud.instance")
    assert finished.status is Status.FAILED
    assert finished.error == (f"{MICRO} is not offered in any availability domain of this region: "
                              "PHX-AD-1 (not offered), PHX-AD-2 (not offered), PHX-AD-3 (not offered)")
    assert "home region" in finished.hint
    assert emu.count("POST", "launch_instance") == 0


async def test_a_limit_of_one_domain_moves_on_to_the_next(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject("launch_instance", 400, "LimitExceeded",
               f"You have reached your service limit of 0 in this Availability Domain for {A1}. Please try launching the "
               "instance in a different Availability Domain or Region, or try using a different shape.", availabilityDomain=AD1)
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    assert emu.instances()[0]["availabilityDomain"] == AD2
    assert any(line.startswith("attempt 1 in PHX-AD-1 failed: this domain's service limit is reached (400 LimitExceeded)")
               for line in run.logs("cloud.instance"))


async def test_capacity_in_other_words_is_still_capacity(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject("launch_instance", 500, "InternalError",
               f"Out of capacity for shape {A1} in availability domain {AD1}. Please try again later.", availabilityDomain=AD1)
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    assert emu.instances()[0]["availabilityDomain"] == AD2  # moved on, instead of four tries in AD-1
    assert run.progress("cloud.instance")[0] == "attempt 1 in PHX-AD-1 failed: out of host capacity; next try in 0.01 s"


async def test_a_second_a1_instance_beyond_the_free_total_gets_the_limit_message(
        oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, tmp_path: Path) -> None:
    first = await stage_runner(oci_answers)  # 2 OCPUs, 12 GB
    assert first.result.ok, first.all_text()
    second = Runner(tmp_path / "second-state")
    run = await second(oci_answers.replace("cloud", instance_name="matrix-two", ocpus=3, memory_gb=18))
    finished = run.finished("cloud.instance")
    assert finished.status is Status.FAILED
    assert finished.error == (
        "an Oracle Cloud service limit stops this: The following service limits were exceeded: standard-a1-memory-count, "
        "standard-a1-memory-regional-count, standard-a1-core-count, standard-a1-core-regional-count. Request a service "
        "limit increase from the service limits page in the console.")
    assert finished.hint.startswith("Always Free allows VM.Standard.A1.Flex up to 4 OCPUs and 24 GB in total across the "
                                    "region (this launch asks for 3 OCPUs and 18 GB)")
    assert oci_emulator.state.count("POST", "launch_instance", status=400) == 1  # a regional limit: no other AD tried
    assert len(oci_emulator.state.instances()) == 1


async def test_one_409_on_the_gateway_and_one_502_on_the_image_list_are_retried(
        oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject("create_internet_gateway", 409, "IncorrectState", "The VCN is being updated; try again later.")
    emu.inject_bad_gateway("list_images")
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    assert "network.create_internet_gateway: 409 IncorrectState: busy with another change; next try in 0.01 s" in run.progress("cloud.network")
    assert "compute.list_images: 502 Bad Gateway; next try in 0.01 s" in run.progress("cloud.instance")
    assert emu.count("POST", "create_internet_gateway", status=409) == emu.count("GET", "list_images", status=502) == 1
    assert len(emu.store["internetGateways"]) == 1 and len(emu.instances()) == 1


async def test_a_create_whose_answer_was_lost_is_repeated_without_a_second_vcn(
        oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject_bad_gateway("create_vcn", after=True)  # the VCN is made, the answer lost on the way back
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    assert emu.count("POST", "create_vcn", status=502) == emu.count("POST", "create_vcn", status=200) == 1
    assert len(emu.store["vcns"]) == 1  # the retry carried the same opc-retry-token


async def test_new_network_resources_are_waited_for_until_available(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    run = await stage_runner(oci_answers, names=("cloud.network",))
    assert run.result.ok, run.all_text()
    progress = run.progress("cloud.network")
    for what in ("VCN", "internet gateway", "subnet"):
        assert f"waiting for the {what}: PROVISIONING" in progress
    emu = oci_emulator.state
    assert emu.count("POST", "create_internet_gateway", status=409) == emu.count("POST", "create_subnet", status=409) == 0
    facts = run.state.facts
    assert emu.store["subnets"][facts["cloud.subnet_id"]]["lifecycleState"] == "AVAILABLE"


async def test_a_rerun_right_after_a_failure_reuses_what_lists_do_not_show_yet(
        oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject("get_route_table", 404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.")
    first = await stage_runner(oci_answers, names=("cloud.network",))
    assert first.finished("cloud.network").status is Status.FAILED  # after the VCN and the gateway were made
    rerun = await stage_runner(oci_answers, names=("cloud.network",))  # lists still miss them
    assert rerun.result.ok, rerun.all_text()
    assert len(emu.store["vcns"]) == len(emu.store["internetGateways"]) == len(emu.store["subnets"]) == 1


async def test_console_history_with_50_kb_of_boot_output_is_read_whole(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.console_boot_bytes = 50_000
    first = await stage_runner(oci_answers)
    key = first.state.facts["host.host_key"]
    path = stage_runner.state_dir / "example.org" / "state.json"
    saved = json.loads(path.read_text())
    del saved["facts"]["host.host_key"]
    path.write_text(json.dumps(saved))
    rerun = await stage_runner(oci_answers)
    assert rerun.status("cloud.instance") is Status.UNCHANGED, rerun.all_text()
    assert rerun.state.facts["host.host_key"] == key
    assert emu.count("GET", "get_console_history_content") == 2  # 32 KiB pages, following opc-bytes-remaining
    assert "capturing the console history: REQUESTED" in rerun.progress("cloud.instance")
    assert any(line.startswith("SSH host key read from the instance's console history: SHA256:") for line in rerun.logs("cloud.instance"))


async def test_a_console_capture_that_fails_leaves_the_key_to_be_pinned(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    first = await stage_runner(oci_answers)
    path = stage_runner.state_dir / "example.org" / "state.json"
    saved = json.loads(path.read_text())
    del saved["facts"]["host.host_key"]
    path.write_text(json.dumps(saved))
    emu.console_capture_fails = True
    rerun = await stage_runner(oci_answers)
    assert rerun.status("cloud.instance") is Status.UNCHANGED, rerun.all_text()
    assert "host.host_key" not in rerun.state.facts and first.state.facts["cloud.instance_id"]
    assert ("the instance's SSH host key is neither in the state nor in its console history: pin it with ssh.host_key"
            in rerun.logs("cloud.instance"))
    assert "the console history capture ended FAILED" in rerun.progress("cloud.instance")


async def test_a_domain_dropped_in_a_later_round_hands_over_to_the_next_one(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.inject_capacity(AD1, times=1)
    emu.inject_capacity(AD2, times=1)
    emu.inject("launch_instance", 404, "NotAuthorizedOrNotFound", f"shape {A1} not found", availabilityDomain=AD2)
    emu.inject_capacity(AD3, times=1)
    emu.inject_capacity(AD1, times=1)
    run = await stage_runner(oci_answers)
    assert run.result.ok, run.all_text()
    # AD-1, AD-2, AD-3 out of capacity; AD-1 again; AD-2 no longer offers it: AD-3 is next, not AD-1.
    assert emu.instances()[0]["availabilityDomain"] == AD3
    assert "attempt 5 in PHX-AD-2 failed: the shape is not offered there (404 NotAuthorizedOrNotFound); trying PHX-AD-3 instead" \
        in run.logs("cloud.instance")
