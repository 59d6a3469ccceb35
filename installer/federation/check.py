"""`run_check`: discovery, then every address and the client side in parallel, then one report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

from installer.federation.client import AdminLogin, client_checks
from installer.federation.diagnose import connection_problem, dns_server_fix
from installer.federation.discovery import (
    HOMESERVER_AGENT,
    Discovery,
    ServerNameError,
    discover,
    split_server_name,
)
from installer.federation.net import CaFileError, CertInfo, ConnectTo, Fetched, Net, NetError, is_ip, join_host_port
from installer.federation.report import Check, FederationReport, order_key
from installer.federation.server import AddressReport, check_address

FEDERATION_CHECKS = ("dns", "well-known", "tls", "server-keys", "federation-version")


def _delegation_words(found: Discovery, host: str) -> str:
    """How other servers were sent to the addresses, for fixes ("the .well-known m.server", ...)."""
    if found.well_known.status == "found":
        return f"the .well-known m.server of {host}"
    if found.srv_records:
        return f"the SRV record {found.srv_name}"
    return f"the A record of {host}"


def _dns_check(found: Discovery) -> Check:
    problems: list[tuple[str, str]] = []
    for target in found.unresolved:
        looked_up = found.hosts[target.host]
        error = looked_up.error or f"{target.host} has no address"
        fix = dns_server_fix() if looked_up.unanswered else f"add an A record for {target.host} pointing at the server's public IP"
        problems.append((error, fix))
    for sentence in found.srv_rejected:
        problems.append((sentence, "point the SRV record at a name with its own A record, not a CNAME"))
    if not found.targets and not problems:
        problems.append(("no server found", "publish .well-known delegation"))
    if problems:
        return Check("dns", False, "; ".join(d for d, _ in problems), problems[0][1])
    parts = []
    if found.srv_records:
        shown = ", ".join(f"{r.target}:{r.port}" for r in found.srv_records)
        parts.append(f"SRV {found.srv_name} -> {shown}")
    for name, hosts in found.hosts.items():
        if hosts.addrs:
            parts.append(f"{name} -> {', '.join(hosts.addrs)}")
        else:
            parts.append(f"{name} (not in DNS; --connect-to used)")
    detail = "; ".join(parts) or "nothing to look up"
    if found.srv_deprecated:
        detail += f" (deprecated _matrix._tcp: publish _matrix-fed._tcp.{found.server_name} too)"
    return Check("dns", True, detail)


def _well_known_check(found: Discovery, reports: list[AddressReport], host: str) -> Check:
    """What the .well-known says, with what a server might trip over: an answer that depends on
    the user agent (a failure), a redirect or a content type other than JSON (warnings)."""
    wk = found.well_known
    other = wk.by_agent
    if other is not None and (wk.status, wk.m_server, wk.first[0]) != (other.status, other.m_server, other.first[0]):
        return Check("well-known", False,
                     f"{wk.url} answers user agents differently: ours got {wk.outcome}; "
                     f"{HOMESERVER_AGENT} (what homeservers send) got {other.outcome}",
                     f"a web firewall or bot filter in front of {host} treats user agents differently: let "
                     "/.well-known/matrix/* through whatever the user agent (homeservers send their own, such as "
                     f"{HOMESERVER_AGENT.split('/')[0]}/1.x)")
    check = _well_known_found(found, reports, host)
    if not check.ok or wk.status != "found":
        return check
    notes, fixes = [], []
    if wk.redirects:
        notes.append(f"reached through {len(wk.redirects)} redirect{'s' if len(wk.redirects) > 1 else ''} "
                     f"({' -> '.join([wk.url, *wk.redirects])})")
        fixes.append(f"serve the document at {wk.url} itself: the spec lets servers follow redirects, but not every "
                     "server does (Synapse does not follow a 308: synapse #8098)")
    media = wk.content_type.split(";")[0].strip().lower()
    if media != "application/json":
        notes.append(f"served as {wk.content_type or 'no Content-Type'}, not application/json")
        fixes.append("send it with Content-Type: application/json (Caddy: `header Content-Type application/json` "
                     "on the `respond /.well-known/matrix/server` route)")
    if notes:
        return Check("well-known", True, f"m.server = {wk.m_server}; but {'; '.join(notes)}", "; ".join(fixes), warning=True)
    return check


def _well_known_found(found: Discovery, reports: list[AddressReport], host: str) -> Check:
    wk = found.well_known
    reached = bool(reports) and all(r.connection is None for r in reports)
    if wk.status == "skipped":
        what = "an IP address" if found.targets and found.targets[0].step == "ip literal" else "a port"
        return Check("well-known", True, f"not looked up: the server name has {what}")
    if wk.status == "invalid":
        return Check("well-known", False, wk.detail,
                     'serve valid JSON like {"m.server": "matrix.example.org:443"} there, with Content-Type '
                     "application/json (the `respond /.well-known/matrix/server` line of the Caddyfile)")
    if wk.status == "found":
        _, port = split_server_name(wk.m_server)
        closed = [r for r in reports if r.connection and r.address.target.port == port and port is not None]
        if port not in (None, 443) and closed and not reached:
            host_part = wk.m_server.rsplit(":", 1)[0]
            return Check("well-known", False, f"m.server = {wk.m_server}, but nothing answers on port {port}",
                         f"publish {{\"m.server\": \"{host_part}:443\"}} (Caddy serves federation on 443), "
                         f"or open port {port} in the security list and iptables")
        return Check("well-known", True, wk.detail)
    # absent: the spec falls back to SRV and port 8448, which is fine when that works.
    if reached:
        return Check("well-known", True, f"none ({wk.detail}); servers use {found.route}")
    if wk.error is not None and wk.error.kind != "dns":
        detail, fix = connection_problem(wk.error, where=f"{host}:443", port=443)
        return Check("well-known", False, f"{wk.url} could not be fetched: {detail}", fix)
    return Check("well-known", False,
                 f"{wk.detail}, and the fallback ({found.route}) does not work either",
                 f'publish {{"m.server": "<matrix host>:443"}} at https://{host}/.well-known/matrix/server '
                 f"(Caddy's site for {host}), or an SRV record, or serve federation on {host}:8448")


def _address_checks(found: Discovery, reports: list[AddressReport], host: str) -> list[Check]:
    if not reports:
        why = "no address to connect to (see dns)"
        return [Check(name, False, f"not tested: {why}", None) for name in ("tls", "server-keys", "federation-version")]
    tls_bad = [r for r in reports if r.connection]
    wk_error = found.well_known.error
    if (len(tls_bad) == len(reports) and wk_error is not None and wk_error.kind in ("tls-verify", "tls")
            and not any(r.connection_kind in ("tls-verify", "tls") for r in tls_bad)):
        # Nothing answered, and the server name's own HTTPS is broken: that is the first thing to fix.
        detail, fix = connection_problem(wk_error, where=f"{host}:443", port=443)
        tls = Check("tls", False, f"https://{host}: {detail}", fix)
    elif tls_bad:
        first = tls_bad[0]
        fix = first.connection.fix
        if first.connection_kind in DEAD and any(not r.connection and r.address.target == first.address.target for r in reports):
            fix = _dead_address_fix(first.address.target.host, first.address.shown, first.address.target.port)
        tls = Check("tls", False, first.connection.detail, fix)
    else:
        parts = []
        for r in reports:
            cert = r.cert
            if cert is None:
                parts.append(f"{r.address.label}: no certificate seen")
                continue
            parts.append(f"{r.address.label}: certificate for {r.address.target.sni} from "
                         f"\"{cert.issuer_cn}\", valid until {cert.not_after:%Y-%m-%d}, {r.tls_version}")
        tls = Check("tls", True, "; ".join(parts))

    reachable = [r for r in reports if not r.connection]
    if not reachable:
        skipped = "not fetched: no trusted TLS connection (see tls)"
        return [tls, Check("server-keys", False, skipped, None), Check("federation-version", False, skipped, None)]
    keys_bad = [r for r in reachable if r.keys_problem]
    if keys_bad:
        p = keys_bad[0].keys_problem
        keys = Check("server-keys", False, f"{keys_bad[0].address.label}: {p.detail}", p.fix)
    else:
        keys = Check("server-keys", True, reachable[0].keys_detail)
    version_bad = [r for r in reachable if r.version_problem]
    if version_bad:
        p = version_bad[0].version_problem
        version = Check("federation-version", False, p.detail, p.fix)
    else:
        seen = sorted({f"{r.version['name']} {r.version['version']}".strip() for r in reachable if r.version})
        version = Check("federation-version", True, ", ".join(seen))
    return [tls, keys, version]


def _record_type(shown: str) -> str:
    return "AAAA" if shown.startswith("[") else "A"


def _dead_address_fix(host: str, shown: str, port: int) -> str:
    ip = shown.rsplit(":", 1)[0].strip("[]")
    return (f"the {_record_type(shown)} record of {host} points at {ip}, where nothing answers on port {port}: point it "
            "at this server (and open the port for that address family), or remove it; servers that try it fail or wait")


DEAD = ("refused", "timeout", "unreachable")


def _well_known_at_checks(found: Discovery, host: str) -> list[Check]:
    """`well-known@ADDR`: each address of the server name (A and AAAA) serves the same delegation."""
    wk = found.well_known

    def answered(answer: Fetched) -> tuple[int, str]:
        if 300 <= answer.status < 400:
            return answer.status, answer.headers.get("location", "")
        try:
            data = answer.json() if answer.status == 200 else None
        except ValueError:
            data = None
        value = data.get("m.server") if isinstance(data, dict) else None
        return answer.status, value if isinstance(value, str) else ""

    answers = [(shown, a, answered(a) if isinstance(a, Fetched) else None) for shown, a in found.well_known_at]
    if wk.status == "found":
        want_status, want_value = wk.first
    else:  # the address that answered first has none, but another may: servers pick any of them
        served = [value for _, _, value in answers if value and value[0] == 200 and value[1]]
        if not served:
            return []
        want_status, want_value = served[0]
    working = [a for _, a, _ in answers if isinstance(a, Fetched)]
    checks = []
    for shown, answer, got_said in answers:
        name = f"well-known@{shown}"
        if isinstance(answer, NetError) or got_said is None:
            assert isinstance(answer, NetError)
            detail, fix = connection_problem(answer, where=f"{host} at {shown}", port=443)
            if answer.kind in DEAD and working:
                fix = _dead_address_fix(host, shown, 443)
            checks.append(Check(name, False, detail, fix))
            continue
        _, value = got_said
        if (answer.status, value) == (want_status, want_value):
            words = f"m.server = {value}" if answer.status == 200 else f"redirects to {value}"
            checks.append(Check(name, True, f"https://{host}/.well-known/matrix/server at {shown}: {words}"))
        else:
            wanted = f"m.server = {want_value}" if want_status == 200 else f"a redirect to {want_value}"
            got = f"{answer.reason}" + (f" with m.server = {value}" if value and answer.status == 200 else "")
            checks.append(Check(name, False, f"https://{host}/.well-known/matrix/server at {shown} answered {got}, where "
                                             f"the delegation found says {wanted}",
                                f"every address of {host} (its A and AAAA records) must serve the same document: fix "
                                f"the web server behind {shown}, or remove the record that points there"))
    return checks


def _per_address_checks(reports: list[AddressReport]) -> list[Check]:
    """`tls@ADDR`, `server-keys@ADDR`, `federation-version@ADDR` for every address discovery found,
    as other servers see it (A and AAAA): one dead address fails on its own name."""
    checks: list[Check] = []
    answering = {r.address.target for r in reports if not r.connection}
    for r in reports:
        at = r.address.shown
        if r.connection:
            fix = r.connection.fix
            if r.connection_kind in DEAD and r.address.target in answering:
                fix = _dead_address_fix(r.address.target.host, at, r.address.target.port)
            skipped = f"not fetched: no TLS connection to {at} (see tls@{at})"
            checks += [Check(f"tls@{at}", False, r.connection.detail, fix),
                       Check(f"server-keys@{at}", False, skipped), Check(f"federation-version@{at}", False, skipped)]
            continue
        cert = r.cert
        tls = (f"certificate for {r.address.target.sni} from \"{cert.issuer_cn}\", valid until "
               f"{cert.not_after:%Y-%m-%d %H:%M} UTC, {r.tls_version}" if cert else "no certificate seen")
        checks.append(Check(f"tls@{at}", True, tls))
        if r.keys_problem:
            checks.append(Check(f"server-keys@{at}", False, r.keys_problem.detail, r.keys_problem.fix))
        else:
            checks.append(Check(f"server-keys@{at}", True, r.keys_detail))
        if r.version_problem:
            checks.append(Check(f"federation-version@{at}", False, r.version_problem.detail, r.version_problem.fix))
        else:
            version = r.version or {}
            checks.append(Check(f"federation-version@{at}", True, f"{version.get('name', '')} {version.get('version', '')}".strip()))
    return checks


EXPIRY_DAYS = 14
"""A certificate with fewer days left is reported (the self-test posts it to the admin's room)."""
EXPIRY_SHARE = 0.2
"""... or with less than this share of its lifetime left, for certificates that live less than
ten weeks (Caddy's own CA issues 12-hour ones, renewed when a third is left)."""


def expiry_threshold(cert: CertInfo) -> float:
    """Seconds: under this much time left, a certificate is close to its end (see EXPIRY_DAYS)."""
    lifetime = (cert.not_after - cert.not_before).total_seconds()
    return min(EXPIRY_DAYS * 86400.0, EXPIRY_SHARE * lifetime)


def time_left(seconds: float) -> str:
    if seconds < 0:
        return f"expired {time_left(-seconds)} ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.0f} days"


def _certificate_expiry(found: Discovery, reports: list[AddressReport], host: str, now: float | None = None) -> list[Check]:
    """`certificate-expiry`: the days left of every certificate a working connection showed."""
    import time as _time

    now = _time.time() if now is None else now
    seen: dict[tuple[str, str], CertInfo] = {}
    for r in reports:
        if not r.connection and r.cert:
            seen.setdefault((r.address.target.sni, r.cert.sha256), r.cert)
    for _, answer in found.well_known_at:
        if isinstance(answer, Fetched) and answer.cert:
            seen.setdefault((host, answer.cert.sha256), answer.cert)
    if not seen:
        return []
    parts, short = [], []
    for (name, _), cert in sorted(seen.items(), key=lambda item: item[1].not_after):
        left = cert.not_after.timestamp() - now
        parts.append(f"{name}: {time_left(left)} left (until {cert.not_after:%Y-%m-%d %H:%M} UTC)")
        if left < expiry_threshold(cert):
            short.append(name)
    detail = "; ".join(dict.fromkeys(parts))
    if short:
        return [Check("certificate-expiry", True, detail,
                      f"the certificate for {', '.join(dict.fromkeys(short))} is close to its end and was not renewed: "
                      "Caddy renews by itself when Let's Encrypt can reach it (port 80 open, DNS right); see "
                      "`journalctl -u caddy`", warning=True)]
    return [Check("certificate-expiry", True, detail)]


CLOCK_WARN = 30
CLOCK_FAIL = 300


def _clock(reports: list[AddressReport]) -> list[Check]:
    """`clock`: this machine's clock against the server's Date header (one second's resolution)."""
    from email.utils import parsedate_to_datetime

    for r in reports:
        if not r.date or not r.received_at:
            continue
        try:
            theirs = parsedate_to_datetime(r.date).timestamp()
        except (TypeError, ValueError):
            continue
        skew = r.received_at - theirs
        words = (f"{r.address.shown} says {r.date}: its clock is {abs(skew):.0f} s "
                 f"{'behind' if skew > 0 else 'ahead of'} this machine's")
        if abs(skew) <= CLOCK_WARN:
            return [Check("clock", True, f"{r.address.shown} and this machine agree within {max(abs(skew), 1):.0f} s "
                                         f"(its Date: {r.date})")]
        fix = ("one of the clocks is off: check `timedatectl` on the server (System clock synchronized: yes) and on "
               "this machine; key validity and signed requests depend on the time")
        return [Check("clock", abs(skew) <= CLOCK_FAIL, words, fix, warning=abs(skew) <= CLOCK_FAIL)]
    return []


def _timed_out(names: Iterable[str], seconds: float) -> list[Check]:
    return [Check(name, False, f"did not finish within {seconds:g} s",
                  "check the server is reachable from here; rerun with a longer timeout on slow links")
            for name in names]


async def _federation_side(net: Net, server_name: str) -> tuple[list[Check], dict]:
    host, _ = split_server_name(server_name)
    found = await discover(net, server_name)
    how = _delegation_words(found, host)
    reports = list(await asyncio.gather(*(check_address(net, a, server_name, how) for a in found.addresses)))
    checks = [_well_known_check(found, reports, host), _dns_check(found), *_address_checks(found, reports, host),
              *_well_known_at_checks(found, host), *_per_address_checks(reports),
              *_certificate_expiry(found, reports, host), *_clock(reports)]
    versions = [r.version for r in reports if r.version]
    tester = {
        "WellKnownResult": found.well_known.to_tester(),
        "DNSResult": found.to_tester(),
        "ConnectionReports": {r.address.key: r.to_tester() for r in reports if not r.connection},
        "ConnectionErrors": {r.address.key: {"Message": r.connection.detail} for r in reports if r.connection},
        "Version": versions[0] if versions else {"error": "no server answered /_matrix/federation/v1/version"},
    }
    return checks, tester


async def run_check(
    server_name: str,
    *,
    connect_to: Iterable[ConnectTo] = (),
    dns_server: tuple[str, int] | None = None,
    ca_file: Path | str | None = None,
    expect_policy: str | None = None,
    admin: AdminLogin | None = None,
    timeout: float = 10,
) -> FederationReport:
    """Check `server_name` the way another homeserver and a new user would see it.

    connect_to: (host, port, host2, port2) mappings, like curl's --connect-to; dns_server: the
    resolver for A/AAAA/SRV; ca_file: trusted besides the system roots; expect_policy: the
    registration policy that must hold; admin: the account that must be able to log in, at its
    own https://<matrix_host> (never where the live .well-known points)."""
    started = time.monotonic()
    report = FederationReport(server_name)
    try:
        host, _ = split_server_name(server_name)
    except ServerNameError as exc:
        report.checks = [Check("dns", False, str(exc), "give the server name as in user IDs: example.org")]
        report.tester = {"FederationOK": False}
        return report
    try:
        net = Net(connect_to=connect_to, dns_server=dns_server, ca_file=ca_file, timeout=timeout)
    except CaFileError as exc:
        report.checks = [Check("tls", False, str(exc), "check the path given to --ca-file (a PEM bundle)")]
        report.tester = {"FederationOK": False}
        return report
    async with net:
        # Discovery is a chain of up to ~4 round trips, each bounded by `timeout`.
        fed_limit, client_limit = timeout * 4, timeout * 3
        fed_task = asyncio.ensure_future(asyncio.wait_for(_federation_side(net, server_name), fed_limit))
        client_task = asyncio.ensure_future(asyncio.wait_for(
            client_checks(net, host, expect_policy=expect_policy, admin=admin), client_limit))
        fed_result, client_result = await asyncio.gather(fed_task, client_task, return_exceptions=True)
    checks: list[Check] = []
    if isinstance(fed_result, BaseException):
        if not isinstance(fed_result, asyncio.TimeoutError):
            raise fed_result
        checks += _timed_out(FEDERATION_CHECKS, fed_limit)
        tester: dict = {}
    else:
        fed_checks, tester = fed_result
        checks += fed_checks
    if isinstance(client_result, BaseException):
        if not isinstance(client_result, asyncio.TimeoutError):
            raise client_result
        names = ["client-well-known", "client-versions", "registration"] + (["admin-login"] if admin else [])
        checks += _timed_out(names, client_limit)
    else:
        checks += client_result[0]
        report.base_url = client_result[1]
    checks.sort(key=lambda c: order_key(c.name))
    report.checks = checks
    report.tester = {"FederationOK": all(c.ok for c in checks if c.name in FEDERATION_CHECKS), **tester}
    report.seconds = time.monotonic() - started
    return report


def describe_requests(server_name: str, *, connect_to: Iterable[ConnectTo] = (), dns_server: tuple[str, int] | None = None,
                      expect_policy: str | None = None, admin: bool = False, matrix_host: str = "",
                      peer: str | None = None, on_host: bool = False) -> list[str]:
    """The requests a check makes, in order, for the dry-run (nothing is contacted)."""
    host, port = split_server_name(server_name)
    resolver = f" (via {join_host_port(*dns_server)})" if dns_server else ""
    lines = []
    if port is None and not is_ip(host):
        lines += [f"GET https://{host}/.well-known/matrix/server  (redirects followed, 50 KB cap)",
                  f"  then the delegated host's SRV _matrix-fed._tcp / _matrix._tcp{resolver}, or port 8448",
                  f"  if none: SRV _matrix-fed._tcp.{host}, SRV _matrix._tcp.{host}{resolver}, else A/AAAA {host}:8448"]
    else:
        lines.append(f"A/AAAA {host}{resolver}, port {port or 8448}")
    lines += ["for each address found: TLS handshake (SNI = the delegated name), certificate chain check",
              "  GET /_matrix/key/v2/server  (server name, valid_until_ts, ed25519 signatures)",
              "  GET /_matrix/federation/v1/version",
              f"GET https://{host}/.well-known/matrix/client  (m.homeserver.base_url, CORS)",
              "GET <base_url>/_matrix/client/versions",
              "POST <base_url>/_matrix/client/v3/register {}  (registration as a stranger sees it"
              + (f"; policy {expect_policy!r} must hold)" if expect_policy else ")")]
    if admin:
        at = f"https://{matrix_host}" if matrix_host else "https://<matrix host>"
        lines.append(f"POST {at}/_matrix/client/v3/login  (the admin's password, only to the Matrix host of the answers), then /logout")
    if peer:
        from installer.federation.outbound import probe_path

        where = "Synapse on the host's loopback" if on_host else "<base_url> (or the host, for a server installed from here)"
        lines += [f"GET {probe_path(peer)} at {where}  (outbound: our server asks {peer} over federation)",
                  "  if that fails: a look from inside the homeserver's container and from the host (DNS, connect, TLS)"]
    elif on_host:
        lines.append("no outbound check (--peer none)")
    if on_host:
        lines.append("the self-test's last result and its timer, on the host (server-health)")
    for h1, p1, h2, p2 in connect_to:
        to = join_host_port(h2, p2) if h2 and p2 else f"{h2 or '(the same host)'}:{p2 or '(the same port)'}"
        lines.append(f"--connect-to: {h1 or '*'}:{p1 or '*'} goes to {to}")
    return lines
