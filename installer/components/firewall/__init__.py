"""The host's firewall: every port the deployment declares (installer.components.base.Port),
opened in iptables above the REJECT rule Oracle's images end with, and persisted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from installer.components.base import Component

if TYPE_CHECKING:
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage


class Firewall(Component):
    name = "firewall"
    title = "Host firewall"

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "install":
            return []
        from installer.components.firewall.stages import open_firewall
        from installer.engine import Stage

        return [Stage("host.firewall", f"Host firewall: {d.ports_title()} before the REJECT", open_firewall, ("host.ssh",))]


COMPONENT = Firewall()
