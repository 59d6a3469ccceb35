"""The DNS stage: records set in an OCI DNS zone, or shown and waited for in real DNS."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from installer.events import Status
from installer.interaction import Headless
from tests.oci_emulator.dns_server import DnsServer
from tests.oci_emulator.fixtures import EmulatorHandle
from tests.oci_emulator.harness import WITH_DNS, Runner, make_answers


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


async def test_records_created_in_an_oci_zone_and_left_alone_on_rerun(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.add_zone("example.org")
    run = await stage_runner(oci_answers, names=WITH_DNS)
    assert run.result.ok, run.all_text()
    address = run.state.facts["host.address"]
    assert run.status("dns.records") is Status.DONE
    for name in ("matrix.example.org", "example.org"):
        (record,) = emu.rrset("example.org", name, "A")
        assert (record["rdata"], record["ttl"]) == (address, 300)
    assert f"OCI DNS zone example.org: matrix.example.org. 300 IN A {address} (created)" in run.logs("dns.records")
    # The walk up the labels asks for matrix.example.org first, then finds example.org.
    assert "dns.list_zones(name=matrix.example.org, type=PRIMARY, scope=GLOBAL)" in run.logs("dns.records", "cloud")

    rerun = await stage_runner(oci_answers, names=WITH_DNS)
    assert rerun.status("dns.records") is Status.UNCHANGED
    assert emu.count("PUT", "update_rr_set") == 2


async def test_wrong_record_in_the_zone_is_updated(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.add_zone("example.org")
    emu.set_rrset("example.org", "matrix.example.org", "A", "198.51.100.7", ttl=3600)
    run = await stage_runner(oci_answers.replace("domain", serve_server_name=False, redirect_to=""), names=WITH_DNS)
    assert run.result.ok, run.all_text()
    address = run.state.facts["host.address"]
    assert [r["rdata"] for r in emu.rrset("example.org", "matrix.example.org", "A")] == [address]
    assert emu.rrset("example.org", "example.org", "A") == []
    assert any(line.endswith("(updated)") for line in run.logs("dns.records"))


async def test_srv_delegation_record_is_set_too(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.add_zone("example.org")
    run = await stage_runner(oci_answers.replace("domain", delegation="srv"), names=WITH_DNS)
    assert run.result.ok, run.all_text()
    (srv,) = emu.rrset("example.org", "_matrix-fed._tcp.example.org", "SRV")
    assert srv["rdata"] == "0 10 8448 matrix.example.org."


async def test_records_shown_and_waited_for_until_they_resolve(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, dns_server: DnsServer) -> None:
    await stage_runner(oci_answers)  # the instance first, so its address is known
    address = runner_state_address(stage_runner)
    dns_server.set("matrix.example.org", "A", address)

    async def appear_later() -> None:
        while dns_server.queries < 4:
            await asyncio.sleep(0.02)
        dns_server.set("example.org", "A", address)

    helper = asyncio.create_task(appear_later())
    run = await stage_runner(oci_answers, names=WITH_DNS, dns_server=dns_server.address)
    await helper
    assert run.status("dns.records") is Status.DONE, run.all_text()
    logs = run.logs("dns.records")
    assert "create these records at your DNS provider:" in logs
    assert f"    matrix.example.org. 300 IN A {address}" in logs
    assert f"    example.org. 300 IN A {address}" in logs
    assert any(p.startswith("waiting for DNS: example.org; 0:0") and p.endswith(" left") for p in run.progress("dns.records"))


async def test_srv_record_shown_for_manual_dns(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, dns_server: DnsServer) -> None:
    srv_answers = oci_answers.replace("domain", delegation="srv")
    await stage_runner(srv_answers)
    address = runner_state_address(stage_runner)
    dns_server.set("matrix.example.org", "A", address)
    dns_server.set("example.org", "A", address)
    dns_server.set("_matrix-fed._tcp.example.org", "SRV", "0 10 8448 matrix.example.org.")
    run = await stage_runner(srv_answers, names=WITH_DNS, dns_server=dns_server.address)
    assert run.status("dns.records") is Status.UNCHANGED, run.all_text()
    assert "    _matrix-fed._tcp.example.org. 300 IN SRV 0 10 8448 matrix.example.org." in run.logs("dns.records")


async def test_waiting_for_dns_fails_at_the_deadline(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, dns_server: DnsServer) -> None:
    await stage_runner(oci_answers)
    dns_server.set("matrix.example.org", "A", "198.51.100.99")  # points elsewhere
    run = await stage_runner(oci_answers, names=WITH_DNS, dns_server=dns_server.address)
    finished = run.finished("dns.records")
    assert finished.status is Status.FAILED
    assert "DNS records still not visible after 2 s" in finished.error
    assert "matrix.example.org A -> 198.51.100.99" in finished.error and "example.org A -> nothing" in finished.error
    assert "create the records" in finished.hint


async def test_a_dns_server_that_never_answers_is_said_so_not_told_to_add_records(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    """Records cannot be created into a resolver that does not answer: the failure names the
    resolver, not the records."""
    import socket

    await stage_runner(oci_answers)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        run = await stage_runner(oci_answers, names=WITH_DNS, dns_server=silent.getsockname())
    finally:
        silent.close()
    finished = run.finished("dns.records")
    assert finished.status is Status.FAILED
    assert "the DNS server 127.0.0.1 did not answer any query" in finished.error
    assert "still not visible" not in finished.error and "create the records" not in finished.hint
    assert "--dns-server" in finished.hint


class StopsWaiting(Headless):
    """Someone at the screen who stops a wait once DNS has been asked twice."""

    def __init__(self) -> None:
        self.offered: dict[str, tuple[str, asyncio.Event]] = {}
        self.withdrawn: list[str] = []

    def offer_skip(self, stage: str, what: str) -> asyncio.Event:
        self.offered[stage] = (what, asyncio.Event())
        return self.offered[stage][1]

    def withdraw_skip(self, stage: str) -> None:
        self.withdrawn.append(stage)


async def test_the_person_running_it_can_stop_the_wait(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers,
                                                      dns_server: DnsServer) -> None:
    await stage_runner(oci_answers)
    person = StopsWaiting()

    async def press_skip() -> None:
        while dns_server.queries < 2 or "dns.records" not in person.offered:
            await asyncio.sleep(0.01)
        person.offered["dns.records"][1].set()

    presser = asyncio.create_task(press_skip())
    run = await stage_runner(oci_answers, names=WITH_DNS, dns_server=dns_server.address, interaction=person)
    await presser
    finished = run.finished("dns.records")
    assert finished.status is Status.SKIPPED and finished.error is None
    assert person.offered["dns.records"][0] == "waiting for DNS records" and person.withdrawn == ["dns.records"]
    assert any("stopped waiting for DNS at the user's request" in line for line in run.logs("dns.records"))
    assert run.result.ok


async def test_private_address_skips_public_records(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    oci_emulator.state.public_ip_prefix = "10.20.30."
    run = await stage_runner(oci_answers, names=WITH_DNS)
    assert run.status("dns.records") is Status.SKIPPED
    assert any("not a public one" in line for line in run.logs("dns.records"))
    assert oci_emulator.state.count(op="list_zones") == 0


async def test_existing_host_by_ip_with_a_lab_resolver(tmp_path: Path, stage_runner: Runner, dns_server: DnsServer) -> None:
    existing = make_answers(str(tmp_path / "no-oci-config"), tmp_path / "ssh" / "id_ed25519")
    existing = existing.replace("cloud", provider="existing").replace("ssh", host="127.0.0.1", private_key=str(tmp_path / "k"))
    # A key the server already accepts (a new one would stop the run until the server is told of it).
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    dns_server.set("matrix.example.org", "A", "127.0.0.1")
    dns_server.set("example.org", "A", "127.0.0.1")
    run = await stage_runner(existing, names=("dns.records",), dns_server=dns_server.address)
    assert run.status("dns.records") is Status.UNCHANGED, run.all_text()


def runner_state_address(stage_runner: Runner) -> str:
    import json

    return json.loads((stage_runner.state_dir / "example.org" / "state.json").read_text())["facts"]["host.address"]


async def test_a_dry_run_sends_no_dns_query(tmp_path: Path, stage_runner: Runner, dns_server: DnsServer) -> None:
    """An existing server named by host name: a dry run shows the records without looking it up."""
    existing = make_answers(str(tmp_path / "no-oci-config"), tmp_path / "ssh" / "id_ed25519")
    existing = existing.replace("cloud", provider="existing").replace("ssh", host="box.example.net", private_key=str(tmp_path / "k"))
    run = await stage_runner(existing, names=("dns.records",), dry_run=True, dns_server=dns_server.address)
    assert run.status("dns.records") is Status.PLANNED, run.all_text()
    assert "matrix.example.org. 300 IN A (address of box.example.net)" in run.all_text()
    assert dns_server.queries == 0


async def test_a_private_zone_with_the_same_name_is_not_picked(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    private = emu.add_zone("example.org", scope="PRIVATE")  # a VCN resolver's zone, listed first
    public = emu.add_zone("example.org")
    run = await stage_runner(oci_answers, names=WITH_DNS)
    assert run.result.ok, run.all_text()
    address = run.state.facts["host.address"]
    assert [r["rdata"] for r in emu.rrset(public["id"], "matrix.example.org", "A")] == [address]
    assert emu.rrset(private["id"], "matrix.example.org", "A") == [] and emu.rrset(private["id"], "example.org", "A") == []
    assert "dns.list_zones(name=example.org, type=PRIMARY, scope=GLOBAL)" in run.logs("dns.records", "cloud")
    assert f"OCI DNS zone example.org: matrix.example.org. 300 IN A {address} (created)" in run.logs("dns.records")


async def test_a_private_zone_alone_is_not_used(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers, dns_server: DnsServer) -> None:
    emu = oci_emulator.state
    private = emu.add_zone("example.org", scope="PRIVATE")
    await stage_runner(oci_answers)
    address = runner_state_address(stage_runner)
    dns_server.set("matrix.example.org", "A", address)
    dns_server.set("example.org", "A", address)
    run = await stage_runner(oci_answers, names=WITH_DNS, dns_server=dns_server.address)
    assert run.status("dns.records") is Status.UNCHANGED, run.all_text()
    assert "create these records at your DNS provider:" in run.logs("dns.records")
    assert emu.rrset(private["id"], "matrix.example.org", "A") == []
    assert emu.count(op="update_rr_set") == 0
