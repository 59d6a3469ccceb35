"""What a deployment publishes so that clients and other servers find it: the DNS records, and the
.well-known documents for the server name. The DNS stage, the Caddyfile, the guided setup's
preview and the instructions for a site served elsewhere all take them from here."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from installer.answers import Answers

TTL = 300


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


def wanted_records(answers: Answers, address: str) -> list[Record]:
    """The records this deployment needs, given the host's public address."""
    d = answers.domain
    rtype, value = address_record(address)
    records = [Record(d.matrix_host, rtype, value)]
    if answers.serves_server_name:
        records.append(Record(d.server_name, rtype, value))
    if d.delegation == "srv":
        records.append(Record(f"_matrix-fed._tcp.{d.server_name}", "SRV", f"0 10 {answers.federation_port} {d.matrix_host}."))
    return records


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
