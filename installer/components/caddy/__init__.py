"""Caddy, the reverse proxy in front of everything: it obtains and renews a certificate for
every site by itself. It declares the Matrix host's site (other components add their routes to
it), the global options, and the ports its sites listen on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from installer.components.base import Component, Port, Site

if TYPE_CHECKING:
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage


def listening_ports(d: Deployment) -> list[int]:
    """80 (ACME's HTTP challenge, and the redirect to HTTPS), 443, and any port a site names."""
    ports = [80, 443]
    for site in d.sites:
        port = site.address.rsplit(":", 1)[-1]
        if port.isdigit() and int(port) not in ports:
            ports.append(int(port))
    return ports


class Caddy(Component):
    name = "caddy"
    title = "Caddy reverse proxy"

    def ports(self, d: Deployment) -> list[Port]:
        return [Port(port, "tcp", "Caddy") for port in listening_ports(d)]

    def sites(self, d: Deployment) -> list[Site]:
        return [Site(d.answers.domain.matrix_host, "Clients, and other servers with .well-known delegation, come in here.", order=10)]

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "install":
            return []
        from installer.components.caddy import stages as s
        from installer.engine import Stage

        return [
            Stage("host.caddy", "Caddy installed and running", s.install_caddy, ("host.ssh",)),
            Stage("caddy.config", "Caddy reverse proxy and .well-known", s.configure, ("host.caddy", "host.firewall")),
        ]


COMPONENT = Caddy()
