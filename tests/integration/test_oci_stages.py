"""The cloud stages against the OCI emulator, through the real SDK and the real Engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from installer.events import Status
from tests.oci_emulator.fixtures import EmulatorHandle, oci_api_keys, oci_emulator, write_config  # noqa: F401
from tests.oci_emulator.harness import Runner, make_answers

AD1, AD2, AD3 = "Uocm:PHX-AD-1", "Uocm:PHX-AD-2", "Uocm:PHX-AD-3"


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path / "state")


@pytest.fixture
def answers(oci_emulator: EmulatorHandle, tmp_path: Path):
    return make_answers(oci_emulator.config_path, tmp_path / "ssh" / "id_ed25519")


def state_file(runner: Runner) -> dict:
    return json.loads((runner.state_dir / "example.org" / "state.json").read_text())


async def test_from_nothing_to_a_running_instance(oci_emulator: EmulatorHandle, runner: Runner, answers) -> None:
    run = await runner(answers)
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
    assert facts["host.address"].startswith("129.146.7.")
    assert any(p.startswith("waiting for the instance to run: PROVISIONING") for p in run.progress("cloud.instance"))
