"""Docker with the compose v2 plugin, and the compose project every containerized component
runs in (its services are the deployment's: installer.deployment.Deployment.services)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from installer.components.base import Component

if TYPE_CHECKING:
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage


class Docker(Component):
    name = "docker"
    title = "Docker and compose"

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "install":
            return []
        from installer.components.docker import stages as s
        from installer.engine import Stage
        from installer.host.connect import HostOS, HostSize

        return [
            Stage("host.docker", "Docker engine and compose", s.install_docker, ("host.ssh",), takes=(HostOS,)),
            Stage("services.start", "Containers running and ready", s.start_services, ("host.docker",), takes=(HostSize,)),
        ]


COMPONENT = Docker()
