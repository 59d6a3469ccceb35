"""The box the server runs on: a swap file offered on small boxes and, on Postgres, Synapse's state
tables compressed nightly (install), and `--check`'s server health section (memory against Synapse's limit, disk, database, media, the last state compression),
read over SSH from what this machine's state knows of the deployment.

What the box's size sets elsewhere (Synapse's caches and limits, Postgres's buffers) is derived
in installer.sizing and rendered by the components that own those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from installer.components.base import Component
from installer.sections import Part, key

if TYPE_CHECKING:
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage


@dataclass(frozen=True)
class TuningKeys:
    swap: str = key(
        "ask", "Swap file on small boxes",
        '"ask" | "yes" | "no": a swap file on a box of 2 GB or less that has none (headless "ask" = no)',
        step="Server", choices=("ask", "yes", "no"), group="Host", install_only=True,
        guide="Oracle's images have no swap. On 1-2 GB a swap file lets the kernel move idle memory to disk "
              "instead of killing a process in a burst; the price is slowness if the box swaps all the time "
              "(then it is too small). Swappiness 10: only when memory runs short",
    )


def _database_server(d: Deployment) -> bool:
    from installer.components.homeserver import DatabaseSettings

    return any(isinstance(s, DatabaseSettings) and s.engine == "postgres" for s in d.homeserver_settings())


class Tuning(Component):
    name = "tuning"
    title = "The box: swap and server health"
    answers = (Part("tuning", TuningKeys),)

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        from installer.engine import Stage

        if mode == "install":
            from installer.components.tuning.stages import offer_swap
            from installer.host.connect import HostSize

            stages = [Stage("host.swap", "Swap file on a small box", offer_swap, ("host.ssh",), takes=(HostSize,),
                            skippable=True)]
            if _database_server(d):
                from installer.components.tuning.compress import install_timer

                stages.append(Stage("host.compress", "State compression, nightly", install_timer, ("host.docker",),
                                    skippable=True))
            return stages
        if mode == "check":
            from installer.components.tuning.health import server_health

            return [Stage("host.health", "Server health", server_health, skippable=True)]
        return []


COMPONENT = Tuning()
