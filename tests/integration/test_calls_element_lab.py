"""Element Web and calls on the lab host, behind a 1:1 NAT like Oracle's, with the real command.

The network, built for this module (one lab host; two plain containers; two Docker networks):

    caller 203.0.113.N+3 --- "internet" 203.0.113.N/28 --- router ===NAT=== private network --- lab host
    (turnutils_uclient,       (the runner reaches it        P = 203.0.113.N+10        (its address
     turnutils_peer)           on this bridge too)          is no interface's: 1:1 DNAT/SNAT to the lab host)

The lab host's public address P is on none of its interfaces, as on an Oracle VM: the router
(a container with iptables) maps P to the lab host's private address, both ways, and the lab
host routes the "internet" through it. The installer is given P as an existing server's address
(`ssh.host`), and SSH, HTTPS and TURN all go through the NAT. The "internet" is TEST-NET-3, a
documentation range: nothing real lives there, so no answer can come from outside the lab.

What this shows: the installer finds the NAT by itself (P on no interface, the private address
from the route to P), coturn hands out relay addresses at P, a caller outside reaches them and
exchanges data through the relay with a peer outside (turnutils_peer), using the credentials a
logged-in user gets from /_matrix/client/v3/voip/turnServer (matrix-nio); relays to the lab host's
own private address, loopback, link-local and private ranges are refused; the host firewall has
the UDP rules above Oracle's REJECT (the caller's UDP 3478 and TCP 5349 go through it).

What it cannot show: Oracle's own NAT and security list (the OCI emulator's list is checked in
test_calls_oci.py, the dry run's in tests/unit/test_calls.py), a Let's Encrypt certificate (Caddy's
local CA instead), a symmetric-NAT caller, and Element's real release (a stand-in in the published
format: tests/fixtures/element_release.py says what differs; the real archive is unreachable here).

Time: about 2.5 minutes on the 2-core runner (measured 132-148 s alone): the lab host with Docker
and the stand-in images ~60-80 s, the caller's coturn from Debian ~15 s, the first install ~20-30 s,
the upgrade run ~10-15 s, the TURN clients ~15 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.fixtures.element_release import Releases, ReleaseServer
from tests.lab import lab as _lab
from tests.lab.scenarios import NOT_APPLICABLE_ON_THE_LAB, Command, existing_server_answers, ready_host

pytestmark = pytest.mark.lab

SERVER_NAME = "example.test"
MATRIX_HOST = f"matrix.{SERVER_NAME}"
ELEMENT_HOST = f"element.{SERVER_NAME}"
PASSWORD = "calls-lab-admin-password"
FIRST, NEWER = "v1.11.900", "v1.11.901"
USERS = ("alice", "bob")


def docker(*args: str, check: bool = True, timeout: float = 300) -> str:
    return _lab.docker(*args, check=check, timeout=timeout).stdout.strip()


def sh(container: str, script: str, *, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", "exec", container, "sh", "-c", script], capture_output=True, text=True, timeout=timeout)
    assert not check or done.returncode == 0, f"{script}\n{done.stdout}{done.stderr}"
    return done


@dataclass
class Lab:
    host: _lab.LabHost
    router: str
    caller: str
    public: str
    caller_address: str
    private: str
    releases: Releases
    server: ReleaseServer
    command: Command
    tmp: Path
    runs: dict[str, tuple[subprocess.CompletedProcess[str], dict]] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.tmp / "caddy-root.crt"

    def run(self, name: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        started = time.monotonic()
        done, report = self.command.run(self.tmp / f"{name}.json", *extra)
        print(f"{name}: {time.monotonic() - started:.0f} s, exit {done.returncode}")
        self.runs[name] = (done, report)
        return done, report


def _network(labels: list[str], subnet: str) -> str | None:
    """A network without Docker's masquerading: the runner would rewrite the addresses of packets
    crossing its bridges (Docker masquerades a network's addresses leaving by another bridge), and
    only the router may translate here."""
    name = f"matrix-installer-lab-{os.getpid()}-{os.urandom(3).hex()}"
    args = ["network", "create", *labels, "-o", "com.docker.network.bridge.enable_ip_masquerade=false",
            "--subnet", subnet, name]
    return name if _lab.docker(*args, check=False).returncode == 0 else None


def _address_on(container: str, network: str) -> str:
    return docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', container)


def _dnsmasq(address: str) -> tuple[subprocess.Popen, int]:
    """Every name under example.test is the public address P."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                             f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=",
                             f"--local=/{SERVER_NAME}/", f"--address=/{SERVER_NAME}/{address}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc, port


@pytest.fixture(scope="module")
def lab(lab_host_image, lab_session_key, synapse_image, postgres_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calls-lab")
    labels = ["--label", f"{_lab.LABEL}.pid={os.getpid()}"]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        # Removed last (the containers on them first): the "internet", a /28 of TEST-NET-3 no
        # other session holds, and the private network behind the NAT.
        internet, base = None, 0
        for base in range(0, 256, 16):
            if internet := _network(labels, f"203.0.113.{base}/28"):
                break
        assert internet, "no free /28 in 203.0.113.0/24 for the lab's internet"
        stack.callback(_lab.docker, "network", "rm", internet, check=False)
        # The private network in 10/8, like a VCN: Docker inside the lab host takes 172.x for its own.
        private_net = None
        for attempt in range(20):
            if private_net := _network(labels, f"10.{200 + attempt}.{os.getpid() % 256}.0/24"):
                break
        assert private_net, "no free /24 in 10.200-219.x for the lab's private network"
        stack.callback(_lab.docker, "network", "rm", private_net, check=False)
        public, router_out, caller_address = (f"203.0.113.{base + n}" for n in (10, 2, 3))

        # The router: the lab host's image without systemd, iptables doing the 1:1 NAT.
        router = docker("run", "-d", *labels, "--cap-add", "NET_ADMIN", "--sysctl", "net.ipv4.ip_forward=1",
                        "--network", private_net, lab_host_image, "sleep", "infinity")
        stack.callback(_lab.docker, "rm", "-f", router, check=False)
        docker("network", "connect", "--ip", router_out, internet, router)
        router_in = _address_on(router, private_net)
        # The caller: a plain container with coturn's client and peer (installed from Debian while
        # it is on Docker's default network), then on the lab's internet alone.
        caller = docker("run", "-d", *labels, lab_host_image, "sleep", "infinity")
        stack.callback(_lab.docker, "rm", "-f", caller, check=False)
        sh(caller, "export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null && "
                   "apt-get install -y -q --no-install-recommends coturn >/dev/null", timeout=600)
        docker("network", "connect", "--ip", caller_address, internet, caller)
        docker("network", "disconnect", "bridge", caller)

        host = stack.enter_context(ready_host(lab_host_image, lab_session_key, synapse_image, postgres_image=postgres_image))
        docker("network", "connect", private_net, host.container)
        private = _address_on(host.container, private_net)
        sh(router, f"""set -e
            out=$(ip -o -4 addr show | awk '$4 ~ /^{router_out}\\// {{print $2}}')
            ip addr add {public}/32 dev "$out"
            iptables -t nat -A PREROUTING -d {public} -j DNAT --to-destination {private}
            iptables -t nat -A POSTROUTING -s {private} -o "$out" -j SNAT --to-source {public}""")
        host.exec(f"ip route add {internet_subnet(internet)} via {router_in}", check=True)

        # Element Web's stand-in releases, on the runner where the lab host reaches it (the
        # default bridge's gateway), and names resolving to the public address.
        gateway = docker("network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}")
        releases = Releases.make(tmp / "gnupg")
        releases.add(FIRST)
        server = ReleaseServer(releases, gateway)
        stack.callback(server.close)
        dns, dns_port = _dnsmasq(public)
        stack.callback(lambda: (dns.terminate(), dns.wait(10)))

        answers = tmp / "answers.toml"
        answers.write_text(existing_server_answers(
            host, server_name=SERVER_NAME, matrix_host=MATRIX_HOST, address=public, web_client_and_calls=True,
            registration='admin_password_env = "MI_CALLS_ADMIN_PASSWORD"'))
        command = Command(answers, tmp / "state", dns_port, (), {**server.env(), "MI_CALLS_ADMIN_PASSWORD": PASSWORD})
        print(f"calls lab ready in {time.monotonic() - started:.0f} s")
        yield Lab(host, router, caller, public, caller_address, private, releases, server, command, tmp)


def internet_subnet(network: str) -> str:
    return docker("network", "inspect", network, "-f", "{{(index .IPAM.Config 0).Subnet}}")


@pytest.fixture(scope="module")
def installed(lab: Lab) -> Lab:
    """A fresh install through the NAT, then (trusting Caddy's local CA, as a user passes their
    own) the run that finds everything in place and passes every check."""
    first, report = lab.run("first")
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    # Without the lab's CA only the checks over HTTPS from here fail, and they say why.
    assert {n for n, s in statuses.items() if s == "failed"} <= {"element.check", "federation.check"}, first.stdout[-6000:]
    for name in ("element.files", "turn.secret", "turn.server", "turn.check", "synapse.config", "host.firewall"):
        assert statuses[name] == "done", (name, first.stdout[-6000:])
    lab.ca.write_bytes(lab.host.caddy_root_ca())
    second, report = lab.run("second", "--ca-file", str(lab.ca))
    assert second.returncode == 0, second.stdout[-6000:]
    # Users of its own for each test's TURN client: coturn's quota of allocations is per user
    # (12), and allocations linger for 10 minutes after a test client exits.
    for user in USERS:
        sh(lab.host.container, f"docker exec synapse register_new_matrix_user -u {user} -p {PASSWORD} --no-admin "
                               "-c /data/homeserver.yaml http://localhost:8008")
    return lab


def get(lab: Lab, host: str, path: str) -> httpx.Response:
    """A browser's request from outside: to the public address, through the NAT."""
    with httpx.Client(verify=ssl.create_default_context(cafile=str(lab.ca)), timeout=20) as client:
        return client.get(f"https://{lab.public}{path}", headers={"Host": host}, extensions={"sni_hostname": host})


def test_a_fresh_install_serves_element_web_with_our_config_and_its_headers(installed: Lab) -> None:
    page = get(installed, ELEMENT_HOST, "/")
    assert page.status_code == 200 and f"stand-in Element Web {FIRST}" in page.text
    for name, value in (("X-Frame-Options", "SAMEORIGIN"), ("X-Content-Type-Options", "nosniff"),
                        ("Content-Security-Policy", "frame-ancestors 'self'")):
        assert page.headers.get(name) == value, (name, dict(page.headers))
    config = get(installed, ELEMENT_HOST, "/config.json")
    assert config.headers.get("Cache-Control") == "no-cache"
    assert config.json()["default_server_config"]["m.homeserver"] == {"base_url": f"https://{MATRIX_HOST}",
                                                                      "server_name": SERVER_NAME}
    assert config.json()["room_directory"] == {"servers": [SERVER_NAME]} and config.json()["disable_custom_urls"] is False
    # The report has the checks and the URL to open; the output says it too.
    done, report = installed.runs["second"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["element"]["ok"] is True and checks["turn"]["ok"] is True, report["checks"]
    assert {"label": "Element Web", "url": f"https://{ELEMENT_HOST}"} in report["links"]
    assert f"Open Element Web: https://{ELEMENT_HOST}" in done.stdout
    # The release was checked against the (stand-in) key before it was unpacked.
    first = installed.runs["first"][0].stdout
    assert f"Element Web {FIRST}: good signature by {installed.releases.fingerprint}" in first


def turn_credentials(lab: Lab, user: str) -> dict:
    """What a logged-in user's client gets: matrix-nio, GET /_matrix/client/v3/voip/turnServer."""
    import asyncio

    from tests.lab.matrix_client import client, login

    async def ask() -> dict:
        made = client(MATRIX_HOST, lab.host.https_port, lab.ca, f"@{user}:{SERVER_NAME}")
        try:
            await login(made, PASSWORD)
            answer = await made.send("GET", "/_matrix/client/v3/voip/turnServer",
                                     headers={"Authorization": f"Bearer {made.access_token}"})
            assert answer.status == 200, await answer.text()
            return await answer.json()
        finally:
            await made.logout()
            await made.close()

    return asyncio.run(ask())


def uclient(lab: Lab, creds: dict, peer: str, *flags: str, messages: int = 5) -> str:
    said = sh(lab.caller, f"timeout 60 turnutils_uclient -v -c -n {messages} -m 1 -u '{creds['username']}' "
                          f"-w '{creds['password']}' -e {peer} -r 3480 {' '.join(flags)} {lab.public} 2>&1", check=False)
    return said.stdout


def test_turnutils_allocates_and_relays_with_credentials_from_voip_turnserver(installed: Lab) -> None:
    creds = turn_credentials(installed, "alice")
    assert set(creds["uris"]) == {f"turn:{MATRIX_HOST}:3478?transport=udp", f"turn:{MATRIX_HOST}:3478?transport=tcp",
                                  f"turns:{MATRIX_HOST}:5349?transport=tcp"}
    assert creds["ttl"] == 3600 and creds["username"].endswith(f":@alice:{SERVER_NAME}")
    sh(installed.caller, f"pkill turnutils_peer; (turnutils_peer -L {installed.caller_address} -p 3480 >/tmp/peer.log 2>&1 &)",
       check=False)
    time.sleep(0.5)
    for transport, flags in (("UDP", ()), ("TCP", ("-t",)), ("TLS on 5349", ("-t", "-S", "-p", "5349"))):
        said = uclient(installed, creds, installed.caller_address, *flags, messages=10)
        # The relay is at the public address (coturn knows the NAT), and the peer's echoes came back.
        assert f"Received relay addr: {installed.public}:" in said, (transport, said[-3000:])
        assert "tot_recv_msgs=10" in said and "Total lost packets 0 (0.000000%)" in said, (transport, said[-3000:])
    # Wrong credentials are refused: no anonymous or guessed use.
    wrong = uclient(installed, {**creds, "password": "not-the-password"}, installed.caller_address, messages=1)
    assert "Cannot complete Allocation" in wrong and "Received relay addr" not in wrong


def test_relays_to_private_loopback_and_metadata_peers_are_refused(installed: Lab) -> None:
    creds = turn_credentials(installed, "bob")
    # The lab host's own private address first: coturn's external-ip=PUBLIC/PRIVATE form would
    # let this one through (it whitelists the private part); the installer's mapping does not.
    sh(installed.host.container, f"(timeout 60 turnutils_peer -L {installed.private} -p 3480 >/dev/null 2>&1 &)", check=False)
    for peer in (installed.private, "127.0.0.1", "169.254.169.254", "192.168.1.1"):
        said = uclient(installed, creds, peer, messages=1)
        assert "403 (Forbidden IP)" in said and "tot_recv_msgs=1" not in said, (peer, said[-2000:])
    # The installer found the NAT by itself: the public address on no interface, the private one
    # from the route to it.
    first = installed.runs["first"][0].stdout
    assert f"behind NAT: public {installed.public} maps to this host's {installed.private}" in first
    config = installed.host.exec("cat /etc/turnserver.conf", check=True).stdout
    assert f"relay-ip={installed.private}" in config and f"external-ip={installed.public}" in config
    assert f"external-ip={installed.public}/" not in config


def test_the_host_firewall_has_the_udp_rules_above_the_reject(installed: Lab) -> None:
    rules = [line for line in installed.host.exec("iptables -S INPUT", check=True).stdout.splitlines()
             if line.startswith("-A INPUT")]
    reject = next(i for i, line in enumerate(rules) if "-j REJECT" in line)
    for port in ("-p udp -m state --state NEW -m udp --dport 3478 -j ACCEPT",
                 "-p udp -m state --state NEW -m udp --dport 49152:49200 -j ACCEPT",
                 "-p tcp -m state --state NEW -m tcp --dport 3478 -j ACCEPT",
                 "-p tcp -m state --state NEW -m tcp --dport 5349 -j ACCEPT"):
        assert rules.index(f"-A INPUT {port}") < reject, (port, rules)
    saved = installed.host.exec("cat /etc/iptables/rules.v4", check=True).stdout
    assert saved.index("--dport 49152:49200 -j ACCEPT") < saved.index("-A INPUT -j REJECT")


def test_no_turn_secret_in_logs_reports_state_or_output(installed: Lab) -> None:
    secret = installed.host.exec("cat /opt/matrix/synapse/turn.secret", check=True).stdout.strip()
    assert len(secret) >= 48
    # It is where it must be, and only readable by who needs it.
    files = installed.host.exec("stat -c '%n %U:%G %a' /opt/matrix/synapse/turn.secret /etc/turnserver.conf; "
                                "stat -c '%n %u:%g %a' /opt/matrix/synapse/data/homeserver.yaml", check=True).stdout.splitlines()
    assert files == ["/opt/matrix/synapse/turn.secret root:root 600", "/etc/turnserver.conf root:turnserver 640",
                     "/opt/matrix/synapse/data/homeserver.yaml 991:991 600"]
    assert f"static-auth-secret={secret}" in installed.host.exec("cat /etc/turnserver.conf", check=True).stdout
    assert f"turn_shared_secret: {secret}" in installed.host.exec("cat /opt/matrix/synapse/data/homeserver.yaml", check=True).stdout
    state = installed.tmp / "state" / SERVER_NAME
    texts = [(state / "state.json").read_text(), (state / "last-run.log").read_text()]
    for done, report in installed.runs.values():
        texts += [done.stdout, done.stderr, json.dumps(report)]
    assert all(secret not in text for text in texts)


def test_a_rerun_is_all_unchanged(installed: Lab) -> None:
    done, report = installed.run("third", "--ca-file", str(installed.ca))
    assert done.returncode == 0, done.stdout[-4000:]
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    # What does not apply to the lab host is skipped again, as on the first run, not redone.
    assert {name: statuses.pop(name) for name in NOT_APPLICABLE_ON_THE_LAB} == dict.fromkeys(NOT_APPLICABLE_ON_THE_LAB, "skipped")
    assert set(statuses.values()) == {"unchanged"}, {k: v for k, v in statuses.items() if v != "unchanged"}


def test_an_upgrade_finds_a_newer_element_web_and_keeps_the_previous(installed: Lab) -> None:
    installed.releases.add(NEWER)
    done, report = installed.run("upgrade", "--ca-file", str(installed.ca), "--upgrade")
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert done.returncode == 0, done.stdout[-6000:]
    assert statuses["element.upgrade"] == "done" and statuses["element.check"] in ("done", "unchanged"), statuses
    assert f"Element Web {FIRST} -> {NEWER}" in done.stdout
    listed = installed.host.exec("ls -1 /opt/matrix/element; readlink /opt/matrix/element/current", check=True).stdout.split()
    assert f"element-{FIRST}" in listed and f"element-{NEWER}" in listed and listed[-1] == f"element-{NEWER}"
    assert f"stand-in Element Web {NEWER}" in get(installed, ELEMENT_HOST, "/").text
    assert get(installed, ELEMENT_HOST, "/version").text.strip() == NEWER.removeprefix("v")
