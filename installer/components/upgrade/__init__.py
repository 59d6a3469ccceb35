"""Upgrade mode's own steps: find the deployment and say what will change, back it up (what each
component says a backup holds), OS packages, the reboot the OS asks for, every service's image,
and old images pruned. Components add their own upgrade steps between these (a database move)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from installer import checks
from installer.components.base import Component
from installer.sections import Part, key

if TYPE_CHECKING:
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage


@dataclass(frozen=True)
class UpgradeKeys:
    reboot: str = key("ask", "Reboot when needed", '"ask" | "yes" | "no" when the OS wants a reboot (headless: "ask" means no)',
                      step="Server", choices=("ask", "yes", "no"), group="Upgrades",
                      guide="when an upgrade leaves the OS asking for a reboot",
                      options=(("ask", "ask me (with no one to ask: no)"), ("yes", "reboot"), ("no", "never: I reboot it myself")))
    keep_backups: int = key(3, "Backups to keep", "backups kept on the host", step="Server", check=checks.int_range(1, 100),
                            group="Upgrades")


class Upgrade(Component):
    name = "upgrade"
    title = "Upgrades"
    answers = (Part("upgrade", UpgradeKeys),)

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode != "upgrade":
            return []
        from installer.components.upgrade import stages as s
        from installer.components.upgrade.findings import BackupMade, Findings, ReplacedImages
        from installer.engine import Stage

        return [
            Stage("upgrade.preflight", "What will change", s.preflight, ("host.ssh",), gives=(Findings,)),
            Stage("upgrade.backup", "Backup of the server's data", s.backup, ("upgrade.preflight",),
                  gives=(BackupMade,), takes=(Findings,)),
            Stage("upgrade.packages", "OS packages", s.upgrade_packages, ("upgrade.backup",), takes=(Findings,)),
            Stage("upgrade.reboot", "Reboot if the OS asks", s.reboot_if_required, ("upgrade.packages",)),
            Stage("upgrade.images", "Container images pulled and recreated", s.upgrade_images, ("upgrade.reboot",),
                  gives=(ReplacedImages,), takes=(Findings, BackupMade)),
            Stage("upgrade.prune", "Old images removed", s.prune_images, ("upgrade.images",), skippable=True,
                  takes=(ReplacedImages,)),
        ]


COMPONENT = Upgrade()
