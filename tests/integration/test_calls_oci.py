"""TURN on Oracle Cloud, against the OCI emulator through the real SDK: the security list gets
the UDP ingress rules (TURN's port and the relay range) beside the TCP ones, and the VCN's own
CIDR is what the provider says a relay must never reach."""

from __future__ import annotations

from installer.engine import Stage, StageContext
from installer.events import Status
from installer.providers.oci import PROVIDER
from tests.oci_emulator.fixtures import EmulatorHandle
from tests.oci_emulator.harness import Runner


async def test_the_security_list_opens_udp_and_the_vcn_is_the_hosts_network(
        oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    oci_answers = oci_answers.replace("calls", turn=True)
    run = await stage_runner(oci_answers, names=("cloud.network", "cloud.ingress"))
    assert run.status("cloud.ingress") is Status.DONE, run.all_text()
    rules = oci_emulator.state.store["securityLists"][run.state.facts["cloud.security_list_id"]]["ingressSecurityRules"]
    udp = sorted((r["udpOptions"]["destinationPortRange"]["min"], r["udpOptions"]["destinationPortRange"]["max"])
                 for r in rules if r["protocol"] == "17")
    assert udp == [(3478, 3478), (49152, 49200)]
    tcp = {r["tcpOptions"]["destinationPortRange"]["min"] for r in rules if r["protocol"] == "6"}
    assert {80, 443, 3478, 5349} <= tcp
    assert all(r["source"] == "0.0.0.0/0" and not r["isStateless"] for r in rules if r["protocol"] == "17")
    # A rerun finds them all.
    again = await stage_runner(oci_answers, names=("cloud.network", "cloud.ingress"))
    assert again.status("cloud.ingress") is Status.UNCHANGED
    # The VCN the instance is in: its CIDR is denied to TURN relays.
    ctx = StageContext(again.session, Stage("turn.server", "t", lambda c: None))
    assert await PROVIDER.private_networks(ctx) == ["10.0.0.0/16"]
