"""The contract a provider fills in: where the host comes from. A provider's stages end by handing
over the host: its address, the SSH user, and a host key the installer can vouch for (kept in
the state as host.address and host.host_key). Everything after that is the same wherever the
host came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from installer.sections import Part

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.components.base import Mode
    from installer.components.dns import Record
    from installer.deployment import Deployment
    from installer.engine import Stage, StageContext
    from installer.options import RunOptions


def os_release(version: str, arch: str) -> str:
    """/etc/os-release of an Ubuntu release, with the architecture line connect.py asks for."""
    codename = {"22.04": "jammy", "24.04": "noble"}.get(version, "")
    return (f'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="{version}"\nVERSION_CODENAME={codename}\n'
            f'PRETTY_NAME="Ubuntu {version} LTS"\nARCH={arch}\n')


class Provider:
    name: ClassVar[str]
    choice: ClassVar[str]
    """How the Cloud step offers it ("Oracle Cloud: a new Always Free VM")."""
    answers: ClassVar[tuple[Part, ...]] = ()
    handover_stage: ClassVar[str] = "local.ssh_key"
    """The stage of an install after which the host's address and key are known: what host.ssh
    and DNS need. (Other modes work on a host that exists: its key pair is all they wait for.)"""
    makes_host: ClassVar[bool] = False
    """The host is new: SSH may refuse the key until its first boot has installed it."""
    ssh_wait_seconds: ClassVar[float] = 90.0

    def handover(self, mode: Mode) -> str:
        return self.handover_stage if mode == "install" else "local.ssh_key"

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        return []

    def problems_before_run(self, answers: Answers, options: RunOptions) -> list[str]:
        """What this machine lacks for a run (the provider's credentials, say)."""
        return []

    def where(self, answers: Answers) -> str:
        """The host, in a sentence ("a new Oracle Cloud VM")."""
        return f"the server {answers.ssh.host}" if answers.ssh.host else "the server"

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        return []

    def assumed_os_release(self, answers: Answers) -> str:
        """What a dry run takes /etc/os-release (and the architecture) to say: it reads nothing.
        A server of the user's own: the commonest, Ubuntu LTS on amd64."""
        return os_release("24.04", "amd64")

    def assumed_input_rules(self, tool: str) -> str:
        """What a dry run takes `iptables -S INPUT` (or ip6tables) to list: a host with no firewall rules."""
        return "-P INPUT ACCEPT\n"

    async def host_address(self, ctx: StageContext) -> str:
        """The host's public address, for its DNS records."""
        raise NotImplementedError

    async def private_networks(self, ctx: StageContext) -> list[str]:
        """The address ranges (CIDR) of the network the host sits in, besides the private ranges
        every host denies anyway: a TURN relay must never reach them (Oracle: the VCN's)."""
        return []

    async def check_notes(self, server_name: str, options: RunOptions) -> list[tuple[str, str]]:
        """For `--check`: (kind, line) notes on a deployment of this provider's that the state knows
        (Oracle Cloud: whether its instance runs); nothing for one that is not its own."""
        return []

    async def publish_records(self, ctx: StageContext, records: list[Record]) -> tuple[list[Record], bool]:
        """Set the records the provider's own DNS serves; returns those left for the user to
        create, and whether anything changed. By default the user creates them all."""
        return records, False
