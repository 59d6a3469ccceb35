"""The workers' stages for each mode, and where they sit among the other components' (by `needs`
and `before`): imported when a plan is made, not for the first screen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from installer.components.workers import DEPLOYED, HOSTS_DEPLOYED, _on, layout_of

if TYPE_CHECKING:
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage


def stages_for(d: Deployment, mode: Mode) -> list[Stage]:
    from installer.engine import Stage

    if mode == "install":
        from installer.components.workers import stages as s
        from installer.host.connect import HostSize

        on = _on(d.answers)
        hosts = bool(d.answers.workers.hosts) and on
        found: list[Stage] = []
        if on and d.answers.cloud.provider == "oci" and hosts:
            from installer.components.workers import oci

            if any(h.strip() == "new" for h in d.answers.workers.hosts):
                found.append(Stage("workers.vms", "Oracle Cloud instances for the worker hosts", oci.launch_worker_vms,
                                   ("cloud.instance", "local.ssh_key"), before=("workers.plan",)))
            found.append(Stage("workers.ingress", "Security list: the worker hosts and the main host reach each other",
                               oci.open_private_ingress, ("workers.plan",), before=("workers.hosts",)))
        if on:
            found += [
                Stage("workers.plan", "Workers: which run where", s.plan, ("host.ssh",), takes=(HostSize,),
                      before=("host.docker", "host.firewall", "host.caddy")),
                Stage("workers.config", "Workers: Redis, secrets and each worker's config", s.configure,
                      ("workers.plan", "synapse.config"), before=("services.start",)),
            ]
        found.append(Stage("workers.firewall", "Workers: private ports admit only the worker hosts", s.open_to_worker_hosts,
                           (*(("workers.plan",) if on else ()), "host.docker", "host.firewall"),
                           before=("services.start",)))
        if hosts or d.facts.get(HOSTS_DEPLOYED):
            found.append(Stage("workers.hosts", "Worker hosts: Docker and their workers running", s.run_on_hosts,
                               ("services.start", "workers.firewall")))
        if on:
            found.append(Stage("workers.check", "Workers: Redis and every worker answer", s.check,
                               ("services.start", "caddy.config",
                                *(("workers.hosts",) if hosts or d.facts.get(HOSTS_DEPLOYED) else ()))))
        elif d.facts.get(DEPLOYED):
            found.append(Stage("workers.remove", "Workers taken away (one Synapse process again)", s.remove,
                               ("services.start", "caddy.config", "workers.firewall",
                                *(("workers.hosts",) if d.facts.get(HOSTS_DEPLOYED) else ()))))
        return found
    if mode == "upgrade" and layout_of(d).workers:
        from installer.components.upgrade.findings import Findings
        from installer.components.workers import upgrade as u

        return [
            Stage("workers.preflight", "Workers: the same Synapse version as the main process", u.same_version,
                  ("upgrade.preflight",), takes=(Findings,), before=("upgrade.backup",)),
            Stage("workers.stop", "Workers stopped while the main process upgrades", u.stop,
                  ("upgrade.reboot",), takes=(Findings,), before=("upgrade.images",)),
            Stage("workers.start", "Workers started on the new version, everywhere", u.start,
                  ("upgrade.images",), takes=(Findings,), before=("upgrade.prune",)),
        ]
    return []
