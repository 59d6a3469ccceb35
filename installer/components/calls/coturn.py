"""coturn's configuration and what the host says about its network, as plain functions: the
stages (calls/stages.py) run the commands, these read their output and write the files.

Every value written here is checked first (an address is an address, the realm a host name, the
secret URL-safe): turnserver.conf has no quoting, so nothing else may reach it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from installer import checks
from installer.host.layout import BIN

CONFIG = "/etc/turnserver.conf"
DROP_IN = "/etc/systemd/system/coturn.service.d/matrix-installer.conf"
CERT_DIR = "/etc/coturn/certs"
CERT = f"{CERT_DIR}/cert.pem"
KEY = f"{CERT_DIR}/privkey.pem"
CERT_SCRIPT = f"{BIN}/matrix-turn-certificates"
CERT_UNIT = "matrix-turn-certificates"
CERT_SERVICE = f"/etc/systemd/system/{CERT_UNIT}.service"
CERT_TIMER = f"/etc/systemd/system/{CERT_UNIT}.timer"
CADDY_CERTIFICATES = "/var/lib/caddy/.local/share/caddy/certificates"
"""Where Caddy (Debian's and Caddy's own package: HOME=/var/lib/caddy) keeps the certificates it
obtains, one folder per issuer: certificates/<issuer>/<host>/<host>.crt and .key."""
USER_QUOTA = 12
"""Relayed streams a user may hold at once: 4 per video call, so 3 calls."""

DENIED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network': 0.0.0.0 reaches the host itself"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space: carrier NAT, overlay VPNs"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, and the cloud metadata service at 169.254.169.254"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking, used inside networks"),
    ("240.0.0.0/4", "reserved, and the broadcast address"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped: any IPv4 address, private ones too"),
    ("64:ff9b::/96", "NAT64: IPv4 through a translator"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard"),
    ("2001::/23", "IETF protocol assignments (Teredo embeds IPv4)"),
    ("2002::/16", "6to4: embeds IPv4 addresses"),
    ("fc00::/7", "unique local (IPv6 ULA)"),
    ("fe80::/10", "link-local"),
)
"""Peers a relay must never reach (multicast is refused by no-multicast-peers, the unspecified
addresses 0.0.0.0/8 and :: by coturn itself). The documentation ranges (192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24) are not here: nothing answers there on the internet, and nothing
of the host's is there either.

No range may start at :: (as "::/127" would): coturn takes a range whose first address is "any"
as starting below every address, of either family, so "::-::1" refuses every IPv4 peer."""

_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")


class ConfigProblem(ValueError):
    """A value that must not reach turnserver.conf."""


@dataclass(frozen=True)
class Nat:
    """How the host reaches the internet: `private` is None when the public address is on one of
    its interfaces (no NAT), else the address the NAT maps the public one to."""

    public: str
    private: str | None

    def describe(self) -> str:
        if self.private is None:
            return f"the public address {self.public} is on an interface: no NAT mapping needed"
        return f"behind NAT: public {self.public} maps to this host's {self.private}"


def address_range(network: str) -> str:
    """coturn's "first-last" form of a network ("10.0.0.0/8" -> "10.0.0.0-10.255.255.255")."""
    net = ipaddress.ip_network(network, strict=False)
    first, last = net.network_address, net.broadcast_address
    return str(first) if first == last else f"{first}-{last}"


def denied_ranges(networks: list[str] = ()) -> list[tuple[str, str]]:
    """(range, why) for every denied-peer-ip line: the fixed list, then the host's own networks
    (Oracle: the VCN) that the fixed list does not already cover."""
    found = [(address_range(net), why) for net, why in DENIED]
    fixed = [ipaddress.ip_network(net) for net, _ in DENIED]
    for text in networks:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigProblem(f"{text!r} is not a network") from None
        if not any(net.version == f.version and net.subnet_of(f) for f in fixed):  # type: ignore[arg-type]
            if net.network_address.is_unspecified:
                raise ConfigProblem(f"{text} starts at the unspecified address: coturn would refuse every peer")
            found.append((address_range(str(net)), "the host's own network"))
    return found


def _ip(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigProblem(f"{what} {value!r} is not an IP address") from None


def render_config(*, realm: str, secret: str, relay: tuple[int, int], nat: Nat | None, networks: list[str] = ()) -> str:
    """/etc/turnserver.conf: TURN REST API credentials only (no anonymous use), TLS with the
    Matrix host's certificate, the relay range, the NAT mapping, the peers it must never reach."""
    if checks.fqdn(realm) is not None:
        raise ConfigProblem(f"realm {realm!r} is not a host name")
    if not _SECRET.fullmatch(secret):
        raise ConfigProblem("the shared secret is not URL-safe text of 32 to 128 characters")
    low, high = int(relay[0]), int(relay[1])
    if not 1024 <= low < high <= 65535:
        raise ConfigProblem(f"relay range {low}-{high} is not a range of unprivileged ports")
    lines = [
        "# Managed by matrix-installer: edit the answers and rerun instead of editing this file.",
        "# TURN for Matrix calls. Synapse hands clients short-lived credentials made from the",
        "# shared secret below (the TURN REST API); nobody gets in without them.",
        "",
        "listening-port=3478",
        "tls-listening-port=5349",
        f"min-port={low}",
        f"max-port={high}",
        f"realm={realm}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        "",
        "# TLS (turns: on 5349) with the certificate Caddy obtains for the Matrix host, copied here",
        f"# by {CERT_SCRIPT}; DTLS is off (its UDP port is not opened).",
        f"cert={CERT}",
        f"pkey={KEY}",
        "no-dtls",
        "no-tlsv1",
        "no-tlsv1_1",
    ]
    if nat is not None and nat.private is not None:
        public, private = _ip(nat.public, "public address"), _ip(nat.private, "private address")
        lines += [
            "",
            f"# Behind 1:1 NAT: the public address {public} is on no interface. Relays go out from the",
            "# private address the NAT maps to it, and clients are told the public one. (Not the",
            "# external-ip=PUBLIC/PRIVATE form: coturn allows relaying to the private part of that",
            "# mapping, which would reach the host's own services past the denied peers below.)",
            f"relay-ip={private}",
            f"external-ip={public}",
        ]
    lines += [
        "",
        "# Calls are UDP: no relaying to TCP services at all; no multicast; no telnet console;",
        "# no version in answers; STUN as RFC 5389, without the amplification-prone extras.",
        "no-tcp-relay",
        "no-multicast-peers",
        "no-cli",
        "no-software-attribute",
        "fingerprint",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        "response-origin-only-with-rfc5780",
        f"user-quota={USER_QUOTA}",
        f"total-quota={high - low + 1}",
        "syslog",
        "",
        "# Peers a relay must never reach: private, loopback, link-local (cloud metadata), unique-local.",
    ]
    for span, why in denied_ranges(list(networks)):
        lines += [f"# {why}", f"denied-peer-ip={span}"]
    return "\n".join(lines) + "\n"


def static_secret(text: str) -> str | None:
    """static-auth-secret's value in a turnserver.conf, or None."""
    m = re.search(r"^static-auth-secret=(\S+)\s*$", text, re.M)
    return m.group(1) if m else None


# --- what the host says -----------------------------------------------------------------------

def interface_addresses(listing: str) -> list[str]:
    """The addresses in `ip -o addr show` ("2: eth0    inet 10.0.0.2/24 brd ...")."""
    found = []
    for line in listing.splitlines():
        words = line.split()
        for i, word in enumerate(words[:-1]):
            if word in ("inet", "inet6"):
                found.append(words[i + 1].split("/")[0])
    return found


def route_source(text: str) -> str | None:
    """The source address in `ip route get ADDRESS` ("203.0.113.9 via 10.0.0.1 dev ens3 src 10.0.0.2 uid 0")."""
    words = text.split()
    for i, word in enumerate(words[:-1]):
        if word == "src":
            return words[i + 1] if checks.is_ip_address(words[i + 1]) else None
    return None


def nat_for(public: str, addresses: list[str], source: str | None) -> Nat:
    """The NAT mapping the host needs: none when the public address is on an interface."""
    if public in addresses:
        return Nat(public, None)
    return Nat(public, source)


# --- the certificate for TLS ------------------------------------------------------------------

def certificate_script(host: str) -> str:
    """Copies the certificate and key Caddy obtained for `host` where coturn reads them (root,
    group turnserver, 0640), when they changed; with --restart it restarts coturn after a copy (its
    TLS certificates are read at start). Prints "copied", "unchanged" or "missing"."""
    if checks.fqdn(host) is not None:
        raise ConfigProblem(f"{host!r} is not a host name")
    return f"""#!/bin/sh
# Managed by matrix-installer: the certificate Caddy obtains (and renews) for {host},
# copied for coturn's TLS listener (turns: on 5349). Run daily by {CERT_UNIT}.timer.
set -eu
host={host}
crt=$(ls -t {CADDY_CERTIFICATES}/*/"$host"/"$host".crt 2>/dev/null | head -n 1 || true)
if [ -z "$crt" ] || [ ! -s "${{crt%.crt}}.key" ]; then
    echo missing
    exit 0
fi
install -d -m 0750 -o root -g turnserver {CERT_DIR}
changed=0
for pair in "$crt:{CERT}" "${{crt%.crt}}.key:{KEY}"; do
    from=${{pair%%:*}}
    to=${{pair#*:}}
    if ! cmp -s "$from" "$to"; then
        install -m 0640 -o root -g turnserver "$from" "$to.new"
        mv -f "$to.new" "$to"
        changed=1
    fi
done
if [ "$changed" = 1 ]; then
    echo copied
    if [ "${{1:-}}" = "--restart" ]; then systemctl try-restart coturn; fi
else
    echo unchanged
fi
"""


CERT_SERVICE_TEXT = f"""# Managed by matrix-installer
[Unit]
Description=Copy the Matrix host's certificate from Caddy to coturn
After=caddy.service

[Service]
Type=oneshot
ExecStart={CERT_SCRIPT} --restart
"""

CERT_TIMER_TEXT = f"""# Managed by matrix-installer: Caddy renews certificates a month before they expire.
[Unit]
Description=Copy the Matrix host's certificate from Caddy to coturn, daily

[Timer]
OnBootSec=5min
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""

DROP_IN_TEXT = """# Managed by matrix-installer: calls must never starve the homeserver.
[Service]
MemoryHigh=96M
MemoryMax=160M
CPUWeight=20
CPUQuota=100%
TasksMax=64
LimitNOFILE=16384
"""


# --- a TURN client's words (turnutils_uclient -v) --------------------------------------------

def relay_addresses(output: str) -> list[str]:
    """The relayed addresses the server allocated ("IPv4. Received relay addr: 203.0.113.9:49160")."""
    return re.findall(r"Received relay addr: (\S+)", output)


def forbidden(output: str) -> bool:
    """Whether the server refused a peer ("channel bind: error 403 (Forbidden IP)")."""
    return "403 (Forbidden IP)" in output


def allocation_refused(output: str) -> bool:
    return "Cannot complete Allocation" in output
