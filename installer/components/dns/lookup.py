"""Asking DNS what it says now (dnspython, imported when first asked)."""

from __future__ import annotations

from typing import Any

from installer.engine import StageError


def resolver(dns_server: tuple[str, int] | None) -> Any:
    import dns.asyncresolver
    import dns.resolver

    try:
        if dns_server:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns_server[0]]
            resolver.port = dns_server[1]
        else:
            resolver = dns.asyncresolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        raise StageError("this machine has no DNS resolver configured", "pass --dns-server ADDR") from None
    resolver.lifetime = 3.0
    return resolver


async def lookup(resolver: Any, name: str, rtype: str) -> set[str] | None:
    """What DNS answers now for name/type: empty when there is no such record yet, None when the
    DNS server itself gave no answer (a record added would not change that)."""
    import dns.exception
    import dns.resolver

    try:
        answer = await resolver.resolve(name, rtype)
    except (dns.resolver.NoNameservers, dns.exception.Timeout):
        return None
    except dns.exception.DNSException:
        return set()
    if rtype == "SRV":
        return {f"{r.priority} {r.weight} {r.port} {r.target.to_text()}" for r in answer}
    return {r.to_text() for r in answer}
