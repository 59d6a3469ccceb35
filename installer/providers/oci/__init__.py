"""Oracle Cloud: a new Always Free VM, its network and its ingress rules, through the real oci SDK
(installer.cloud). The stages are in providers/oci/stages.py; this module is the declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from installer import checks
from installer.providers.base import Provider
from installer.sections import Part, key

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.components.base import Mode
    from installer.components.dns import Record
    from installer.deployment import Deployment
    from installer.engine import Stage, StageContext
    from installer.options import RunOptions

FLEX = "VM.Standard.A1.Flex"
MICRO = "VM.Standard.E2.1.Micro"
MORE = "More Oracle Cloud settings"


ORACLE_IMAGE_RULES = {
    "iptables": "-P INPUT ACCEPT\n-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p icmp -j ACCEPT\n"
                "-A INPUT -i lo -j ACCEPT\n-A INPUT -p udp -m udp --sport 123 -j ACCEPT\n"
                "-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT\n"
                "-A INPUT -j REJECT --reject-with icmp-host-prohibited\n",
    "ip6tables": "-P INPUT ACCEPT\n-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p ipv6-icmp -j ACCEPT\n"
                 "-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT\n"
                 "-A INPUT -j REJECT --reject-with icmp6-adm-prohibited\n",
}
"""The INPUT chain of Oracle's Ubuntu images: SSH, then a catch-all REJECT."""


def _on_oci(answers: Answers) -> bool:
    return answers.cloud.provider == "oci"


def _flex(answers: Answers) -> bool:
    return _on_oci(answers) and answers.cloud.shape.endswith(".Flex")


def _oci_key(default, label, help, **more):
    return key(default, label, help, step="Cloud", applies=more.pop("applies", _on_oci), install_only=True, **more)


@dataclass(frozen=True)
class OciKeys:
    oci_config: str = _oci_key("~/.oci/config", "OCI config file", "the OCI CLI/SDK config file", check=checks.path)
    oci_profile: str = _oci_key("DEFAULT", "OCI profile", "profile (section) in that file",
                                check=checks.pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
                                                    "a profile name (letters, digits, _ . -, starting with a letter or digit)"))
    compartment_id: str = _oci_key(
        "", "Compartment", "default: the tenancy", group=MORE, placeholder="the tenancy",
        check=checks.pattern(r"ocid1\.[a-z0-9]+\.[a-z0-9-]+\.[a-z0-9-]*\.[a-z0-9._-]+", "an OCID (ocid1.compartment.oc1..xxxx)", optional=True),
    )
    availability_domain: str = _oci_key(
        "", "Availability domain", "default: each in turn", group=MORE, placeholder="each in turn",
        check=checks.pattern(r"[A-Za-z0-9]+:[A-Za-z0-9-]+", 'an availability domain such as "Uocm:PHX-AD-1"', optional=True),
    )
    shape: str = _oci_key(
        FLEX, "Shape",
        f'Always Free: "{FLEX}" (arm64, up to 4 OCPUs / 24 GB) or "{MICRO}" (amd64, 1 GB)',
        choices=(FLEX, MICRO),
        options=((FLEX, "A1.Flex: Arm, up to 4 OCPUs / 24 GB"), (MICRO, "E2.1.Micro: AMD, 1 OCPU / 1 GB")),
        guide="A1.Flex is roomy, but often out of capacity (the installer keeps retrying); "
              "E2.1.Micro's 1 GB is tight for Synapse: a few users at most",
    )
    ocpus: int = _oci_key(2, "OCPUs", "Flex shapes only: 1 to 4 OCPUs free", check=checks.int_range(1, 4), applies=_flex)
    memory_gb: int = _oci_key(12, "Memory (GB)", "Flex shapes only: 1 to 24 GB free", check=checks.int_range(1, 24), applies=_flex,
                              guide="Flex shapes only: 1 to 24 GB free; Synapse is happy with 4 GB or more")
    ubuntu_version: str = _oci_key("24.04", "Ubuntu version", "Canonical Ubuntu release", choices=("22.04", "24.04"))
    instance_name: str = _oci_key(
        "matrix", "VM name", "display name of the VM", group=MORE,
        check=checks.pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", "a name of letters, digits, _ . - (up to 63)"),
    )
    subnet_id: str = _oci_key(
        "", "Subnet", "default: a public subnet found, or a VCN created", group=MORE, placeholder="found or created",
        check=checks.pattern(r"ocid1\.subnet\.[a-z0-9-]+\.[a-z0-9-]*\.[a-z0-9._-]+", "a subnet OCID (ocid1.subnet.oc1...)", optional=True),
    )
    launch_retry_minutes: int = _oci_key(60, "Capacity retry (min)", 'keep retrying "Out of host capacity" this long',
                                         check=checks.int_range(0, 1440), group=MORE)


class Oci(Provider):
    name = "oci"
    choice = "Oracle Cloud: a new Always Free VM"
    answers = (Part("cloud", OciKeys),)
    handover_stage = "cloud.instance"
    makes_host = True
    ssh_wait_seconds = 600.0

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        c = answers.cloud
        if c.provider == self.name and c.shape == FLEX and c.memory_gb < c.ocpus:
            return [("cloud.memory_gb", f"must be at least 1 GB per OCPU ({c.ocpus} OCPUs)")]
        return []

    def problems_before_run(self, answers: Answers, options: RunOptions) -> list[str]:
        """The OCI profile, for a run that launches on Oracle Cloud (an install, or a restore onto a
        new VM; an upgrade only needs SSH)."""
        if answers.cloud.provider != self.name or options.mode not in ("install", "restore"):
            return []
        from installer.cloud.config import check_oci_config

        return check_oci_config(answers.cloud.oci_config, answers.cloud.oci_profile)

    def where(self, answers: Answers) -> str:
        return f"the server {answers.ssh.host}" if answers.ssh.host else "a new Oracle Cloud VM"

    def assumed_os_release(self, answers: Answers) -> str:
        """The image this provider launches: the answers' Ubuntu release, arm64 on A1, amd64 on E2."""
        from installer.providers.base import os_release

        return os_release(answers.cloud.ubuntu_version, "arm64" if answers.cloud.shape == FLEX else "amd64")

    def assumed_input_rules(self, tool: str) -> str:
        return ORACLE_IMAGE_RULES[tool]

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "install":
            return []
        from installer.engine import Stage
        from installer.providers.oci import stages as s

        return [
            Stage("cloud.network", "Network: VCN and public subnet", s.ensure_network),
            Stage("cloud.ingress", f"Security list: ingress {d.ports_title()}", s.open_ingress_ports, ("cloud.network",),
                  ),
            Stage("cloud.instance", "Ubuntu VM with a public IP", s.launch_instance, ("cloud.network", "local.ssh_key")),
        ]

    async def host_address(self, ctx: StageContext) -> str:
        from installer.cloud.api import DryRunCloud
        from installer.engine import StageError

        address = ctx.facts.get("host.address")
        if address:
            return str(address)
        if ctx.dry_run:
            return DryRunCloud.ADDRESS
        raise StageError("the host's public address is not known yet", "the cloud.instance stage must finish first; rerun")

    async def private_networks(self, ctx: StageContext) -> list[str]:
        """The VCN's CIDR blocks, as Oracle says them (the VCN is in the state)."""
        from installer.cloud import CloudError, cloud_for, explain

        vcn_id = ctx.facts.get("cloud.vcn_id")
        if not vcn_id:
            return []
        cloud = await cloud_for(ctx)
        try:
            vcn = await cloud.get_vcn(str(vcn_id))
        except CloudError as exc:
            raise explain(exc, ctx) from None
        return [str(block) for block in (getattr(vcn, "cidr_blocks", None) or [getattr(vcn, "cidr_block", None)]) if block]

    async def check_notes(self, server_name: str, options: RunOptions) -> list[tuple[str, str]]:
        from installer.cloud.instance_state import instance_state_notes

        return await instance_state_notes(server_name, options)

    async def publish_records(self, ctx: StageContext, records: list[Record]) -> tuple[list[Record], bool]:
        from installer.providers.oci.dns import set_in_oci_dns

        return await set_in_oci_dns(ctx, records)


PROVIDER = Oci()
