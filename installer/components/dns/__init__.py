"""The server's names: the [domain] answers, the DNS records that point them here, and the
delegation that tells other servers where the Matrix host is (.well-known documents served by
Caddy, or an SRV record). What a deployment publishes is said here once: the DNS stage, the
Caddyfile, the guided setup's preview and the instructions for a site served elsewhere use it."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from installer import checks
from installer.components.base import Component, Redirect, Respond, Site, SiteRoutes
from installer.sections import Part, key, mention

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage

TTL = 300
WELL_KNOWN = "/.well-known/matrix/*"
DELEGATIONS = (
    ("well-known", "well-known file (recommended)"),
    ("srv", "SRV record (federation on port 8448)"),
    ("none", "none: server name = Matrix host"),
)


@dataclass(frozen=True)
class Domain:
    """The names: both are asked in an upgrade too (they find the deployment and its federation
    test); how they are served is an install's choice (Caddy and DNS are not redone by an upgrade)."""

    server_name: str = key("", "Server name", "user IDs are @alice:example.org; can never change later",
                           step="Domain", check=checks.fqdn, placeholder="example.org")
    matrix_host: str = key("", "Matrix host", "where clients and servers connect: public_baseurl https://matrix_host",
                           step="Domain", check=checks.fqdn, placeholder="matrix.example.org",
                           guide="where clients and servers connect: https://<Matrix host>")
    delegation: str = key(
        "well-known", "Delegation", '"well-known" | "srv" | "none" (matrix_host == server_name)', step="Domain",
        choices=tuple(value for value, _ in DELEGATIONS), options=DELEGATIONS, install_only=True,
        guide="how other servers find the Matrix host from the server name: a small file served at "
              "https://<server name>/.well-known/matrix/server, or a DNS SRV record",
        option_guides=(("well-known", "a small file at https://<server name>/.well-known/matrix/server tells other servers "
                                      "where the Matrix host is"),
                       ("srv", "a DNS SRV record tells other servers where the Matrix host is; they connect on port 8448"),
                       ("none", "the server name is the Matrix host itself: nothing to delegate")),
    )
    serve_server_name: bool = key(True, "Serve server name", "this box's Caddy answers for server_name (.well-known + redirect)",
                                  step="Domain", checkbox="serve the server name from this box too", install_only=True,
                                  guide="this server also answers for the server name: its .well-known files, and the "
                                        "redirect below")
    redirect_to: str = key("", "Redirect others to", "optional: where other requests to server_name go", step="Domain",
                           install_only=True,
                           guide="optional: where other visitors of the server name are sent",
                           check=checks.url, placeholder="https://www.example.org")
    acme_email: str = key("", "ACME e-mail", "optional: Let's Encrypt account e-mail", step="Domain", check=checks.email,
                          install_only=True,
                          placeholder="admin@example.org")
    tls: str = key("acme", "Certificates",
                   '"acme" (Let\'s Encrypt) | "internal" (Caddy\'s own CA, for labs: other servers do not trust it)',
                   step="Domain", choices=("acme", "internal"), group="Certificates", guide="who signs the HTTPS certificates",
                   install_only=True,
                   options=(("acme", "Let's Encrypt (public)"), ("internal", "Caddy's own CA: labs only, others do not trust it")))
    ipv6: bool = key(True, "IPv6 records", "publish AAAA records too when the host has a public IPv6 address",
                     step="Domain", group="IPv6", install_only=True,
                     checkbox="publish AAAA records when the host has a public IPv6 address",
                     guide="other servers then reach this one over IPv6 too; the federation test checks every address")


@dataclass(frozen=True)
class Record:
    name: str
    rtype: str
    value: str
    ttl: int = TTL

    @property
    def zone_line(self) -> str:
        """As in a zone file: `matrix.example.org. 300 IN A 203.0.113.10`."""
        return f"{self.name}. {self.ttl} IN {self.rtype} {self.value}"


def address_record(address: str) -> tuple[str, str]:
    """(record type, value) for the host's address: AAAA for IPv6 (its zone dropped: DNS has
    none), A for IPv4 and for anything not yet an address (the dry run's placeholder)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return "A", address
    return ("AAAA" if ip.version == 6 else "A"), str(ip)


def well_known_server(answers: Answers) -> dict[str, str]:
    return {"m.server": f"{answers.domain.matrix_host}:{answers.federation_port}"}


def well_known_client(answers: Answers) -> dict[str, dict[str, str]]:
    return {"m.homeserver": {"base_url": f"https://{answers.domain.matrix_host}"}}


def to_publish_elsewhere(answers: Answers) -> list[str]:
    """What the site already serving the server name must add, when this box does not serve it
    (`serve_server_name = false`) and delegation goes through .well-known; else nothing."""
    d = answers.domain
    if d.delegation != "well-known" or answers.serves_server_name or d.server_name == d.matrix_host:
        return []
    return [
        f"https://{d.server_name} is served elsewhere: publish these two documents there "
        "(Content-Type: application/json; the client one also with Access-Control-Allow-Origin: *):",
        f"    https://{d.server_name}/.well-known/matrix/server  {json.dumps(well_known_server(answers))}",
        f"    https://{d.server_name}/.well-known/matrix/client  {json.dumps(well_known_client(answers))}",
        "the federation test at the end checks them",
    ]


def well_known_routes(answers: Answers) -> tuple[Respond, ...]:
    """The .well-known answers, as JSON with CORS: the server document only when federation is
    on 443 (otherwise other servers use 8448 or the SRV record, and it must not exist)."""
    headers = (("Content-Type", "application/json"), ("Access-Control-Allow-Origin", "*"))
    server = (Respond("/.well-known/matrix/server", 200, json.dumps(well_known_server(answers)), headers)
              if answers.federation_port == 443 else Respond("/.well-known/matrix/server", 404))
    return server, Respond("/.well-known/matrix/client", 200, json.dumps(well_known_client(answers)), headers)


class Dns(Component):
    name = "dns"
    title = "Names and delegation"
    answers = (Part("domain", Domain),)

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        d = answers.domain
        found: list[tuple[str, str]] = []
        if d.delegation == "none" and d.server_name and d.matrix_host and d.server_name != d.matrix_host:
            found.append(("domain.delegation", f"with no delegation ({mention('domain.delegation', 'none')}), "
                          f"{mention('domain.matrix_host')} must be {mention('domain.server_name')}; or delegate with "
                          f"{mention('domain.delegation', 'well-known')}"))
        if d.delegation != "none" and d.server_name and d.server_name == d.matrix_host:
            found.append(("domain.delegation", f"{mention('domain.matrix_host')} equals {mention('domain.server_name')}, so there "
                          f"is nothing to delegate: choose {mention('domain.delegation', 'none')}"))
        if d.delegation == "srv" and not answers.serves_server_name:
            found.append(("domain.serve_server_name", f"{mention('domain.delegation', 'srv')} needs a certificate for "
                          f"{d.server_name} on this box: {mention('domain.serve_server_name', True)} (its A record must point "
                          f"here too), or {mention('domain.delegation', 'well-known')}"))
        if d.redirect_to and urlsplit(d.redirect_to).hostname == d.server_name and answers.serves_server_name:
            found.append(("domain.redirect_to", f"points back at {d.server_name}, which this box serves: requests would loop; use another host"))
        if d.redirect_to and not answers.serves_server_name:
            found.append(("domain.redirect_to", f"only used when this box serves the server name "
                          f"({mention('domain.serve_server_name', True)}, and {mention('domain.matrix_host')} is not "
                          f"{mention('domain.server_name')})"))
        return found

    def sites(self, d: Deployment) -> list[Site]:
        a = d.answers
        if not a.serves_server_name:
            return []
        redirect = a.domain.redirect_to
        # Inside route { } the directives run in the order written (redir would otherwise run first).
        rest = Redirect(redirect) if redirect else Respond("/*", 404)
        return [Site(a.domain.server_name, f"The server name: delegation answers, then everything else "
                     f"{'redirected' if redirect else 'refused'}.", (*well_known_routes(a), rest), order=30)]

    def routes(self, d: Deployment) -> list[SiteRoutes]:
        a = d.answers
        if a.domain.server_name != a.domain.matrix_host:
            return []
        return [SiteRoutes(a.domain.matrix_host, well_known_routes(a), first=True)]

    def records(self, d: Deployment, address: str) -> list[Record]:
        """A (or AAAA) records for every name this box serves; the SRV record with "srv" delegation."""
        a = d.answers
        rtype, value = address_record(address)
        records = [Record(host, rtype, value) for host in d.hostnames]
        if a.domain.delegation == "srv":
            records.append(Record(f"_matrix-fed._tcp.{a.domain.server_name}", "SRV",
                                  f"0 10 {a.federation_port} {a.domain.matrix_host}."))
        return records

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "install":
            return []
        from installer.components.dns.stages import ensure_aaaa, ensure_records
        from installer.engine import Stage

        stages = [Stage("dns.records", "DNS records", ensure_records, (d.provider.handover(mode),), skippable=True)]
        if d.answers.domain.ipv6:  # the host's own interfaces say whether it has IPv6: after SSH
            stages.append(Stage("dns.aaaa", "DNS AAAA records (IPv6)", ensure_aaaa, ("host.ssh", "dns.records"),
                                skippable=True))
        return stages


COMPONENT = Dns()
