"""Which stages run, in which order, for each mode. The one list both front-ends show.

Stage bodies live in `installer.stages.<area>` and are imported only when a stage first runs,
so `--help` and the first screen do not pay for asyncssh, the oci SDK or httpx.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from installer.answers import Answers
from installer.engine import Stage, StageContext
from installer.events import Status


def _lazy(target: str) -> Callable[[StageContext], Awaitable[Status | None]]:
    module_name, _, func_name = target.partition(":")

    async def run(ctx: StageContext) -> Status | None:
        module = importlib.import_module(f"installer.stages.{module_name}")
        return await getattr(module, func_name)(ctx)

    run.__qualname__ = target
    return run


def _stage(name: str, title: str, target: str, needs: tuple[str, ...] = (), skippable: bool = False) -> Stage:
    return Stage(name, title, _lazy(target), needs, skippable)


def install_plan(answers: Answers) -> list[Stage]:
    """Every stage of an install, cloud first when the provider is Oracle Cloud."""
    on_oci = answers.cloud.provider == "oci"
    ports = "80/443" + ("/8448" if answers.federation_port == 8448 else "")
    stages = [_stage("local.ssh_key", "SSH key pair on this machine", "local:ensure_ssh_key")]
    if on_oci:
        stages += [
            _stage("cloud.network", "Network: VCN and public subnet", "cloud:ensure_network"),
            _stage("cloud.ingress", f"Security list: ingress {ports}", "cloud:open_ingress_ports", ("cloud.network",)),
            _stage("cloud.instance", "Ubuntu VM with a public IP", "cloud:launch_instance", ("cloud.network", "local.ssh_key")),
        ]
    host_needs = ("cloud.instance",) if on_oci else ("local.ssh_key",)
    stages += [
        _stage("dns.records", "DNS A records", "dns:ensure_records", host_needs, skippable=True),
        _stage("host.ssh", "SSH to the host (verified host key)", "host:connect", host_needs),
        _stage("host.firewall", f"Host firewall: {ports} before the REJECT", "host:open_firewall", ("host.ssh",)),
        _stage("host.caddy", "Caddy installed and running", "host:install_caddy", ("host.ssh",)),
        _stage("host.docker", "Docker engine and compose", "host:install_docker", ("host.ssh",)),
        _stage("synapse.config", "Synapse configuration", "synapse:configure", ("host.docker",)),
        _stage("synapse.start", "Synapse container running and healthy", "synapse:start", ("synapse.config",)),
        _stage("caddy.config", "Caddy reverse proxy and .well-known", "caddy:configure", ("host.caddy", "host.firewall")),
        _stage("synapse.admin", "Admin account", "synapse:create_admin", ("synapse.start",)),
        _stage("registration.policy", "Registration policy", "registration:apply_policy", ("synapse.admin",)),
    ]
    fed_needs = ("caddy.config", "registration.policy", "dns.records") + (("cloud.ingress",) if on_oci else ())
    stages.append(_stage("federation.check", "Federation test", "federation:check", fed_needs))
    return stages


def upgrade_plan(answers: Answers) -> list[Stage]:
    """Upgrade: find the deployment, back up, upgrade, prove it still federates."""
    return [
        _stage("local.ssh_key", "SSH key pair on this machine", "local:ensure_ssh_key"),
        _stage("host.ssh", "SSH to the host (verified host key)", "host:connect", ("local.ssh_key",)),
        _stage("upgrade.preflight", "What will change", "upgrade:preflight", ("host.ssh",)),
        _stage("upgrade.backup", "Backup of Synapse's data", "upgrade:backup", ("upgrade.preflight",)),
        _stage("upgrade.packages", "OS packages", "upgrade:upgrade_packages", ("upgrade.backup",)),
        _stage("upgrade.reboot", "Reboot if the OS asks", "upgrade:reboot_if_required", ("upgrade.packages",)),
        _stage("upgrade.synapse", "Synapse image pulled and recreated", "upgrade:upgrade_synapse", ("upgrade.reboot",)),
        _stage("upgrade.prune", "Old images removed", "upgrade:prune_images", ("upgrade.synapse",), skippable=True),
        _stage("federation.check", "Federation test", "federation:check", ("upgrade.synapse",)),
    ]


def check_only_plan(answers: Answers) -> list[Stage]:
    return [_stage("federation.check", "Federation test", "federation:check")]


def plan_for(mode: str, answers: Answers) -> list[Stage]:
    return {"install": install_plan, "upgrade": upgrade_plan, "check": check_only_plan}[mode](answers)
