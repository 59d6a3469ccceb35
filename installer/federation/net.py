"""How the checks reach the network: DNS through a chosen resolver, curl-like --connect-to
mappings, TLS trusting the system roots plus an optional CA file.

Every failure becomes a `NetError` whose `kind` says what went wrong in a way the diagnoses can
use ("refused", "timeout", "tls-verify", ...), never a bare library exception.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from installer.shown import error_words

ConnectTo = tuple[str, int, str, int]

# OpenSSL's X509_V_ERR_* codes the diagnoses tell apart.
CERT_EXPIRED = 10
CERT_NOT_YET_VALID = 9
SELF_SIGNED = 18
SELF_SIGNED_IN_CHAIN = 19
UNKNOWN_ISSUER = 20
UNKNOWN_ISSUER_LEAF = 21
HOSTNAME_MISMATCH = 62


def is_ip(host: str) -> bool:
    """An IP address (an IPv6 zone only if it is an interface's name: it may come from the network)."""
    from installer.checks import ip_address

    return ip_address(host) is None


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class CertInfo:
    """The parts of a certificate a person needs to see: who it is for, who issued it, until when."""

    subject_cn: str
    issuer_cn: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    sha256: str
    not_before: datetime
    not_after: datetime
    self_signed: bool

    @classmethod
    def from_der(cls, der: bytes) -> CertInfo:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_der_x509_certificate(der)

        def cn(name: x509.Name) -> str:
            values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
            return str(values[0].value) if values else ""

        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = tuple(san.get_values_for_type(x509.DNSName))
            ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        except x509.ExtensionNotFound:
            dns_names, ips = (), ()
        return cls(
            subject_cn=cn(cert.subject),
            issuer_cn=cn(cert.issuer),
            dns_names=dns_names,
            ip_addresses=ips,
            sha256=hashlib.sha256(der).hexdigest(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            self_signed=cert.issuer == cert.subject,
        )

    @property
    def names(self) -> list[str]:
        """The names it is valid for (SANs; the CN only when there are none)."""
        found = list(self.dns_names) + list(self.ip_addresses)
        return found or ([self.subject_cn] if self.subject_cn else [])

    def to_tester(self) -> dict[str, Any]:
        return {
            "SubjectCommonName": self.subject_cn,
            "IssuerCommonName": self.issuer_cn,
            "SHA256Fingerprint": self.sha256,
            "DNSNames": list(self.dns_names),
        }


class NetError(Exception):
    """A request that got no usable answer. `kind`: dns (no record), dns-server (the DNS server
    did not answer), refused, timeout, unreachable, tls-verify, tls, http, too-large."""

    def __init__(self, kind: str, message: str, *, host: str = "", port: int = 0, address: str = "",
                 verify_code: int | None = None, cert: CertInfo | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.host = host
        self.port = port
        self.address = address
        self.verify_code = verify_code
        self.cert = cert


@dataclass
class Fetched:
    """One HTTP answer, with where it came from and over which TLS session."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str
    address: str
    cert: CertInfo | None = None
    tls_version: str = ""
    cipher: str = ""
    seconds: float = 0.0
    received_at: float = 0.0
    """This machine's clock (time.time()) when the answer arrived: with the Date header, the skew."""

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    @property
    def reason(self) -> str:
        try:
            from http import HTTPStatus

            return f"{self.status} {HTTPStatus(self.status).phrase}"
        except ValueError:
            return str(self.status)


@dataclass
class HostAddresses:
    """A name's A/AAAA answer (tester: DNSResult.Hosts[name])."""

    name: str
    addrs: list[str] = field(default_factory=list)
    cname: str = ""
    error: str | None = None
    unanswered: bool = False
    """The DNS server gave no answer (timeout, refusal): not the same as "no such record"."""

    def to_tester(self) -> dict[str, Any]:
        out: dict[str, Any] = {"CName": self.cname, "Addrs": list(self.addrs)}
        if self.error:
            out["Error"] = {"Message": self.error}
        return out


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str

    def to_tester(self) -> dict[str, Any]:
        return {"Target": self.target + ".", "Port": self.port, "Priority": self.priority, "Weight": self.weight}


def trust_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """System roots, plus `ca_file` when given (a lab's or a company's own CA)."""
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    if ca_file:
        try:
            context.load_verify_locations(str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise CaFileError(f"the CA file {ca_file} cannot be used ({getattr(exc, 'strerror', None) or exc})") from None
    return context


class CaFileError(ValueError):
    """--ca-file names a file that is missing or holds no certificate."""


def _cause_chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class Net:
    """DNS look-ups, --connect-to mappings and HTTPS requests for one check run."""

    def __init__(self, *, connect_to: Iterable[ConnectTo] = (), dns_server: tuple[str, int] | None = None,
                 ca_file: Path | str | None = None, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.dns_server = dns_server
        self.ssl_context = trust_context(ca_file)
        self._connect_to: dict[tuple[str, int], tuple[str, int]] = {}
        for host, port, host2, port2 in connect_to:
            self._connect_to.setdefault((host.lower().strip("[]"), int(port or 0)), (host2.strip("[]"), int(port2)))
        self._resolver: Any = None
        self._clients: dict[tuple[str, int, str], httpx.AsyncClient] = {}

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)

    async def __aenter__(self) -> Net:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- where to connect ---------------------------------------------------------------
    def mapped(self, host: str, port: int) -> tuple[str, int] | None:
        """The --connect-to replacement for host:port (an empty host or port 0 is a wildcard)."""
        host = host.lower()
        for key in ((host, port), (host, 0), ("", port), ("", 0)):
            if key in self._connect_to:
                host2, port2 = self._connect_to[key]
                return (host2 or host, port2 or port)
        return None

    def _dns(self) -> Any:
        if self._resolver is None:
            import dns.asyncresolver

            if self.dns_server:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [self.dns_server[0]]
                resolver.port = self.dns_server[1]
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = min(self.timeout, 5.0)
            resolver.timeout = min(self.timeout, 2.0)
            self._resolver = resolver
        return self._resolver

    def _dns_where(self) -> str:
        return f"DNS server {join_host_port(*self.dns_server)}" if self.dns_server else "DNS"

    async def resolve(self, name: str) -> HostAddresses:
        """A and AAAA records of `name` (never raises: the error is in `.error`)."""
        result = HostAddresses(name)
        if is_ip(name):
            result.addrs = [name]
            return result
        if self.dns_server is None:
            try:
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM), self.timeout)
            except (socket.gaierror, OSError) as exc:
                if getattr(exc, "errno", None) == socket.EAI_AGAIN:
                    result.error, result.unanswered = f"DNS did not answer for {name} ({exc.strerror})", True
                else:
                    result.error = f"{name} has no address in DNS ({exc.strerror or error_words(exc)})"
                return result
            except asyncio.TimeoutError:
                result.error, result.unanswered = f"looking up {name} took longer than {self.timeout:g} s", True
                return result
            for info in infos:
                address = str(info[4][0])
                if address not in result.addrs:
                    result.addrs.append(address)
            return result

        import dns.exception
        import dns.resolver

        async def query(rdtype: str) -> tuple[list[str], str, str | None]:
            try:
                answer = await self._dns().resolve(name, rdtype, search=False)
            except dns.resolver.NXDOMAIN:
                return [], "", "nxdomain"
            except dns.resolver.NoAnswer:
                return [], "", None
            except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
                return [], "", f"{self._dns_where()} did not answer for {name} ({error_words(exc)})"
            canonical = answer.canonical_name.to_text().rstrip(".")
            return [r.to_text() for r in answer], canonical if canonical.lower() != name.lower() else "", None

        (v4, cname4, err4), (v6, cname6, err6) = await asyncio.gather(query("A"), query("AAAA"))
        result.addrs = v4 + v6
        result.cname = cname4 or cname6
        if not result.addrs:
            if "nxdomain" in (err4, err6):
                result.error = f"{name} does not exist in DNS (NXDOMAIN)"
            elif err4 or err6:
                result.error, result.unanswered = err4 or err6, True
            else:
                result.error = f"{name} has no A or AAAA record"
        return result

    async def srv(self, name: str) -> tuple[list[SrvRecord], str | None]:
        """SRV records for `name`, sorted by priority then weight (descending); no record is ([], None)."""
        import dns.exception
        import dns.resolver

        try:
            resolver = self._dns()
        except dns.resolver.NoResolverConfiguration:
            return [], f"no DNS resolver is configured here for the SRV query for {name}: pass --dns-server"
        try:
            answer = await resolver.resolve(name, "SRV", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout,
                dns.resolver.NoResolverConfiguration) as exc:
            return [], f"{self._dns_where()} did not answer the SRV query for {name} ({error_words(exc)})"
        records = [SrvRecord(r.priority, r.weight, r.port, r.target.to_text().rstrip(".")) for r in answer]
        records.sort(key=lambda r: (r.priority, -r.weight))
        return records, None

    async def locate(self, host: str, port: int) -> tuple[HostAddresses, list[tuple[str, int]]]:
        """Where a connection to host:port really goes: DNS first, then --connect-to (by name,
        or by each resolved address). A name missing from DNS is fine when a mapping covers it."""
        found, routes = await self.routes(host, port)
        return found, [(ip, real_port) for _, ip, real_port in routes]

    async def routes(self, host: str, port: int) -> tuple[HostAddresses, list[tuple[str, str, int]]]:
        """Like `locate`, with each address as other servers see it: (shown, ip, port), where
        shown is "ADDR:PORT" from DNS with the port wanted (what a report names), and ip:port
        where the connection really goes. A mapping by name skips DNS: then shown is where it goes."""
        found = await self.resolve(host)
        by_name = self.mapped(host, port)
        if by_name is not None:
            target_host, target_port = by_name
            if is_ip(target_host):
                return found, [(join_host_port(target_host, target_port), target_host, target_port)]
            mapped = await self.resolve(target_host)
            return found, [(join_host_port(ip, target_port), ip, target_port) for ip in mapped.addrs]
        routes = []
        for ip in found.addrs:
            real_ip, real_port = self.mapped(ip, port) or (ip, port)
            routes.append((join_host_port(ip, port), real_ip, real_port))
        return found, routes

    # --- HTTPS ------------------------------------------------------------------------------
    def _client(self, ip: str, port: int, sni: str) -> httpx.AsyncClient:
        # One client per (address, SNI): a pooled connection made for one name must never
        # serve a request meant to be checked against another.
        key = (ip, port, sni)
        if key not in self._clients:
            self._clients[key] = httpx.AsyncClient(verify=self.ssl_context, timeout=self.timeout,
                                                   follow_redirects=False, trust_env=False)
        return self._clients[key]

    async def request_at(self, ip: str, port: int, *, sni: str, host_header: str, method: str, path: str,
                         json: Any = None, headers: dict[str, str] | None = None,
                         max_bytes: int = 1_000_000) -> Fetched:
        """One HTTPS request to ip:port with the given SNI (the name the certificate must match)
        and Host header. Raises NetError."""
        address = join_host_port(ip, port)
        url = f"https://{address}{path}"
        shown = f"https://{host_header.removesuffix(':443')}{path}"
        sent_headers = {"Host": host_header, "User-Agent": "matrix-installer-federation-check"}
        sent_headers.update(headers or {})
        started = asyncio.get_running_loop().time()
        client = self._client(ip, port, sni)
        try:
            async with client.stream(method, url, headers=sent_headers, json=json,
                                     extensions={"sni_hostname": sni}) as response:
                cert, version, cipher = None, "", ""
                stream = response.extensions.get("network_stream")
                ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
                if ssl_object is not None:
                    der = ssl_object.getpeercert(binary_form=True)
                    cert = CertInfo.from_der(der) if der else None
                    version = ssl_object.version() or ""
                    cipher = (ssl_object.cipher() or ("",))[0]
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise NetError("too-large", f"{shown} sent more than {max_bytes // 1024} KB",
                                       host=sni, port=port, address=address)
                return Fetched(response.status_code, response.headers, bytes(body), shown, address, cert,
                               version, cipher, asyncio.get_running_loop().time() - started, time.time())
        except NetError:
            raise
        except httpx.HTTPError as exc:
            raise await self._explain(exc, ip, port, sni, shown) from None

    async def _explain(self, exc: httpx.HTTPError, ip: str, port: int, sni: str, shown: str) -> NetError:
        address = join_host_port(ip, port)
        where = dict(host=sni, port=port, address=address)
        for cause in _cause_chain(exc):
            if isinstance(cause, ssl.SSLCertVerificationError):
                cert = await self.peer_certificate(ip, port, sni)
                return NetError("tls-verify", cause.verify_message or str(cause), verify_code=cause.verify_code,
                                cert=cert, **where)
            if isinstance(cause, ssl.SSLError):
                return NetError("tls", f"TLS handshake with {address} failed ({cause.reason or cause})", **where)
            if isinstance(cause, ConnectionRefusedError):
                return NetError("refused", f"connection to {address} refused", **where)
            if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return NetError("unreachable", f"{address} is unreachable ({cause.strerror})", **where)
        text = str(exc) or error_words(exc)  # httpx's errors may have no message: never show a bare class name
        if isinstance(exc, httpx.ConnectTimeout):
            return NetError("timeout", f"no answer from {address} within {self.timeout:g} s", **where)
        if isinstance(exc, httpx.TimeoutException):
            return NetError("timeout", f"{shown} did not answer within {self.timeout:g} s", **where)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            cert = await self.peer_certificate(ip, port, sni)
            return NetError("tls-verify", text, cert=cert, **where)
        if "refused" in text.lower() or "Errno 111" in text:
            return NetError("refused", f"connection to {address} refused", **where)
        if isinstance(exc, httpx.ConnectError):
            return NetError("unreachable", f"cannot connect to {address} ({text})", **where)
        return NetError("http", f"{shown}: {text}", **where)

    async def peer_certificate(self, ip: str, port: int, sni: str) -> CertInfo | None:
        """The certificate ip:port presents for `sni`, without judging it (to explain a failure)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(ip, port, ssl=context, server_hostname=sni), self.timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return None
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            return CertInfo.from_der(der) if der else None
        except Exception:  # a certificate we cannot parse explains nothing
            return None
        finally:
            writer.close()

    async def fetch(self, url: str, *, method: str = "GET", json: Any = None,
                    headers: dict[str, str] | None = None, max_bytes: int = 1_000_000) -> Fetched:
        """A request to a URL by name: DNS and --connect-to decide the address; the first
        address that accepts a connection answers. Raises NetError."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme != "https":
            raise NetError("http", f"{url} is not an https:// URL", host=host, port=port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        found, targets = await self.locate(host, port)
        if not targets:
            kind = "dns-server" if found.unanswered else "dns"
            raise NetError(kind, found.error or f"{host} has no address", host=host, port=port)
        host_header = host if port == 443 else join_host_port(host, port)
        last: NetError | None = None
        for ip, target_port in targets:
            try:
                return await self.request_at(ip, target_port, sni=host, host_header=host_header, method=method,
                                             path=path, json=json, headers=headers, max_bytes=max_bytes)
            except NetError as exc:
                if exc.kind not in ("refused", "timeout", "unreachable"):
                    raise
                last = exc
        assert last is not None
        raise last


