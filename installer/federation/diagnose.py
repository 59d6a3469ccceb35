"""Turn what went wrong into words a person can act on: a detail (what was seen) and a fix."""

from __future__ import annotations

from installer.federation.net import (
    CERT_EXPIRED,
    CERT_NOT_YET_VALID,
    HOSTNAME_MISMATCH,
    SELF_SIGNED,
    SELF_SIGNED_IN_CHAIN,
    UNKNOWN_ISSUER,
    UNKNOWN_ISSUER_LEAF,
    NetError,
)

SYNAPSE_DIR = "/opt/matrix/synapse"


def names_text(names: list[str]) -> str:
    if not names:
        return "no name"
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def closed_port_fix(port: int) -> str:
    return f"port {port} is closed: open it in the security list and iptables, and check that Caddy is running (`systemctl status caddy`)"


def filtered_port_fix(port: int) -> str:
    return (f"port {port} does not answer (filtered): open it in the VCN security list and in iptables "
            "(inserted before Oracle's REJECT rule)")


def certificate_problem(exc: NetError, *, srv_step: bool, server_name: str) -> tuple[str, str]:
    """(detail, fix) for a certificate that failed verification against `exc.host`."""
    name, cert = exc.host, exc.cert
    issuer = f'"{cert.issuer_cn}"' if cert and cert.issuer_cn else "an unknown issuer"
    code = exc.verify_code
    if code == HOSTNAME_MISMATCH or "Hostname mismatch" in exc.message or "doesn't match" in exc.message:
        shown = names_text(cert.names) if cert else "another name"
        detail = f"certificate is for {shown}, not {name}"
        if srv_step:
            fix = (f"use .well-known delegation: with an SRV record the target must present a certificate for "
                   f"{server_name} itself, which ACME will not issue to another host")
        else:
            fix = (f"give Caddy a site for {name} (and point {name}'s A record at this server so the "
                   "certificate can be issued), or delegate to the name the certificate is for")
        return detail, fix
    if code == CERT_EXPIRED or "expired" in exc.message:
        when = cert.not_after.strftime("%Y-%m-%d %H:%M UTC") if cert else "some time ago"
        return (f"certificate for {name} expired on {when}",
                "renew it: Caddy renews by itself when Let's Encrypt can reach it (port 80 open, DNS right); "
                "see `journalctl -u caddy`, then `systemctl reload caddy`")
    if code == CERT_NOT_YET_VALID:
        return (f"certificate for {name} is not valid yet", "check the clocks (`timedatectl`) on the server and here")
    if code in (SELF_SIGNED, SELF_SIGNED_IN_CHAIN, UNKNOWN_ISSUER, UNKNOWN_ISSUER_LEAF) or cert is not None:
        kind = "self-signed" if (cert and cert.self_signed) or code == SELF_SIGNED else f"issued by {issuer}"
        return (f"certificate for {name} is not trusted ({kind}: {exc.message})",
                'other servers only trust public CAs: set tls = "acme" so Caddy gets a Let\'s Encrypt certificate '
                "(for a lab's own CA, pass --ca-file)")
    return (f"certificate for {name} was refused ({exc.message})",
            'use a certificate from a public CA (tls = "acme")')


def connection_problem(exc: NetError, *, where: str, port: int, srv_step: bool = False,
                       server_name: str = "") -> tuple[str, str]:
    """(detail, fix) for a request that got no HTTP answer. `where` names host:port as wanted
    and `port` the port as other servers see it (not where --connect-to sent us)."""
    if exc.kind == "tls-verify":
        return certificate_problem(exc, srv_step=srv_step, server_name=server_name)
    if exc.kind == "refused":
        return f"cannot connect to {where}: port {port} is closed ({exc.message})", closed_port_fix(port)
    if exc.kind == "timeout":
        return f"{where}: {exc.message}", filtered_port_fix(port)
    if exc.kind == "unreachable":
        return f"{where}: {exc.message}", "check the server is up and its public IP is the one in DNS"
    if exc.kind == "tls":
        return (f"{where}: {exc.message}",
                f"Caddy has no certificate for {exc.host}: add a site for {exc.host} to the Caddyfile and reload Caddy")
    if exc.kind == "dns":
        return exc.message, f"add an A record for {exc.host} pointing at the server's public IP"
    if exc.kind == "dns-server":
        return exc.message, dns_server_fix()
    return f"{where}: {exc.message}", "check Caddy and Synapse are running (`systemctl status caddy`, `docker compose ps`)"


def dns_server_fix() -> str:
    """The DNS server gave no answer at all: a record added would not change that."""
    return ("the DNS server did not answer: check that the resolver (--dns-server, or this machine's) is running "
            "and reachable from here, then run the check again")


def http_status_problem(status: str, code: int, url: str, body: bytes) -> tuple[str, str]:
    """(detail, fix) for an HTTP answer that is not the JSON Synapse would send."""
    if code in (502, 503, 504):
        return (f"{url} answered {status}: Synapse is down behind Caddy",
                f"Synapse is down behind Caddy ({code}): check `docker compose ps` in {SYNAPSE_DIR} "
                "(and `docker compose logs synapse`)")
    if code == 200 and not body.strip():
        return (f"{url} answered 200 with an empty body: nothing routes it to Synapse",
                "the Caddyfile must reverse_proxy /_matrix/* to Synapse (127.0.0.1:8008) in this site")
    if code == 404:
        return (f"{url} answered 404 Not Found: no Matrix server behind this name",
                "the Caddyfile must reverse_proxy /_matrix/* to Synapse (127.0.0.1:8008) in this site")
    return (f"{url} answered {status}",
            f"check Synapse's log (`docker compose logs synapse` in {SYNAPSE_DIR})")
