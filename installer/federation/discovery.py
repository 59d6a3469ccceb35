"""Server discovery in the order of the Matrix server-server spec ("Resolving server names").

1. IP literal: that address, the given port or 8448.
2. Hostname with an explicit port: its A/AAAA records, that port.
3. `https://<hostname>/.well-known/matrix/server` (redirects followed, 50 KB cap): `m.server` is
   `<delegated_hostname>[:<port>]`; then 3.1 IP literal, 3.2 explicit port, 3.3 SRV
   `_matrix-fed._tcp.<delegated_hostname>`, 3.4 deprecated `_matrix._tcp`, 3.5 A/AAAA on 8448.
   The certificate and Host header are the *delegated* hostname.
4./5. No valid .well-known: SRV `_matrix-fed._tcp.<hostname>`, then `_matrix._tcp`; the
   certificate and Host header are the *server name*, whatever the SRV target is.
6. A/AAAA of the hostname, port 8448.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

from installer.federation.net import Fetched, HostAddresses, Net, NetError, SrvRecord, is_ip, join_host_port
from installer.shown import quoted

WELL_KNOWN_MAX_BYTES = 50 * 1024
MAX_REDIRECTS = 10
HOMESERVER_AGENT = "Synapse/1.163.2"
"""The .well-known is fetched a second time with a homeserver's own user agent: a web firewall or
bot filter that answers our unusual one but blocks what servers send (or the other way round)
shows as a difference (matrix-federation-tester #144)."""
DEFAULT_PORT = 8448
_CACHE_DEFAULT = 24 * 3600
_CACHE_MAX = 48 * 3600

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class ServerNameError(ValueError):
    pass


def split_server_name(name: str) -> tuple[str, int | None]:
    """`host[:port]` (an IPv6 literal in brackets) into (host, port or None); raises ServerNameError."""
    text = name.strip()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
        if end < 0 or not is_ip(host):
            raise ServerNameError(f"{quoted(name)} is not a valid IPv6 literal")
    else:
        host, _, rest = text.partition(":")
        rest = ":" + rest if _ else ""
        if not (is_ip(host) or _HOSTNAME.match(host)):
            raise ServerNameError(f"{quoted(name)} is not a valid server name (a hostname, optionally with :port)")
    port: int | None = None
    if rest:
        # At most 5 digits before int(): thousands of them raise a ValueError of Python's own.
        if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6 or not 1 <= int(rest[1:]) <= 65535:
            raise ServerNameError(f"{quoted(name)} has an invalid port")
        port = int(rest[1:])
    return host.lower(), port


@dataclass
class WellKnown:
    """What https://<server_name>/.well-known/matrix/server said.

    status: "found" (valid m.server), "absent" (an error status, empty body or unreachable: the
    spec falls back to SRV), "invalid" (something is served there, but not a valid delegation),
    "skipped" (an IP literal or explicit port: not looked up)."""

    url: str
    status: str = "skipped"
    m_server: str = ""
    detail: str = ""
    error: NetError | None = None
    cache_expires_at: int = 0
    redirects: list[str] = field(default_factory=list)
    content_type: str = ""
    """The Content-Type of the document that answered (found or invalid)."""
    first: tuple[int, str] = (0, "")
    """The first answer at the server name: (status, the Location of a redirect or the m.server);
    each of the server name's addresses must give the same."""
    agent: str = ""
    """The user agent it was fetched with ("" for ours)."""
    by_agent: WellKnown | None = None
    """The same document fetched with HOMESERVER_AGENT."""

    @property
    def outcome(self) -> str:
        """What a server would conclude, in words that compare across user agents."""
        if self.status == "found":
            return f"m.server = {self.m_server}"
        return self.detail

    def to_tester(self) -> dict[str, Any]:
        if self.status == "found":
            return {"m.server": self.m_server, "CacheExpiresAt": self.cache_expires_at}
        if self.status == "skipped":
            return {}
        return {"result": self.detail}


@dataclass(frozen=True)
class Target:
    """One place to reach the server: `host`:`port` to connect to, `sni` the name the
    certificate must match, `host_header` what to send as Host, `step` how it was found."""

    host: str
    port: int
    sni: str
    host_header: str
    step: str


@dataclass
class Address:
    target: Target
    ip: str
    port: int
    shown: str = ""
    """The address as other servers see it ("ADDR:PORT" from DNS, the port wanted); the report
    names per-address checks by it (`tls@203.0.113.10:443`)."""

    def __post_init__(self) -> None:
        self.shown = self.shown or join_host_port(self.ip, self.port)

    @property
    def key(self) -> str:
        return join_host_port(self.ip, self.port)

    @property
    def label(self) -> str:
        wanted = join_host_port(self.target.host, self.target.port)
        return wanted if wanted == self.key else f"{wanted} ({self.key})"


@dataclass
class Discovery:
    server_name: str
    well_known: WellKnown
    srv_name: str = ""
    srv_records: list[SrvRecord] = field(default_factory=list)
    srv_error: str | None = None
    srv_deprecated: bool = False
    srv_skipped: bool = True
    srv_rejected: list[str] = field(default_factory=list)
    """SRV targets refused (CNAMEs), as sentences."""
    targets: list[Target] = field(default_factory=list)
    hosts: dict[str, HostAddresses] = field(default_factory=dict)
    addresses: list[Address] = field(default_factory=list)
    unresolved: list[Target] = field(default_factory=list)
    well_known_at: list[tuple[str, Fetched | NetError]] = field(default_factory=list)
    """The server name's own addresses (A and AAAA, port 443), each asked for the .well-known
    that delegation found: (shown address, its answer or what went wrong)."""

    @property
    def route(self) -> str:
        """How the servers were found, in words ("SRV _matrix-fed._tcp.example.org", ...)."""
        steps = {t.step for t in self.targets}
        if self.well_known.status == "found":
            base = f".well-known m.server = {self.well_known.m_server}"
            return base + (f", then SRV {self.srv_name}" if any("srv" in s for s in steps) else "")
        if any("srv" in s for s in steps):
            return f"SRV {self.srv_name}"
        if "explicit port" in steps:
            return "the port in the server name"
        if "ip literal" in steps:
            return "the IP address in the server name"
        return f"the default port {DEFAULT_PORT}"

    def to_tester(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "SRVSkipped": self.srv_skipped,
            "SRVCName": "",
            "SRVRecords": [r.to_tester() for r in self.srv_records] or None,
            "SRVError": {"Message": self.srv_error} if self.srv_error else None,
            "Hosts": {name: found.to_tester() for name, found in self.hosts.items()},
            "Addrs": [a.key for a in self.addresses],
        }
        if self.srv_rejected:
            out["SRVCName"] = "; ".join(self.srv_rejected)
        return out


def _cache_expiry(headers: Any) -> int:
    """When a .well-known answer expires, from Cache-Control max-age or Expires (spec: default
    24 h, at most 48 h)."""
    now = time.time()
    seconds: float = _CACHE_DEFAULT
    control = headers.get("cache-control", "")
    if m := re.search(r"max-age\s*=\s*(\d+)", control):
        seconds = int(m.group(1))
    elif "no-store" in control or "no-cache" in control:
        seconds = 0
    elif expires := headers.get("expires"):
        try:
            seconds = parsedate_to_datetime(expires).timestamp() - now
        except (TypeError, ValueError):
            seconds = 0
    return int(now + max(0, min(seconds, _CACHE_MAX)))


def _valid_delegation(value: Any) -> str | None:
    """What is wrong with an m.server value, or None."""
    if not isinstance(value, str) or not value:
        return f'"m.server" must be a string like "matrix.example.org:443", not {json.dumps(value)}'
    try:
        split_server_name(value)
    except ServerNameError as exc:
        return f'"m.server" {exc}'
    return None


async def fetch_well_known(net: Net, host: str, *, agent: str = "") -> WellKnown:
    url = f"https://{host}/.well-known/matrix/server"
    result = WellKnown(url, agent=agent)
    seen = {url}
    current = url
    headers = {"User-Agent": agent} if agent else None
    for _ in range(MAX_REDIRECTS + 1):
        try:
            answer = await net.fetch(current, max_bytes=WELL_KNOWN_MAX_BYTES, headers=headers)
        except NetError as exc:
            result.error = exc
            if exc.kind == "too-large":
                result.status, result.detail = "invalid", f"{current} is larger than {WELL_KNOWN_MAX_BYTES // 1024} KB"
            else:
                result.status, result.detail = "absent", f"{current} could not be fetched: {exc.message}"
            return result
        if current == url:
            result.first = (answer.status, answer.headers.get("location", "") if 300 <= answer.status < 400 else "")
        if answer.status in (301, 302, 303, 307, 308) and answer.headers.get("location"):
            nxt = urljoin(current, answer.headers["location"])
            if nxt in seen:
                result.status, result.detail = "invalid", f"{url} redirects in a loop ({' -> '.join(result.redirects + [nxt])})"
                return result
            seen.add(nxt)
            result.redirects.append(nxt)
            current = nxt
            continue
        if answer.status != 200:
            result.status, result.detail = "absent", f"{current} answered {answer.reason}"
            return result
        if not answer.body.strip():
            result.status, result.detail = "absent", f"{current} answered 200 with an empty body"
            return result
        result.content_type = answer.headers.get("content-type", "")
        try:
            data = json.loads(answer.body)
        except (ValueError, UnicodeDecodeError) as exc:
            result.status = "invalid"
            result.detail = f"{current} is not valid JSON ({exc}): {answer.body[:80].decode('utf-8', 'replace')!r}"
            return result
        if not isinstance(data, dict):
            result.status, result.detail = "invalid", f"{current} is JSON but not an object"
            return result
        if "m.server" not in data:
            result.status, result.detail = "invalid", f'{current} has no "m.server" key (keys: {", ".join(data) or "none"})'
            return result
        if problem := _valid_delegation(data["m.server"]):
            result.status, result.detail = "invalid", f"{current}: {problem}"
            return result
        result.status, result.m_server = "found", data["m.server"]
        if current == url:
            result.first = (200, result.m_server)
        result.detail = f"m.server = {result.m_server}"
        if result.redirects:
            result.detail += f" (after {len(result.redirects)} redirect{'s' if len(result.redirects) > 1 else ''})"
        result.cache_expires_at = _cache_expiry(answer.headers)
        return result
    result.status, result.detail = "invalid", f"{url} redirects more than {MAX_REDIRECTS} times"
    return result


async def _srv_targets(net: Net, found: Discovery, name: str, sni: str) -> list[Target]:
    """SRV _matrix-fed._tcp then _matrix._tcp for `name`; certificate and Host are `sni`."""
    found.srv_skipped = False
    for prefix, deprecated in (("_matrix-fed._tcp", False), ("_matrix._tcp", True)):
        query = f"{prefix}.{name}"
        records, error = await net.srv(query)
        if error and not found.srv_error:
            found.srv_error = error
        usable = [r for r in records if r.target not in ("", ".")]
        if usable:
            found.srv_name, found.srv_records, found.srv_deprecated = query, usable, deprecated
            return [Target(r.target.lower(), r.port, sni, sni, "srv (deprecated _matrix._tcp)" if deprecated else "srv")
                    for r in usable]
    found.srv_name = f"_matrix-fed._tcp.{name}"
    return []


async def discover(net: Net, server_name: str) -> Discovery:
    """Every address other servers would try for `server_name`, with what the spec says to
    expect from each (SNI, Host). Raises ServerNameError for a malformed name."""
    host, port = split_server_name(server_name)
    found = Discovery(server_name, WellKnown(f"https://{host}/.well-known/matrix/server"))
    if is_ip(host):
        found.targets = [Target(host, port or DEFAULT_PORT, host, server_name, "ip literal")]
    elif port is not None:
        found.targets = [Target(host, port, host, f"{host}:{port}", "explicit port")]
    else:
        found.well_known, other, found.well_known_at = await asyncio.gather(
            fetch_well_known(net, host), fetch_well_known(net, host, agent=HOMESERVER_AGENT),
            _well_known_at_each_address(net, host))
        found.well_known.by_agent = other
        if found.well_known.status == "found":
            d_host, d_port = split_server_name(found.well_known.m_server)
            if is_ip(d_host):
                found.targets = [Target(d_host, d_port or DEFAULT_PORT, d_host, found.well_known.m_server, "well-known ip")]
            elif d_port is not None:
                found.targets = [Target(d_host, d_port, d_host, f"{d_host}:{d_port}", "well-known")]
            else:
                found.targets = await _srv_targets(net, found, d_host, d_host) or [
                    Target(d_host, DEFAULT_PORT, d_host, d_host, "well-known")]
        else:
            found.targets = await _srv_targets(net, found, host, host) or [
                Target(host, DEFAULT_PORT, host, host, "default port")]

    located = await asyncio.gather(*(net.routes(t.host, t.port) for t in found.targets))
    for target, (names, routes) in zip(found.targets, located):
        found.hosts[target.host] = names
        if target.step.startswith("srv") and names.cname:
            found.srv_rejected.append(
                f"SRV target {target.host} is a CNAME (to {names.cname}), which the spec forbids")
            continue
        if not routes:
            found.unresolved.append(target)
        for shown, ip, real_port in routes:
            found.addresses.append(Address(target, ip, real_port, shown))
    return found


async def _well_known_at_each_address(net: Net, host: str) -> list[tuple[str, Fetched | NetError]]:
    """The first answer for /.well-known/matrix/server at each of the server name's addresses
    (both families): other servers pick any of them, so each must serve the delegation."""
    _, routes = await net.routes(host, 443)

    async def ask(ip: str, port: int) -> Fetched | NetError:
        try:
            return await net.request_at(ip, port, sni=host, host_header=host, method="GET",
                                        path="/.well-known/matrix/server", max_bytes=WELL_KNOWN_MAX_BYTES)
        except NetError as exc:
            return exc

    answers = await asyncio.gather(*(ask(ip, port) for _, ip, port in routes))
    return [(shown, answer) for (shown, _, _), answer in zip(routes, answers)]
