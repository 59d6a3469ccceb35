"""The calls component as the rest of the installer sees it: its answers, its ports (UDP among
them, for both firewalls), coturn's configuration (NAT, denied peers, no anonymous use), the
homeserver's TURN settings with the shared secret read from the host, and a dry run that shows
all of it but the secret."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from installer.answers import Answers, AnswersError, parse_answers
from installer.components.base import Port
from installer.components.calls import SECRET_FILE, coturn, turn_uris
from installer.components.calls.stages import ensure_secret
from installer.components.firewall import stages as firewall
from installer.components.homeserver import TurnSettings
from installer.components.synapse.config import edit_homeserver_config, read_setting
from installer.components.synapse.stages import configure
from installer.deployment import Deployment
from installer.engine import Session, Stage, StageContext, StageError
from installer.events import StageLog, Status
from installer.options import RunOptions
from installer.providers.oci import ORACLE_IMAGE_RULES
from installer.remote import CommandResult
from installer.state import RunState
from tests.fixtures.cli import EXAMPLE, run
from tests.unit.test_host_stages import ORACLE, SAVED_ORACLE, ScriptedRemote

NAMES = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
SECRET = "k" * 20 + "SECRET-value_0123456789abcdef"


def answers_text(calls: str = "") -> str:
    return f"""version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
[cloud]
provider = "existing"
[ssh]
host = "203.0.113.7"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"
{calls}
"""


def test_turn_is_on_by_default_and_its_relay_range_is_checked() -> None:
    a = parse_answers(answers_text())
    assert a.calls.turn is True and a.calls.relay_ports == "49152-49200"
    for wrong, said in (("49200-49152", "must be a range"), ("80-90", "must be a range"), ("3000-4000", "TURN's own ports"),
                        ("40000-60000", "10,000 at most"), ("1-2; reboot", "must be a range")):
        with pytest.raises(AnswersError, match=re.escape(said)):
            parse_answers(answers_text(f'[calls]\nrelay_ports = "{wrong}"'))


def test_both_firewalls_learn_udp_from_the_ports_turn_declares() -> None:
    d = Deployment.build(NAMES.replace("calls", relay_ports="50000-50099"))
    assert [str(p) for p in d.ports] == ["80/tcp", "443/tcp", "3478/udp", "3478/tcp", "5349/tcp", "50000-50099/udp"]
    assert Deployment.build(NAMES.replace("calls", turn=False)).ports == [Port(80), Port(443)]
    # iptables: a UDP range is accepted as a range, above the REJECT, and saved for the next boot.
    assert firewall.accept_rule(Port((50000, 50099), "udp")) == "-p udp -m state --state NEW -m udp --dport 50000:50099 -j ACCEPT"
    saved = firewall.with_saved_ports(SAVED_ORACLE, d.ports)
    lines = saved.splitlines()
    reject = next(i for i, line in enumerate(lines) if line.startswith("-A INPUT -j REJECT"))
    udp = [i for i, line in enumerate(lines) if "-p udp" in line and "ACCEPT" in line and "--sport 123" not in line]
    assert len(udp) == 2 and max(udp) < reject
    assert firewall.closed_ports(ORACLE, d.ports) == d.ports


async def test_the_firewall_stage_inserts_udp_rules_above_the_reject() -> None:
    remote = ScriptedRemote([(r"ufw", False), (r"dpkg-query", True),
                             (r"^iptables -S INPUT", CommandResult(0, ORACLE, "")),
                             (r"^ip6tables -S INPUT", CommandResult(0, ORACLE_IMAGE_RULES["ip6tables"], ""))],
                            files={"/etc/iptables/rules.v4": SAVED_ORACLE.encode()})
    ctx, _ = context(NAMES, remote)
    assert await firewall.open_firewall(ctx) is Status.DONE
    inserted = [c.removeprefix("sudo ") for c in remote.commands if c.startswith("sudo iptables -I INPUT")]
    reject = firewall.reject_position(ORACLE)  # Oracle's catch-all REJECT is the 6th INPUT rule
    assert inserted == [f"iptables -I INPUT {reject + i} {firewall.accept_rule(port)}" for i, port in enumerate(Deployment.build(NAMES).ports)]
    assert "iptables -I INPUT 8 -p udp -m state --state NEW -m udp --dport 3478 -j ACCEPT" in inserted
    assert "iptables -I INPUT 11 -p udp -m state --state NEW -m udp --dport 49152:49200 -j ACCEPT" in inserted
    saved = remote.written["/etc/iptables/rules.v4"].decode()
    assert saved.index("--dport 49152:49200 -j ACCEPT") < saved.index("-A INPUT -j REJECT")


def test_synapse_is_told_the_turn_uris_and_the_secret_only_when_read_from_the_host() -> None:
    (turn,) = [s for s in Deployment.build(NAMES).homeserver_settings() if isinstance(s, TurnSettings)]
    assert turn.uris == ("turn:matrix.example.org:3478?transport=udp", "turn:matrix.example.org:3478?transport=tcp",
                         "turns:matrix.example.org:5349?transport=tcp") == turn_uris(NAMES)
    assert turn.secret_file == SECRET_FILE and not turn.shared_secret
    generated = 'server_name: "example.org"\nlisteners: []\n'
    without = edit_homeserver_config(generated, NAMES, [turn], new_secret=lambda: "s3cret")
    assert read_setting(without.text, "turn_uris") == list(turn.uris) and read_setting(without.text, "turn_allow_guests") is False
    assert read_setting(without.text, "turn_shared_secret") is None
    import dataclasses

    edit = edit_homeserver_config(generated, NAMES, [dataclasses.replace(turn, shared_secret=SECRET)], new_secret=lambda: "x")
    assert read_setting(edit.text, "turn_shared_secret") == SECRET and "turn_shared_secret" in edit.changed
    assert SECRET not in repr(dataclasses.replace(turn, shared_secret=SECRET)), "a setting's repr never shows the secret"
    again = edit_homeserver_config(edit.text, NAMES, [dataclasses.replace(turn, shared_secret=SECRET)], new_secret=lambda: "x")
    assert again.changed == []


def test_coturn_config_behind_nat_denies_private_peers_and_anonymous_use() -> None:
    text = coturn.render_config(realm="example.org", secret=SECRET, relay=(49152, 49200),
                                nat=coturn.Nat("203.0.113.10", "10.0.0.2"), networks=["10.0.0.0/16", "11.22.0.0/16"])
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    for line in ("use-auth-secret", f"static-auth-secret={SECRET}", "realm=example.org", "min-port=49152", "max-port=49200",
                 "relay-ip=10.0.0.2", "external-ip=203.0.113.10", "no-cli", "no-multicast-peers", "no-tcp-relay",
                 "cert=/etc/coturn/certs/cert.pem", "pkey=/etc/coturn/certs/privkey.pem", "tls-listening-port=5349"):
        assert line in lines, line
    assert "no-auth" not in lines and not any(line.startswith("user=") for line in lines)
    # Not external-ip=PUBLIC/PRIVATE: coturn whitelists the private part of that form.
    assert not any(line.startswith("external-ip=") and "/" in line for line in lines)
    denied = [line.split("=", 1)[1] for line in lines if line.startswith("denied-peer-ip=")]
    for span in ("10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255",
                 "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255", "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                 "::ffff:0:0-::ffff:ffff:ffff", "11.22.0.0-11.22.255.255"):
        assert span in denied, span
    assert denied.count("10.0.0.0-10.255.255.255") == 1, "a VCN inside 10/8 is already denied"
    # The public address on an interface: no mapping at all.
    plain = coturn.render_config(realm="example.org", secret=SECRET, relay=(49152, 49200), nat=coturn.Nat("203.0.113.10", None))
    assert "external-ip" not in plain and "relay-ip" not in plain


@pytest.mark.parametrize("field, value", [("realm", "example.org\nno-auth"), ("secret", "short"), ("secret", "x" * 40 + "\nno-auth"),
                                          ("nat", coturn.Nat("203.0.113.10", "10.0.0.2\nno-auth")), ("relay", (80, 90))])
def test_nothing_unchecked_reaches_coturns_config(field, value) -> None:
    given = {"realm": "example.org", "secret": SECRET, "relay": (49152, 49200), "nat": None, field: value}
    with pytest.raises(coturn.ConfigProblem):
        coturn.render_config(**given)


def test_the_hosts_nat_is_read_from_its_interfaces_and_routes() -> None:
    listing = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
               "2: ens3    inet 10.0.0.2/24 brd 10.0.0.255 scope global ens3\\       valid_lft forever\n"
               "2: ens3    inet6 fe80::17ff:fe00:1/64 scope link\\       valid_lft forever\n")
    addresses = coturn.interface_addresses(listing)
    assert addresses == ["127.0.0.1", "10.0.0.2", "fe80::17ff:fe00:1"]
    source = coturn.route_source("203.0.113.10 via 10.0.0.1 dev ens3 src 10.0.0.2 uid 0 \n    cache \n")
    assert source == "10.0.0.2" and coturn.route_source("RTNETLINK answers: Network is unreachable") is None
    assert coturn.nat_for("203.0.113.10", addresses, source) == coturn.Nat("203.0.113.10", "10.0.0.2")
    assert coturn.nat_for("10.0.0.2", addresses, source) == coturn.Nat("10.0.0.2", None)


def test_the_certificate_script_copies_caddys_certificate_for_the_matrix_host_only() -> None:
    script = coturn.certificate_script("matrix.example.org")
    assert "host=matrix.example.org" in script and coturn.CADDY_CERTIFICATES in script
    assert "-o root -g turnserver" in script and "systemctl try-restart coturn" in script
    with pytest.raises(coturn.ConfigProblem):
        coturn.certificate_script("matrix.example.org; reboot")


def test_uclient_output_is_read_for_the_relay_and_the_refusals() -> None:
    said = "0: : IPv4. Received relay addr: 203.0.113.10:49179\n0: : channel bind: error 403 (Forbidden IP)\n"
    assert coturn.relay_addresses(said) == ["203.0.113.10:49179"] and coturn.forbidden(said)
    assert coturn.allocation_refused("0: : ERROR: Cannot complete Allocation\n") and not coturn.forbidden("")


def context(answers, remote, *, facts=None, dry_run=False):
    session = Session(answers=answers, state=RunState(None, {"facts": facts or {}}),
                      options=RunOptions(dry_run=dry_run), remote=remote)
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(e.line) if isinstance(e, StageLog) else None)
    return StageContext(session, Stage("test", "test", lambda ctx: None)), lines


async def test_the_secret_is_made_once_kept_root_only_and_never_said() -> None:
    remote = ScriptedRemote([])
    ctx, lines = context(NAMES, remote)
    assert await ensure_secret(ctx) is Status.DONE
    secret = remote.written[SECRET_FILE].decode().strip()
    assert len(secret) >= 48 and ctx.session.secrets.redact(f"x {secret} y") != f"x {secret} y"
    assert not any(secret in line for line in lines)
    ctx, _ = context(NAMES, remote)
    assert await ensure_secret(ctx) is Status.UNCHANGED
    # A lost file takes back the secret coturn has: Synapse and coturn keep agreeing.
    del remote.files[SECRET_FILE]
    remote.files[coturn.CONFIG] = coturn.render_config(realm="example.org", secret=SECRET, relay=(49152, 49200), nat=None).encode()
    ctx, _ = context(NAMES, remote)
    await ensure_secret(ctx)
    assert remote.files[SECRET_FILE].decode().strip() == SECRET


async def test_synapse_config_stage_reads_the_secret_from_the_host_and_masks_it() -> None:
    generated = ('server_name: "example.org"\nlisteners: []\nregistration_shared_secret: "abcdefghijklmnop"\n'
                 "database:\n  name: sqlite3\n  args:\n    database: /data/homeserver.db\n")
    config = "/opt/matrix/synapse/data/homeserver.yaml"
    remote = ScriptedRemote([(r"stat -c", CommandResult(0, "991:991 600", "")), (r"test -s .*homeserver.db", False)],
                            files={config: generated.encode(), SECRET_FILE: (SECRET + "\n").encode()})
    ctx, lines = context(NAMES.replace("database", engine="sqlite"), remote)
    assert await configure(ctx) is Status.DONE
    written = remote.written[config].decode()
    assert read_setting(written, "turn_shared_secret") == SECRET
    assert not any(SECRET in line for line in lines) and ctx.session.secrets.redact(SECRET) != SECRET
    del remote.files[SECRET_FILE]
    ctx, _ = context(NAMES.replace("database", engine="sqlite"), remote)
    with pytest.raises(StageError, match="TURN shared secret is missing"):
        await configure(ctx)


def test_the_dry_run_shows_turn_and_the_udp_ingress_rules_but_no_secret(tmp_path: Path) -> None:
    done = run("--answers", str(EXAMPLE), "--dry-run", "--report", str(tmp_path / "r.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    ingress = next(line for line in out.splitlines() if "network.update_security_list" in line)
    assert "udp/3478 from 0.0.0.0/0" in ingress and "udp/49152-49200 from 0.0.0.0/0" in ingress
    assert "tcp/3478 from 0.0.0.0/0" in ingress and "tcp/5349 from 0.0.0.0/0" in ingress
    assert "Security list: ingress tcp 80/443/3478/5349, udp 3478/49152-49200" in out
    assert "Host firewall: tcp 80/443/3478/5349, udp 3478/49152-49200 before the REJECT" in out
    # coturn's config is shown, but its secret line says where the secret is, never a value.
    assert "    | use-auth-secret" in out and "    | static-auth-secret=(the secret in /opt/matrix/synapse/turn.secret)" in out
    assert "    | external-ip=203.0.113.10" in out and "    | denied-peer-ip=169.254.0.0-169.254.255.255" in out
    assert not re.search(r"static-auth-secret=[A-Za-z0-9_-]{32}", out)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["checks"] == [], "a dry run claims no check passed"


def _coturn_in_range(first: str, last: str, peer: str) -> bool:
    """coturn 4.6's ioa_addr_in_range (ns_turn_ioaddr.c), for the denied list: a range whose first
    address is "any" starts below everything, and addresses of different families compare by
    family number (AF_INET 2 < AF_INET6 10); IPv6 compares byte by byte."""
    import ipaddress
    import socket

    def family(ip):
        return socket.AF_INET if ip.version == 4 else socket.AF_INET6

    def less_eq(a, b):
        if a.version != b.version:
            return family(a) < family(b)
        return all(x <= y for x, y in zip(a.packed, b.packed)) if a.version == 6 else int(a) <= int(b)

    low, high, ip = ipaddress.ip_address(first), ipaddress.ip_address(last), ipaddress.ip_address(peer)
    if low.is_unspecified or less_eq(low, ip):
        return True if high.is_unspecified else less_eq(ip, high)
    return False


def test_the_denied_list_as_coturn_reads_it_refuses_private_peers_only() -> None:
    spans = [span.split("-") if "-" in span else [span, span] for span, _ in coturn.denied_ranges(["10.0.0.0/16", "11.22.0.0/16"])]

    def denied(peer: str) -> bool:
        return any(_coturn_in_range(low, high, peer) for low, high in spans)

    for peer in ("203.0.113.3", "8.8.8.8", "1.1.1.1", "2001:db8::1", "2606:4700::1111", "11.23.0.1"):
        assert not denied(peer), peer
    for peer in ("10.0.0.2", "172.17.0.3", "192.168.1.1", "169.254.169.254", "127.0.0.1", "100.100.1.1",
                 "fd00::1", "fe80::1", "::ffff:10.0.0.1", "::1", "11.22.3.4"):
        assert denied(peer), peer
    with pytest.raises(coturn.ConfigProblem):
        coturn.denied_ranges(["::/64"])
