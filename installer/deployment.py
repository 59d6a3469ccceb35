"""A deployment: what the answers make of the server, merged from the enabled components.

The one source for the compose file, the Caddyfile, both firewalls and the plan's titles, the
DNS records and .well-known documents, what a backup holds, and the stages of each mode. No
component is named here: each declares its part (installer.components.base), and the registry
lists them (installer.components.REGISTRY).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from installer.components import registered
from installer.components.base import (
    BackupItem,
    Component,
    Mode,
    Port,
    Service,
    Site,
)
from installer.providers import provider_for

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.components.dns import Record
    from installer.engine import Stage
    from installer.providers.base import Provider


class DeploymentError(ValueError):
    """Two components declare clashing parts (a programming error, caught by the tests)."""


@dataclass
class Deployment:
    answers: Answers
    mode: Mode
    provider: Provider
    components: tuple[Component, ...]
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What the state knows of the deployment as it is (upgrade mode works on what is deployed,
    which may be older than the answers)."""
    size: Any = None
    """The host's size (installer.host.connect.HostSize), learned during the run: the deployment
    built before the run has none; a stage that renders files takes the HostSize and renders
    from `sized(size)`, whose services and homeserver settings are sized for the box."""

    @classmethod
    def build(cls, answers: Answers, mode: str = "install", facts: Mapping[str, Any] | None = None) -> Deployment:
        facts = dict(facts or {})
        enabled = tuple(c for c in registered() if c.enabled(answers, mode, facts))  # type: ignore[arg-type]
        return cls(answers, mode, provider_for(answers), enabled, facts)  # type: ignore[arg-type]

    def sized(self, size: Any) -> Deployment:
        """This deployment on a host of `size` (a HostSize): the same components, with what they
        declare sized for the box (installer.sizing)."""
        import dataclasses

        return self if size == self.size else dataclasses.replace(self, size=size)

    @functools.cached_property
    def sizing(self) -> Any:
        """The settings for the host's size (installer.sizing.Sizing), or None: not sized (the
        plan before the run) or sizing off (the benchmark's seed deployment)."""
        if self.size is None or not self.size.tuned:
            return None
        from installer.components.homeserver import DatabaseSettings, WorkerSettings
        from installer.sizing import sizing_for

        settings = self.homeserver_settings()
        database_server = any(isinstance(s, DatabaseSettings) for s in settings)
        workers = sum(len(s.workers) for s in settings if isinstance(s, WorkerSettings))
        return sizing_for(self.size, postgres=database_server, synapse_processes=1 + workers)

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.components)

    @property
    def homeserver(self) -> Any:
        """The component that runs the Matrix homeserver (installer.components.homeserver.Homeserver)."""
        from installer.components.homeserver import Homeserver

        found = [c for c in self.components if isinstance(c, Homeserver)]
        if len(found) != 1:
            raise DeploymentError(f"a deployment runs one homeserver, not {len(found)}")
        return found[0]

    def _collect(self, method: str) -> list[Any]:
        return [item for c in self.components for item in getattr(c, method)(self)]

    # --- the network ----------------------------------------------------------------------
    @functools.cached_property
    def ports(self) -> list[Port]:
        """Every port the world must reach, in the order declared, each once."""
        seen: dict[tuple[object, str], Port] = {}
        for port in self._collect("ports"):
            seen.setdefault((port.number, port.protocol), port)
        return list(seen.values())

    def ports_title(self) -> str:
        """The ports as the plan's titles say them: "80/443", or "tcp 80/443, udp 3478"."""
        by_protocol: dict[str, list[str]] = {}
        for port in self.ports:
            low, high = port.span
            by_protocol.setdefault(port.protocol, []).append(f"{low}-{high}" if low != high else str(low))
        if list(by_protocol) == ["tcp"]:
            return "/".join(by_protocol["tcp"])
        return ", ".join(f"{proto} {'/'.join(numbers)}" for proto, numbers in by_protocol.items())

    # --- containers -----------------------------------------------------------------------
    @functools.cached_property
    def services(self) -> list[Service]:
        """Every compose service, with the ports components publish on a private address for
        the deployment's other hosts (installer.components.base.PrivatePort)."""
        import dataclasses

        found = self._collect("services")
        names = [s.name for s in found]
        if len(set(names)) != len(names):
            raise DeploymentError(f"compose services declared twice: {names}")
        for published in self._collect("private_ports"):
            if published.service not in names:
                raise DeploymentError(f"a private port for {published.service}, which no component declares")
            at = names.index(published.service)
            service = found[at]
            ports = [*service.settings.get("ports", ()), f"{published.address}:{published.port}:{published.port}"]
            found[at] = dataclasses.replace(service, settings={**service.settings, "ports": ports})
        return found

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def compose_file(self) -> str:
        from installer.render import render_compose

        return render_compose(self.services)

    # --- Caddy ----------------------------------------------------------------------------
    @functools.cached_property
    def sites(self) -> list[Site]:
        """Every site, with the routes other components add to it, in Caddyfile order."""
        sites = {s.address: s for s in self._collect("sites")}
        for extra in self._collect("routes"):
            site = sites.get(extra.address)
            if site is None:
                raise DeploymentError(f"routes for {extra.address}, which no component declares as a site")
            routes = extra.routes + site.routes if extra.first else site.routes + extra.routes
            sites[extra.address] = Site(site.address, site.comment, routes, site.order)
        return sorted(sites.values(), key=lambda s: s.order)

    def caddyfile(self, *, global_options: tuple[str, ...] = ()) -> str:
        """`global_options`: lines for the global block (a lab's ports and storage), the caller's own."""
        from installer.render import render_caddyfile

        return render_caddyfile(self.answers, self.sites, global_options=global_options)

    @property
    def hostnames(self) -> list[str]:
        """The names this box answers for (each needs DNS pointing here)."""
        return list(dict.fromkeys(site.host for site in self.sites))

    def records(self, address: str) -> list[Record]:
        return self._collect_with("records", address)

    def _collect_with(self, method: str, *args: Any) -> list[Any]:
        return [item for c in self.components for item in getattr(c, method)(self, *args)]

    # --- the rest -------------------------------------------------------------------------
    def backup_items(self) -> list[BackupItem]:
        return self._collect("backup")

    def homeserver_settings(self) -> list[Any]:
        return self._collect("homeserver_settings")

    def warnings(self) -> list[str]:
        """What components say of these answers before anything runs, enabled or not (a choice
        that leaves a component out can be the warning)."""
        return [w for c in registered() for w in c.warnings(self.answers)]

    def stages(self) -> list[Stage]:
        """Each component's stages and the provider's, in an order the engine accepts (a stage
        comes as soon as what it needs is listed, earlier declared first); in upgrade mode, what
        brings in a component the deployment does not have yet (a database move). A restore is an
        install whose data comes back from a backup: every component's install stages, and what
        the components add to put the data back (`restoring_stages`)."""
        if self.mode == "restore":
            return order_stages([*self._collect_with("stages", "install"), *self._collect("restoring_stages"),
                                 *self.provider.stages(self, "install")])
        joining = [s for c in registered() if c not in self.components for s in c.joining_stages(self, self.mode)]
        return order_stages([*self._collect_with("stages", self.mode), *joining, *self.provider.stages(self, self.mode)])


EVERY_OTHER = "*"
"""In a stage's `needs`: every other stage of the plan (the proof at the end needs them all)."""


def order_stages(stages: Iterable[Stage]) -> list[Stage]:
    """Stages with `before` turned into `needs` (a `before` naming a stage absent from this plan
    is dropped: it orders nothing), each stage needing the ones that give what it takes, listed
    so that each comes after what it needs (declaration order otherwise kept)."""
    import dataclasses

    stages = list(stages)
    names = {s.name for s in stages}
    if len(names) != len(stages):
        raise DeploymentError(f"a stage is declared twice: {[s.name for s in stages]}")
    extra: dict[str, list[str]] = {s.name: [] for s in stages}
    giver = {kind: s.name for s in stages for kind in s.gives}
    for stage in stages:
        for later in stage.before:
            if later in extra:
                extra[later].append(stage.name)
        extra[stage.name] += [giver[kind] for kind in stage.takes if kind in giver]
    everyone = [s.name for s in stages if EVERY_OTHER not in s.needs]
    resolved = []
    for stage in stages:
        if EVERY_OTHER in stage.needs:
            stage = dataclasses.replace(stage, needs=tuple(n for n in everyone if n != stage.name))
        unknown = [n for n in stage.needs if n not in names]
        if unknown:
            raise DeploymentError(f"stage {stage.name} needs {unknown}, which this plan does not have")
        wanted = list(dict.fromkeys([*stage.needs, *extra[stage.name]]))
        resolved.append(dataclasses.replace(stage, needs=tuple(wanted), before=()))
    ordered: list[Stage] = []
    placed: set[str] = set()
    pending = resolved
    while pending:
        ready = [s for s in pending if set(s.needs) <= placed]
        if not ready:
            raise DeploymentError(f"stages need each other in a circle: {[s.name for s in pending]}")
        first = ready[0]
        ordered.append(first)
        placed.add(first.name)
        pending = [s for s in pending if s is not first]
    return ordered
