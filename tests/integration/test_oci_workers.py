"""Worker hosts on Oracle Cloud, against the OCI emulator through the real SDK and the real Engine:
`hosts = ["new"]` makes a second instance in the main host's subnet (never a second one on a
rerun), and the security list lets the two hosts reach each other's private ports from their
private addresses alone, every rule already there kept. (SSH to them is the lab's part.)"""

from __future__ import annotations

import ipaddress

from installer.components.workers import LAYOUT, VMS
from installer.components.workers import layout as L
from installer.engine import Engine, RunOptions, Session, Stage
from installer.events import StageLog, Status
from installer.interaction import Headless
from installer.state import RunState
from tests.oci_emulator.fixtures import EmulatorHandle
from tests.oci_emulator.harness import CLOUD_STAGES, FAST, Runner

WORKERS = CLOUD_STAGES + ("workers.vms",)


def with_workers(answers):
    return answers.replace("workers", preset="auto", hosts=("new",))


async def test_a_new_worker_host_is_an_instance_in_the_main_hosts_subnet(oci_emulator: EmulatorHandle, stage_runner: Runner,
                                                                        oci_answers) -> None:
    answers = with_workers(oci_answers.replace("cloud", ocpus=2, memory_gb=12))
    run = await stage_runner(answers, names=WORKERS)
    assert run.result.ok, run.all_text()
    assert run.status("workers.vms") is Status.DONE
    emu = oci_emulator.state
    main, worker = sorted(emu.instances(), key=lambda i: i["timeCreated"])
    assert worker["displayName"] == "matrix-worker1" and worker["shape"] == main["shape"]
    assert worker["availabilityDomain"] == main["availabilityDomain"]  # beside the main host first
    vnics = {v["id"]: v for v in emu.store["vnics"].values()}
    subnets = {v["subnetId"] for v in vnics.values()}
    assert subnets == {run.state.facts["cloud.subnet_id"]}
    (vm,) = run.state.facts[VMS]
    assert vm["id"] == worker["id"] and ipaddress.ip_address(vm["private_ip"]).is_private
    assert vm["host_key"].startswith("ssh-ed25519 ")
    # The host key went through cloud-init (the pinned one), its private half never into the log.
    import json

    user_data = emu.user_data[worker["id"]]
    line = next(l for l in user_data.splitlines() if l.strip().startswith("ed25519_private:"))
    private_key = json.loads(line.split(":", 1)[1])
    assert json.loads(next(l for l in user_data.splitlines() if "ed25519_public:" in l).split(":", 1)[1]).split()[:2] \
        == vm["host_key"].split()[:2]
    body = private_key.splitlines()[1]
    assert body and body not in run.all_text()

    again = await stage_runner(answers, names=WORKERS)
    assert again.status("workers.vms") is Status.UNCHANGED
    assert len(emu.instances()) == 2 and emu.count("POST", "launch_instance") == 2


async def run_ingress(answers, state: RunState, layout: L.Layout) -> tuple[Status, list[str]]:
    """workers.ingress alone, on the state the cloud stages left, with the layout workers.plan gives."""
    from installer.cloud import Timing
    from installer.components.workers.oci import open_private_ingress

    state.remember(LAYOUT, layout.to_fact())
    events: list = []
    session = Session(answers=answers, state=state, options=RunOptions(), listeners=[events.append], interaction=Headless(),
                      resources={Timing: FAST})
    result = await Engine([Stage("workers.ingress", "ingress", open_private_ingress)], session).run()
    return result.stages[0].status, [e.line for e in events if isinstance(e, StageLog)] + [str(result.stages[0].error)]


async def test_the_security_list_admits_each_host_from_the_other_only(oci_emulator: EmulatorHandle, stage_runner: Runner,
                                                                     oci_answers) -> None:
    answers = with_workers(oci_answers)
    run = await stage_runner(answers, names=WORKERS)
    assert run.result.ok, run.all_text()
    emu = oci_emulator.state
    main_ip = next(v["privateIp"] for v in emu.store["vnics"].values() if v["publicIp"] == run.state.facts["host.address"])
    (vm,) = run.state.facts[VMS]
    layout = L.resolve(L.auto_counts(2, 12288), [(L.WorkerHost(vm["private_ip"], vm["host_key"], 2, 12288), {"generic": 2})],
                       main_private=main_ip, cores=2, memory_mib=12288)
    state = RunState.load(stage_runner.state_dir, "example.org")
    status, lines = await run_ingress(answers, state, layout)
    assert status is Status.DONE, lines
    rules = emu.security_list(run.state.facts["cloud.security_list_id"])["ingressSecurityRules"]
    private = {(r["source"], r["tcpOptions"]["destinationPortRange"]["min"]) for r in rules
               if r["source"] != "0.0.0.0/0" and r.get("tcpOptions")}
    assert private == {(f"{vm['private_ip']}/32", p) for p in (5432, 6379, 9093)} | \
        {(f"{main_ip}/32", p) for p in (8101, 8102)}
    # What cloud.ingress opened to everyone is still there, and not widened.
    public = sorted(r["tcpOptions"]["destinationPortRange"]["min"] for r in rules if r["source"] == "0.0.0.0/0" and r.get("tcpOptions"))
    assert 5432 not in public and 6379 not in public and 443 in public

    again, lines = await run_ingress(answers, RunState.load(stage_runner.state_dir, "example.org"), layout)
    assert again is Status.UNCHANGED, lines
    assert emu.security_list(run.state.facts["cloud.security_list_id"])["ingressSecurityRules"] == rules


async def test_a_dry_run_plans_the_worker_instance(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    run = await stage_runner(with_workers(oci_answers), names=WORKERS, dry_run=True)
    assert run.result.ok, run.all_text()
    calls = run.logs("workers.vms", "cloud")
    assert any("launch_instance" in c or "compute.launch" in c for c in calls), calls
    assert oci_emulator.state.count("POST", "launch_instance") == 0
