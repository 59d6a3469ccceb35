"""Reaching the host: the SSH key pair the installer logs in with, the verified connection (no
trust on first use), and where the host's packages come from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from installer import checks
from installer.components.base import Component
from installer.sections import Part, key

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage


def _existing(answers: Answers) -> bool:
    return answers.cloud.provider == "existing"


@dataclass(frozen=True)
class Packages:
    source: str = key("vendor", "Package source", '"vendor" (Caddy\'s and Docker\'s apt repos) | "distro" (the OS\'s own packages)',
                      step="Cloud", choices=("vendor", "distro"), group="Packages", install_only=True,
                      guide="where Caddy and Docker are installed from",
                      options=(("vendor", "Caddy's and Docker's own repositories"), ("distro", "the OS's own packages")))


@dataclass(frozen=True)
class Ssh:
    host: str = key("", "Server address", 'required for "existing"; filled in from the cloud otherwise', step="Cloud",
                    check=checks.ssh_host, applies=_existing, guide="the server's public IP address or host name",
                    placeholder="203.0.113.10")
    port: int = key(22, "SSH port", "SSH port", step="Cloud", check=checks.port, applies=_existing)
    user: str = key("ubuntu", "SSH user", "login user (sudo without a password)", step="Cloud", applies=_existing,
                    check=checks.name(r"[a-z_][a-z0-9_-]{0,31}", "a Unix user name (a-z, 0-9, _ -)"))
    private_key: str = key("~/.ssh/id_ed25519", "SSH private key",
                           "ed25519 pair created (0600) when missing (install only); for \"existing\", the run then stops "
                           "saying how to add it to the server", step="Keys",
                           check=checks.path, guide="")
    host_key: str = key("", "Host key pin", 'the server\'s SSH host key, "ssh-ed25519 AAAA..." (required for "existing")',
                        step="Keys", check=checks.ssh_public_key)


class Access(Component):
    name = "access"
    title = "SSH access"
    answers = (Part("packages", Packages), Part("ssh", Ssh))

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode == "check":
            return []
        from installer.components.access.key_pair import ensure_ssh_key
        from installer.engine import Stage
        from installer.host.connect import HostOS, HostSize, connect

        return [
            Stage("local.ssh_key", "SSH key pair on this machine", ensure_ssh_key),
            Stage("host.ssh", "SSH to the host (verified host key)", connect, (d.provider.handover(mode),), gives=(HostOS, HostSize)),
        ]


COMPONENT = Access()
