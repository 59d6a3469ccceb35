"""Federation for real: two homeservers in the lab, each installed by the real command on its own
lab host, talking to each other over a runner network (tests/lab/two_servers.py says exactly what
the lab adds to the deployments: DNS names, and trust in one lab CA).

- other.test is installed first (its outbound check to example.test fails then: nothing is there
  yet, and the check says so); example.test, the server under test, is installed with
  `--peer other.test` on the older stand-in Synapse, and its install ends with the outbound check
  passing.
- Real clients (matrix-nio) then play the issue's scenario: a room made on example.test, a user of
  other.test invited and joining over federation, messages both ways (their delivery time
  measured), and a room made on other.test joined from example.test.
- `--check example.test --peer other.test` passes, and fails naming the cause when the lab host
  blocks our container's egress (DOCKER-USER; an OUTPUT rule does not block it, and the test shows
  that too).
- A dead AAAA record fails the check on exactly that address.
- The self-test timer's script, with Caddy stopped, posts its failure to the admin's "Server
  notices" room, read back by a real client; --check shows that last result.
- An upgrade to the newer stand-in Synapse, and the scenario again.

Two lab hosts for the whole module; each step prints how long it took.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab import lab as _lab
from tests.lab.scenarios import ROOT, Command, existing_server_answers, https_mappings, ready_host
from tests.lab.two_servers import LabCA, LabNetwork, dnsmasq, parallel

pytestmark = pytest.mark.lab

OURS, OURS_HOST = "example.test", "matrix.example.test"
OTHER, OTHER_HOST = "other.test", "matrix.other.test"
OLD_VERSION = "1.163.1"
PASSWORD = "lab-admin-password-1"  # both admins (the environment variable below)
USER_PASSWORD = "lab-user-password-1"
ALICE, BOB = f"@alice:{OURS}", f"@bob:{OTHER}"
ADMIN = f"@admin:{OURS}"
MESSAGES = 5
LATENCY_BOUND = 10.0


def timed(label: str, started: float) -> None:
    print(f"[two servers] {label}: {time.monotonic() - started:.1f} s", flush=True)


@dataclass
class Pair:
    ours: _lab.LabHost
    other: _lab.LabHost
    network: LabNetwork
    ca: LabCA
    ca_file: Path
    dns_port: int
    work: Path
    ours_command: Command
    other_command: Command
    install: tuple[subprocess.CompletedProcess[str], dict]
    other_install: tuple[subprocess.CompletedProcess[str], dict]
    latency: dict[str, dict[str, float]] = field(default_factory=dict)

    def check(self, report: Path, *extra: str, dns_port: int | None = None, connect_to: tuple[str, ...] | None = None
              ) -> tuple[subprocess.CompletedProcess[str], dict]:
        """`matrix-installer --check example.test` from this machine (which installed it: the state is here)."""
        args = [sys.executable, "-m", "installer", "--check", OURS, "--state-dir", str(self.ours_command.state_dir),
                "--report", str(report), "--dns-server", f"127.0.0.1:{dns_port or self.dns_port}",
                "--ca-file", str(self.ca_file), *extra]
        for mapping in connect_to if connect_to is not None else self.ours_command.connect_to:
            args += ["--connect-to", mapping]
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT, stdin=subprocess.DEVNULL)
        print(done.stdout[-6000:], done.stderr[-2000:])
        assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
        return done, json.loads(report.read_text())


def checks(report: dict) -> dict[str, dict]:
    """The federation test's checks (the report's "federation")."""
    return {c["name"]: c for c in report["federation"]["checks"]}


def deployment_checks(report: dict) -> dict[str, dict]:
    """The checks beside the federation test (the report's "checks": server-health, backup-age...)."""
    return {c["name"]: c for c in report["checks"]}


def add_user(host: _lab.LabHost, name: str) -> None:
    host.exec(["docker", "exec", "synapse", "register_new_matrix_user", "-u", name, "-p", USER_PASSWORD, "--no-admin",
               "-c", "/data/homeserver.yaml", "http://localhost:8008"], check=True)


@pytest.fixture(scope="module")
def pair(lab_host_image, lab_session_key, synapse_image, postgres_image, tmp_path_factory):
    work = tmp_path_factory.mktemp("two-servers")
    old_image = _lab.build_synapse_image(version=OLD_VERSION)
    ca = LabCA()
    ca_file = work / "lab-ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    dns, dns_port = dnsmasq(OURS, OTHER)
    with ExitStack() as stack:
        stack.callback(lambda: (dns.terminate(), dns.wait(10)))
        started = time.monotonic()
        network = stack.enter_context(LabNetwork.create())
        ours, other = parallel(
            lambda: stack.enter_context(ready_host(lab_host_image, lab_session_key, old_image, postgres_image=postgres_image,
                                                   network=network.name, aliases=(OURS, OURS_HOST))),
            lambda: stack.enter_context(ready_host(lab_host_image, lab_session_key, synapse_image,
                                                   postgres_image=postgres_image, network=network.name,
                                                   aliases=(OTHER, OTHER_HOST))))
        for host, image in ((ours, old_image), (other, synapse_image)):
            ca.seed_caddy(host)
            ca.trust_on_host(host)
            ca.trusting_image(host, image)
        timed("two lab hosts ready (Docker, stand-in images, the lab CA)", started)

        env = {"MI_FED_ADMIN_PASSWORD": PASSWORD}
        registration = 'admin_password_env = "MI_FED_ADMIN_PASSWORD"'
        commands = {}
        # other.test is installed first with no outbound check: asked to reach example.test before it
        # exists, its Synapse would remember for a while that example.test has no .well-known (and
        # then refuse our requests: it could not fetch our keys), as a real server would.
        for host, name, matrix_host, peer in ((ours, OURS, OURS_HOST, OTHER), (other, OTHER, OTHER_HOST, "none")):
            answers = work / f"{name}.toml"
            answers.write_text(existing_server_answers(host, server_name=name, matrix_host=matrix_host,
                                                       registration=registration))
            commands[name] = Command(answers, work / f"state-{name}", dns_port,
                                     https_mappings(host, name, matrix_host), env, peer=peer)

        started = time.monotonic()
        other_install = commands[OTHER].run(work / "other-install.json", "--ca-file", str(ca_file))
        timed("other.test installed (the real command)", started)
        started = time.monotonic()
        install = commands[OURS].run(work / "install.json", "--ca-file", str(ca_file))
        timed("example.test installed with --peer other.test", started)
        for host, name in ((ours, "alice"), (other, "bob")):
            add_user(host, name)
        yield Pair(ours, other, network, ca, ca_file, dns_port, work, commands[OURS], commands[OTHER], install, other_install)


# --- the scenario, with real clients --------------------------------------------------------------

async def _wait(client, done, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.user_id}: {what} did not happen within {timeout:g} s")
        await client.sync(timeout=3000)


async def _deliver(sender, receiver, room: str, body: str) -> float:
    """Seconds from sending `body` to seeing it in the receiver's sync (long-polling)."""
    import nio

    started = time.monotonic()
    sent = await sender.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body})
    assert isinstance(sent, nio.RoomSendResponse), sent
    while time.monotonic() - started < 60:
        answer = await receiver.sync(timeout=10000)
        assert isinstance(answer, nio.SyncResponse), answer
        joined = answer.rooms.join.get(room)
        if joined and any(getattr(e, "body", None) == body for e in joined.timeline.events):
            return time.monotonic() - started
    raise AssertionError(f"{body!r} did not reach {receiver.user_id} within 60 s")


async def federate(pair: Pair, tag: str) -> dict[str, float]:
    """The issue's scenario; returns the delivery times."""
    import nio

    from tests.lab.matrix_client import client, login

    alice = client(OURS_HOST, pair.ours.https_port, pair.ca_file, ALICE)
    bob = client(OTHER_HOST, pair.other.https_port, pair.ca_file, BOB)
    try:
        await login(alice, USER_PASSWORD)
        await login(bob, USER_PASSWORD)
        await alice.sync(timeout=0)
        await bob.sync(timeout=0)
        # 1. A user on our server creates a room; 2. a user on other.test is invited and joins over federation.
        made = await alice.room_create(name=f"lab {tag} on {OURS}", invite=[BOB])
        assert isinstance(made, nio.RoomCreateResponse), made
        room = made.room_id  # room version 12: the ID names no server; alice's server made it
        await _wait(bob, lambda: room in bob.invited_rooms, "the invitation over federation")
        joined = await bob.join(room)
        assert isinstance(joined, nio.JoinResponse), joined
        await _wait(alice, lambda: room in alice.rooms and BOB in alice.rooms[room].users, "bob's join")
        # 3. Messages both ways, each timed until the other side's client sees it.
        there = [await _deliver(alice, bob, room, f"{tag}: to other.test {i}") for i in range(MESSAGES)]
        back = [await _deliver(bob, alice, room, f"{tag}: to example.test {i}") for i in range(MESSAGES)]
        # 4. A user on our server joins a room created on other.test.
        made = await bob.room_create(name=f"lab {tag} on {OTHER}", invite=[ALICE])
        assert isinstance(made, nio.RoomCreateResponse), made
        theirs = made.room_id
        await _wait(alice, lambda: theirs in alice.invited_rooms, "the invitation from other.test")
        joined = await alice.join(theirs)
        assert isinstance(joined, nio.JoinResponse), joined
        there.append(await _deliver(alice, bob, theirs, f"{tag}: alice in bob's room"))
        back.append(await _deliver(bob, alice, theirs, f"{tag}: bob to alice in his room"))
    finally:
        await alice.close()
        await bob.close()
    result = {"to other.test median": statistics.median(there), "to other.test max": max(there),
              "to example.test median": statistics.median(back), "to example.test max": max(back)}
    print(f"[two servers] message delivery {tag} (send to the other client's sync, {len(there)} each way): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in result.items()), flush=True)
    assert max(there + back) < LATENCY_BOUND, result
    return result


# --- the tests -----------------------------------------------------------------------------------

def test_a_fresh_install_ends_with_the_outbound_check_and_federates_both_ways(pair):
    other_done, other_report = pair.other_install
    assert other_done.returncode == 0, other_done.stdout[-4000:]
    assert checks(other_report)["outbound"]["warning"]  # --peer none

    done, report = pair.install
    if done.returncode != 0:
        for host in (pair.ours, pair.other):
            print(host.exec("docker logs --tail 80 synapse 2>&1").stdout[-8000:])
    assert done.returncode == 0, done.stdout[-6000:]
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert statuses["selftest.notices"] == "done" and statuses["selftest.timer"] == "done"
    assert statuses["dns.aaaa"] == "skipped"  # the lab host has no public IPv6 address
    found = checks(report)
    assert found["outbound"]["ok"] and not found["outbound"]["warning"], found["outbound"]
    assert found["outbound"]["detail"].startswith("our server asked other.test over federation and got its answer in ")
    assert "asked on the host's loopback" in found["outbound"]["detail"]
    health = deployment_checks(report)["server-health"]
    assert health["ok"] and "no result yet" in health["detail"], health
    assert "server-health" not in found
    assert f"Synapse {OLD_VERSION}" in found["federation-version"]["detail"]

    started = time.monotonic()
    pair.latency["after a fresh install"] = asyncio.run(federate(pair, "fresh install"))
    timed("the two-server scenario (real clients)", started)


def test_check_with_a_peer_passes_and_names_blocked_egress(pair):
    started = time.monotonic()
    done, report = pair.check(pair.work / "check.json", "--peer", OTHER)
    assert done.returncode == 0, done.stdout[-4000:]
    assert checks(report)["outbound"]["ok"]

    other_address = pair.network.address(pair.other)
    rule = f"-d {other_address}/32 -j REJECT"
    # Our Synapse's traffic is forwarded from its container, not sent by the host: an OUTPUT rule
    # does not block it (only the host's own look at other.test would fail).
    pair.ours.exec(f"iptables -I OUTPUT {rule}", check=True)
    try:
        done, report = pair.check(pair.work / "check-output-rule.json", "--peer", OTHER)
    finally:
        pair.ours.exec(f"iptables -D OUTPUT {rule}", check=True)
    assert done.returncode == 0 and checks(report)["outbound"]["ok"], checks(report)["outbound"]

    # DOCKER-USER (the chain Docker keeps for the admin's own rules on forwarded traffic) does.
    pair.ours.exec(f"iptables -I DOCKER-USER {rule}", check=True)
    try:
        done, report = pair.check(pair.work / "check-blocked.json", "--peer", OTHER)
    finally:
        pair.ours.exec(f"iptables -D DOCKER-USER {rule}", check=True)
    assert done.returncode == 1
    outbound = checks(report)["outbound"]
    assert not outbound["ok"]
    assert "egress from the synapse container is blocked" in outbound["detail"], outbound
    assert "while the host itself reaches" in outbound["detail"]
    assert f"-A DOCKER-USER -d {other_address}/32 -j REJECT" in outbound["detail"]
    assert "FORWARD or DOCKER-USER" in outbound["fix"]
    assert [c["name"] for c in report["federation"]["checks"] if not c["ok"]] == ["outbound"]
    assert "federation test failed: outbound (" in done.stdout

    # Unblocked, it passes again.
    done, report = pair.check(pair.work / "check-again.json", "--peer", OTHER)
    assert done.returncode == 0 and checks(report)["outbound"]["ok"]
    timed("--check with --peer, egress blocked and not", started)


def test_a_dead_aaaa_record_fails_on_exactly_that_address(pair):
    """matrix.example.test gets an AAAA record for an address where nothing answers; its A record
    is 127.0.0.1, reached through --connect-to by address (as a VM's public IP would be)."""
    dead = "2001:db8::dead"
    dns, port = dnsmasq(OURS, extra=(f"--address=/{OURS_HOST}/127.0.0.1", f"--address=/{OURS_HOST}/{dead}"))
    try:
        done, report = pair.check(pair.work / "check-aaaa.json", "--peer", "none", dns_port=port,
                                  connect_to=(f"127.0.0.1:443:127.0.0.1:{pair.ours.https_port}",))
    finally:
        dns.terminate()
        dns.wait(10)
    assert done.returncode == 1
    at = f"[{dead}]:443"
    failed = {c["name"] for c in report["federation"]["checks"] if not c["ok"]}
    assert failed == {"tls", f"tls@{at}", f"server-keys@{at}", f"federation-version@{at}"}, failed
    found = checks(report)
    assert found["tls@127.0.0.1:443"]["ok"] and found["server-keys@127.0.0.1:443"]["ok"]
    assert found[f"tls@{at}"]["fix"].startswith(f"the AAAA record of {OURS_HOST} points at {dead}, where nothing answers")
    assert f"{OURS_HOST} -> 127.0.0.1, {dead}" in found["dns"]["detail"]


def test_the_self_test_posts_a_failure_to_the_admins_room(pair):
    from tests.lab.matrix_client import client, login, room_notices

    started = time.monotonic()
    host = pair.ours
    assert host.exec(f"stat -c '%a %U' /opt/matrix/synapse/selftest/bot-token", check=True).stdout.split() == ["600", "root"]
    token = host.exec("cat /opt/matrix/synapse/selftest/bot-token", check=True).stdout.strip()
    for text in (pair.install[0].stdout, pair.install[0].stderr,
                 (pair.ours_command.state_dir / OURS / "last-run.log").read_text(), json.dumps(pair.install[1])):
        assert token not in text
    assert host.exec("systemctl is-active matrix-selftest.timer").stdout.strip() == "active"

    # A healthy run first, as the timer starts it: everything passes, nothing is posted.
    healthy = host.exec("systemctl start matrix-selftest.service")
    print(host.exec("journalctl -u matrix-selftest.service -o cat --no-pager | tail -20").stdout)
    assert healthy.returncode == 0, healthy.stderr
    last = json.loads(host.exec("cat /var/lib/matrix-selftest/last.json", check=True).stdout)
    assert last["ok"] and {"outbound", "server-health", "certificate-expiry"} <= {c["name"] for c in last["checks"]}

    # Broken: Caddy stopped. The run fails and posts its result to the admin's room.
    host.exec("systemctl stop caddy", check=True)
    try:
        broken = host.exec("systemctl start matrix-selftest.service")
    finally:
        host.exec("systemctl start caddy", check=True)
    print(host.exec("journalctl -u matrix-selftest.service -o cat --no-pager | tail -20").stdout)
    assert broken.returncode != 0
    history = host.exec("cat /var/lib/matrix-selftest/history.jsonl", check=True).stdout.splitlines()
    assert [json.loads(line)["ok"] for line in history] == [True, False]

    async def read_notices() -> tuple[str, list[str]]:
        admin = client(OURS_HOST, host.https_port, pair.ca_file, ADMIN)
        try:
            await login(admin, PASSWORD)
            return await room_notices(admin, "Server notices")
        finally:
            await admin.close()

    for _ in range(30):  # Caddy is starting again
        if host.exec(f"curl -fsS -o /dev/null --resolve {OURS_HOST}:443:127.0.0.1 https://{OURS_HOST}/_matrix/client/versions").returncode == 0:
            break
        time.sleep(1)
    room_id, notices = asyncio.run(read_notices())
    assert len(notices) == 1, notices
    print(f"[two servers] the notice in {room_id}:\n{notices[0]}")
    assert notices[0].startswith(f"Self-test of {OURS} FAILED at ")
    assert "✗ well-known" in notices[0] and "✗ tls@" in notices[0] and "fix: " in notices[0]

    # --check shows that last result, and when it ran.
    done, report = pair.check(pair.work / "check-health.json", "--peer", OTHER)
    health = deployment_checks(report)["server-health"]
    assert health["ok"] and health.get("warning") and "FAILED" in health["detail"] and "min ago" in health["detail"], health
    assert done.returncode == 0, done.stdout[-3000:]
    timed("the self-test: healthy, broken, the notice read", started)


def test_after_an_upgrade_the_two_servers_still_federate(pair):
    started = time.monotonic()
    # The newer stand-in arrives under the deployment's tag (no registry here: see test_upgrade_lab).
    pair.ca.trusting_image(pair.ours, _lab.build_synapse_image())
    done, report = pair.ours_command.run(pair.work / "upgrade.json", "--upgrade", "--ca-file", str(pair.ca_file))
    timed("the upgrade (--upgrade --peer other.test)", started)
    assert done.returncode == 0, done.stdout[-6000:]
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert statuses["upgrade.images"] == "done" and statuses["selftest.timer"] in ("done", "unchanged")
    found = checks(report)
    assert found["outbound"]["ok"], found["outbound"]
    assert f"Synapse {_lab.SYNAPSE_VERSION}" in found["federation-version"]["detail"]

    started = time.monotonic()
    pair.latency["after an upgrade"] = asyncio.run(federate(pair, "after upgrade"))
    timed("the two-server scenario after the upgrade", started)
    print("[two servers] latency: " + json.dumps(pair.latency, indent=1))
