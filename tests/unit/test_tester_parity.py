"""Rows of the README's parity table with the public federation tester that no other test covers:
discovery's answers played by a scripted network (names, SRV records, the .well-known), judged
by the real checker."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from installer.federation.check import _federation_side
from installer.federation.discovery import Address, Target
from installer.federation.net import Fetched, HostAddresses, Net, NetError, SrvRecord
from installer.federation.server import AddressReport, verify_key_response


class ScriptedNet(Net):
    """DNS and HTTPS answers from tables: `hosts` name -> addresses (or an error), `srv` name ->
    records (or an error), `pages` (ip, path) -> (status, body)."""

    def __init__(self, *, hosts=None, srv=None, pages=None):
        super().__init__()
        self.hosts, self.srv_records, self.pages = hosts or {}, srv or {}, pages or {}

    async def resolve(self, name):
        found = self.hosts.get(name, [])
        if isinstance(found, str):
            return HostAddresses(name, error=found, unanswered="did not answer" in found)
        return HostAddresses(name, addrs=list(found), error=None if found else f"{name} does not exist in DNS (NXDOMAIN)")

    async def srv(self, name):
        found = self.srv_records.get(name, [])
        return ([], found) if isinstance(found, str) else (list(found), None)

    async def request_at(self, ip, port, *, sni, host_header, method, path, json=None, headers=None, max_bytes=1_000_000):
        key = (ip, path)
        if key not in self.pages:
            raise NetError("refused", f"connection to {ip}:{port} refused", host=sni, port=port, address=f"{ip}:{port}")
        status, body = self.pages[key]
        return Fetched(status, httpx.Headers({"content-type": "application/json"}), body.encode(),
                       f"https://{host_header}{path}", f"{ip}:{port}", received_at=time.time())


def _keys(server_name="example.org", with_key=True):
    key = generate_signing_key("abc")
    body = {"server_name": server_name, "valid_until_ts": int(time.time() * 1000) + 3_600_000, "old_verify_keys": {},
            "verify_keys": {"ed25519:abc": {"key": encode_verify_key_base64(get_verify_key(key))}} if with_key else {}}
    return json.dumps(sign_json(body, server_name, key))


VERSION = json.dumps({"server": {"name": "Synapse", "version": "1.163.2"}})


def _by_name(checks):
    return {c.name: c for c in checks}


async def test_an_invalid_server_name_in_the_well_known_is_an_error():
    """Tester: "Invalid server name '...' in .well-known result"."""
    net = ScriptedNet(hosts={"example.org": ["192.0.2.1"]},
                      pages={("192.0.2.1", "/.well-known/matrix/server"): (200, '{"m.server": "matrix example org"}')})
    checks, tester = await _federation_side(net, "example.org")
    well_known = _by_name(checks)["well-known"]
    assert not well_known.ok and '"m.server"' in well_known.detail and "not a valid server name" in well_known.detail


async def test_an_explicit_port_skips_srv_and_the_well_known():
    """Tester: DNSResult.SRVSkipped when the server name (or its delegation) has a port."""
    net = ScriptedNet(hosts={"example.org": ["192.0.2.1"]},
                      pages={("192.0.2.1", "/_matrix/key/v2/server"): (200, _keys("example.org:8449")),
                             ("192.0.2.1", "/_matrix/federation/v1/version"): (200, VERSION)})
    checks, tester = await _federation_side(net, "example.org:8449")
    assert tester["DNSResult"]["SRVSkipped"] is True and tester["WellKnownResult"] == {}
    assert _by_name(checks)["well-known"].detail == "not looked up: the server name has a port"
    assert all(c.ok for c in checks), checks


async def test_a_dns_server_that_times_out_on_srv_is_said():
    """Tester: an SRV look-up that times out stops the run (SRVError)."""
    net = ScriptedNet(srv={"_matrix-fed._tcp.example.org": "DNS server 127.0.0.1:53 did not answer the SRV query"},
                      hosts={"example.org": "DNS server 127.0.0.1:53 did not answer for example.org"})
    checks, tester = await _federation_side(net, "example.org")
    dns = _by_name(checks)["dns"]
    assert not dns.ok and "did not answer" in dns.detail and "add an A record" not in (dns.fix or "")
    assert tester["DNSResult"]["SRVError"] == {"Message": "DNS server 127.0.0.1:53 did not answer the SRV query"}


async def test_no_address_at_all_fails():
    """Tester: no entry in DNSResult.Addrs makes FederationOK false."""
    checks, tester = await _federation_side(ScriptedNet(), "example.org")
    found = _by_name(checks)
    assert not found["dns"].ok and "does not exist in DNS (NXDOMAIN)" in found["dns"].detail
    assert not found["tls"].ok and tester["DNSResult"]["Addrs"] == []


async def test_the_deprecated_srv_record_and_the_hosts_it_names():
    """Tester: SRV records grouped by target, each target's CName and Addrs (DNSResult.Hosts)."""
    net = ScriptedNet(srv={"_matrix._tcp.example.org": [SrvRecord(10, 5, 8448, "matrix.example.org")]},
                      hosts={"matrix.example.org": ["192.0.2.7", "2001:db8::7"]},
                      pages={(ip, path): (200, body) for ip in ("192.0.2.7", "2001:db8::7")
                             for path, body in (("/_matrix/key/v2/server", _keys()),
                                                ("/_matrix/federation/v1/version", VERSION))})
    checks, tester = await _federation_side(net, "example.org")
    assert tester["DNSResult"]["SRVRecords"] == [{"Target": "matrix.example.org.", "Port": 8448, "Priority": 10, "Weight": 5}]
    assert tester["DNSResult"]["Hosts"]["matrix.example.org"]["Addrs"] == ["192.0.2.7", "2001:db8::7"]
    assert sorted(tester["ConnectionReports"]) == ["192.0.2.7:8448", "[2001:db8::7]:8448"]
    found = _by_name(checks)
    assert found["tls@192.0.2.7:8448"].ok and found["server-keys@[2001:db8::7]:8448"].ok
    assert "deprecated _matrix._tcp" in found["dns"].detail


def test_keys_without_an_ed25519_key_fail():
    """Tester: KeyChecks.HasEd25519Key."""
    report = AddressReport(Address(Target("m.example.org", 443, "m.example.org", "m.example.org", "well-known"),
                                   "192.0.2.1", 443))
    verify_key_response(json.loads(_keys(with_key=False)), "example.org", report, "the .well-known")
    assert report.checks["HasEd25519Key"] is False and report.checks["AllEd25519ChecksOK"] is False
    assert report.keys_problem.detail == "the key response has no ed25519 verify key"


@pytest.mark.parametrize("name", ["-bad-.example.org", "example.org:99999", "exa mple.org"])
async def test_an_invalid_server_name_is_refused_before_anything_is_asked(name):
    """Tester: ServerReport.Error "Invalid server name"."""
    from installer.federation import run_check

    report = await run_check(name)
    (check,) = report.checks
    assert check.name == "dns" and not check.ok and report.tester == {"FederationOK": False}


def test_every_row_of_the_readmes_parity_table_names_tests_that_exist():
    """The table in the README: each row names at least one test, and each named test exists (a
    file, and `::name` a test function in it)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    section = readme.split("### Parity with the public federation tester", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| check ")]
    assert len(rows) >= 30, rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4, row
        references = cells[3]
        assert references.startswith("tests/"), row
        for reference in references.split("; "):
            path, _, names = reference.partition("::")
            text = (root / path).read_text()
            for name in filter(None, (n.strip().removeprefix("::") for n in names.split(","))):
                assert re.search(rf"^(async )?def {re.escape(name)}\(", text, re.M), f"{path}::{name} ({cells[0]})"
