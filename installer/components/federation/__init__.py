"""The proof: the installer's own federation test (installer.federation), the last stage of every
mode, run once everything before it has finished."""

from __future__ import annotations

from typing import TYPE_CHECKING

from installer.components.base import Component

if TYPE_CHECKING:
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage



class Federation(Component):
    name = "federation"
    title = "Federation test"

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        if mode == "backup":  # a backup taken now changes nothing the world sees
            return []
        from installer.components.federation.check import check
        from installer.components.homeserver import AdminCredentials
        from installer.engine import Stage

        from installer.deployment import EVERY_OTHER

        takes = (AdminCredentials,) if mode == "install" else ()
        return [Stage("federation.check", "Federation test", check, (EVERY_OTHER,), takes=takes)]


COMPONENT = Federation()
