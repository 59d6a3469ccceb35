"""What a person running a server on Oracle Cloud's Always Free tier must know: the idle-reclaim rule.

Oracle stops an Always Free instance that stays idle for 7 days: CPU (95th percentile), network
and, for A1 shapes, memory all under 20% (docs.oracle.com, Content/FreeTier/
freetier_topic-Always_Free_Resources.htm, "Reclamation of Idle Compute Instances"). A small Matrix
server with a few users is exactly that. The instance is stopped, not deleted; Pay As You Go
accounts are exempt and keep their Always Free resources free. The installer says so plainly and
never ships a keep-alive that burns CPU to look busy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from installer.answers import Answers

IDLE_TITLE = "Oracle stops idle Always Free instances"


def idle_reclaim_notice(answers: Answers) -> list[str]:
    """The notice as plain lines for this setup; empty when the server is not on Oracle Cloud."""
    if answers.cloud.provider != "oci":
        return []
    measures = "CPU, network and memory" if ".A1." in answers.cloud.shape else "CPU and network"
    server = answers.domain.server_name or "SERVER_NAME"
    return [
        f"If its {measures} stay under 20% for 7 days, Oracle stops the VM. A small Matrix server with a "
        "few users is that quiet.",
        "It is stopped, not deleted: start it again in the console (Compute > Instances > Start); "
        f"`matrix-installer --check {server}` reports its state.",
        "To be exempt, upgrade the account to Pay As You Go: Always Free resources stay free. Do not run a "
        "CPU-burning keep-alive to look busy.",
    ]
