"""A server the user already has: Ubuntu or Debian, reachable over SSH, sudo without a password.
It has no stages of its own: its address and pinned host key come from the answers."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from installer.providers.base import Provider
from installer.sections import mention

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.engine import StageContext


EXISTING = mention("cloud.provider", "existing")


class Existing(Provider):
    name = "existing"
    choice = "A server I already have"

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        if answers.cloud.provider != self.name:
            return []
        found = []
        if not answers.ssh.host:
            found.append(("ssh.host", f"is required for {EXISTING}: the address of your server"))
        if not answers.ssh.host_key:
            found.append(("ssh.host_key", f"is required for {EXISTING}: a host key is never trusted blindly; "
                          "paste the line from /etc/ssh/ssh_host_ed25519_key.pub, read on the server's console"))
        return found

    async def host_address(self, ctx: StageContext) -> str:
        from installer.components.dns.lookup import lookup, resolver
        from installer.engine import StageError

        host = ctx.answers.ssh.host
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        if ctx.dry_run:  # a dry run contacts nothing, DNS servers included
            return "(address of " + host + ")"
        dns = resolver(ctx.options.dns_server)
        found = sorted(await lookup(dns, host, "A") or ()) or sorted(await lookup(dns, host, "AAAA") or ())
        if not found:
            raise StageError(f"ssh.host {host} does not resolve to an address (no A or AAAA record)",
                             "give its IP address as ssh.host, or fix its DNS")
        return found[0]


PROVIDER = Existing()
