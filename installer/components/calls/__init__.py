"""Calls: a TURN server (coturn) so that calls connect when both ends sit behind NAT, and the
homeserver telling clients where it is.

coturn comes from the OS's own packages and runs under systemd on the host's network, not in a
container: the relay needs a range of UDP ports on the host's own address (Docker would put a
second NAT and a userland proxy per port in front of them), Ubuntu and Debian ship coturn 4.6
with security updates that `--upgrade` already applies (OS packages), and systemd caps its
memory, CPU share and tasks so that it cannot starve Synapse. Its package would start it at once
with anonymous access: the unit is masked until our configuration is in place.

The homeserver hands clients short-lived credentials made from a secret it shares with coturn
(the TURN REST API: coturn's `use-auth-secret`). The secret is generated on the host, kept in a
root-only file, and reaches coturn's config (root:turnserver 0640) and Synapse's; it is never in
the answers, the state, a log or the dry run.

Behind Oracle's 1:1 NAT the public address is not on any interface: coturn is told it
(`external-ip`) and relays from the private address the NAT maps to it (`relay-ip`). Relays to
private, loopback, link-local (the cloud metadata address) and unique-local addresses, and to the
host's own network (Oracle: the VCN), are refused.

Element Call (MatrixRTC with a LiveKit SFU) would join this section: see the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installer import checks
from installer.components.base import BackupFiles, Component, Port
from installer.components.homeserver import TurnSettings
from installer.host.layout import in_project
from installer.sections import Part, key

if TYPE_CHECKING:
    from collections.abc import Mapping

    from installer.answers import Answers
    from installer.components.base import BackupItem, Mode
    from installer.deployment import Deployment
    from installer.engine import Stage

TURN_PORT = 3478
TLS_PORT = 5349
SECRET_NAME = "turn.secret"
SECRET_FILE = in_project(SECRET_NAME)
"""Root-only (0600): the secret coturn and the homeserver share (never in the answers or state)."""
DEPLOYED_FACT = "turn.deployed"
"""State fact: coturn was set up on this host (an upgrade keeps the homeserver's TURN settings)."""
RELAY_PORTS = "49152-49200"
MAX_RELAY_PORTS = 10000


def relay_span(text: str) -> tuple[int, int] | None:
    """(low, high) of "low-high", or None when it is not a range of unprivileged ports."""
    low, dash, high = text.partition("-")
    first, last = checks.port_text(low), checks.port_text(high)
    if not dash or first is None or last is None:
        return None
    return (first, last) if 1024 <= first < last else None


def _relay_ports(value: object) -> str | None:
    if not isinstance(value, str) or relay_span(value) is None:
        return 'must be a range of ports above 1023 such as "49152-49200" (low-high, low < high)'
    low, high = relay_span(value)  # type: ignore[misc]
    if high - low + 1 > MAX_RELAY_PORTS:
        return f"is {high - low + 1:,} ports: {MAX_RELAY_PORTS:,} at most (each call takes one or two)"
    if low <= TLS_PORT <= high or low <= TURN_PORT <= high:
        return f"must not hold TURN's own ports {TURN_PORT} and {TLS_PORT}"
    return None


def _turn(answers: Answers) -> bool:
    return answers.calls.turn


@dataclass(frozen=True)
class CallsKeys:
    turn: bool = key(True, "Calls (TURN)", "coturn: UDP/TCP 3478, TLS 5349, the relay range below", step="Server",
                     checkbox="relay calls through this server (TURN)",
                     guide="most people sit behind NAT, as the server itself does on Oracle Cloud: without a TURN "
                           "server many calls never connect")
    relay_ports: str = key(RELAY_PORTS, "Relay ports", "UDP ports the relay uses (both firewalls open them)",
                           step="Server", check=_relay_ports, applies=_turn, group="Calls",
                           guide="UDP ports the relay uses, low-high; each call takes one or two. Both firewalls open them")


def turn_uris(answers: Answers) -> tuple[str, ...]:
    """What clients are told: plain TURN over UDP and TCP on 3478, TLS on 5349 with the Matrix
    host's certificate (Caddy's)."""
    host = answers.domain.matrix_host
    return (f"turn:{host}:{TURN_PORT}?transport=udp", f"turn:{host}:{TURN_PORT}?transport=tcp",
            f"turns:{host}:{TLS_PORT}?transport=tcp")


class Calls(Component):
    name = "calls"
    title = "Calls (TURN)"
    answers = (Part("calls", CallsKeys),)

    def enabled(self, answers: Answers, mode: Mode = "install", facts: Mapping[str, Any] | None = None) -> bool:
        if mode == "upgrade":  # what is deployed: coturn itself is upgraded with the OS packages
            return bool((facts or {}).get(DEPLOYED_FACT))
        return mode in ("install", "restore") and _turn(answers)

    def ports(self, d: Deployment) -> list[Port]:
        low, high = relay_span(d.answers.calls.relay_ports) or relay_span(RELAY_PORTS)  # type: ignore[misc]
        return [Port(TURN_PORT, "udp", "TURN"), Port(TURN_PORT, "tcp", "TURN over TCP"),
                Port(TLS_PORT, "tcp", "TURN over TLS"), Port((low, high), "udp", "TURN relay")]

    def homeserver_settings(self, d: Deployment) -> list[object]:
        return [TurnSettings(turn_uris(d.answers), SECRET_FILE)]

    def backup(self, d: Deployment) -> list[BackupItem]:
        return [BackupFiles((SECRET_NAME,))]

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "install":
            return []
        from installer.components.calls import stages as s
        from installer.components.homeserver import AdminCredentials
        from installer.engine import Stage

        return [
            Stage("turn.secret", "TURN shared secret", s.ensure_secret, ("host.ssh",), before=("synapse.config",)),
            Stage("turn.server", "coturn: TURN for calls", s.set_up_coturn, ("turn.secret", "caddy.config")),
            Stage("turn.check", "TURN: a client's allocation; private peers refused", s.check_turn,
                  ("turn.server", "registration.policy"), takes=(AdminCredentials,)),
        ]


COMPONENT = Calls()
