"""Element Web, the web client, at its own host name (element.<server name> by default): a release's
static files that Caddy serves itself, with Element's recommended headers. No container: on a
1 GB box every megabyte counts.

The release is fetched on the host, its OpenPGP signature checked against Element's release key
(the key's fingerprint is pinned here) before anything is unpacked, and each version is kept in a
folder of its own with `current` pointing at the one served: an upgrade that finds a newer
release switches to it and keeps the previous one for a rollback. config.json points the client
at this server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installer import checks
from installer.components.base import Component, Files, Site
from installer.host.layout import ROOT
from installer.sections import Part, key

if TYPE_CHECKING:
    from collections.abc import Mapping

    from installer.answers import Answers
    from installer.components.base import Mode
    from installer.deployment import Deployment
    from installer.engine import Stage

HOME = f"{ROOT}/element"
"""Every version in a folder of its own (element-v1.11.90), `current` -> the one served, config.json."""
CURRENT = f"{HOME}/current"
CONFIG = f"{HOME}/config.json"
VERSION_FACT = "element.version"
"""State fact: the release `current` points at (an upgrade looks for a newer one)."""
HEADERS = (
    ("X-Frame-Options", "SAMEORIGIN"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-XSS-Protection", "1; mode=block"),
    ("Content-Security-Policy", "frame-ancestors 'self'"),
)
"""What Element's README asks a web server hosting it to add (clickjacking, MIME sniffing)."""
NO_CACHE = ("/", "/index.html", "/config.json", "/version", "/i18n/*")
"""Asked for again on every load, so that an upgrade or a new config.json is seen at once."""
TAG = r"v[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}(-rc\.[0-9]{1,3})?"


def _enabled(answers: Answers) -> bool:
    return answers.element.enabled


def _optional_host(value: object) -> str | None:
    return None if value == "" else checks.fqdn(value)


@dataclass(frozen=True)
class ElementKeys:
    enabled: bool = key(True, "Element Web", "the web client, served by Caddy at its own host name", step="Server",
                        checkbox="serve Element Web, the web client, here",
                        guide="Element Web at https://element.<server name>, already pointed at this server: "
                              "nothing to install for anyone who has a browser")
    host: str = key("", "Element host", 'default "element." + server_name', step="Server", check=_optional_host,
                    applies=_enabled, group="Element Web", placeholder="element.<server name>",
                    guide="its own name (not the Matrix host's: Element advises a separate origin); "
                          "it needs a DNS record pointing here too")
    version: str = key("latest", "Element version", '"latest" or a release tag such as "v1.11.90"; always verified before unpacking',
                       step="Server", applies=_enabled, group="Element Web",
                       check=checks.pattern(f"latest|{TAG}", 'a release tag such as "v1.11.90", or "latest"'))


def element_host(answers: Answers) -> str:
    return answers.element.host or f"element.{answers.domain.server_name}"


class Element(Component):
    name = "element"
    title = "Element Web"
    answers = (Part("element", ElementKeys),)

    def enabled(self, answers: Answers, mode: Mode = "install", facts: Mapping[str, Any] | None = None) -> bool:
        if mode == "upgrade":  # what is deployed gets its newer release
            return bool((facts or {}).get(VERSION_FACT))
        return mode in ("install", "restore") and _enabled(answers)

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        if not _enabled(answers) or not answers.domain.server_name:
            return []
        host = element_host(answers)
        if host in (answers.domain.matrix_host, answers.domain.server_name):
            return [("element.host", f"must differ from the server name and the Matrix host ({host}): Element advises "
                                     "its own origin, so that what users post can never act as the client")]
        if checks.fqdn(host) is not None:
            return [("element.host", f'"{host}" {checks.fqdn(host)}: set one')]
        return []

    def sites(self, d: Deployment) -> list[Site]:
        return [Site(element_host(d.answers), "Element Web, the web client: static files, Element's recommended headers.",
                     (Files(CURRENT, HEADERS, NO_CACHE),), order=40)]

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        from installer.components.element import stages as s
        from installer.engine import Stage

        if mode == "install":
            return [
                Stage("element.files", "Element Web: a verified release", s.install_release, ("host.ssh",)),
                Stage("element.check", "Element Web served with its config and headers", s.check_served,
                      ("element.files", "caddy.config", "dns.records")),
            ]
        if mode == "upgrade":
            return [
                Stage("element.upgrade", "Element Web: the newest release, the previous one kept", s.upgrade_release,
                      ("upgrade.reboot",)),
                Stage("element.check", "Element Web served with its config and headers", s.check_served,
                      ("element.upgrade",)),
            ]
        return []


COMPONENT = Element()
