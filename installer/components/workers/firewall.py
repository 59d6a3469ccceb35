"""The host firewall's part for worker hosts: ports Docker publishes on a private address, open to
the deployment's other hosts and no one else.

Docker's published ports never reach the INPUT chain (Docker DNATs them and the packets are
forwarded to the container), so the rules go in DOCKER-USER, the chain Docker keeps for its users'
rules and runs before its own. They match new connections by their original destination (the
private address and port), so traffic between containers on the compose network is untouched.
Saved in /etc/iptables/rules.v4 (or .v6) for the next boot, like host.firewall's: only our lines.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from installer.engine import StageContext, StageError
from installer.host.apt import apt_install, installed

q = shlex.quote

CHAIN = "DOCKER-USER"
COMMENT = "matrix-installer-workers"
SAVED = {"iptables": "/etc/iptables/rules.v4", "ip6tables": "/etc/iptables/rules.v6"}


def tool_for(address: str) -> str:
    return "ip6tables" if ipaddress.ip_address(address).version == 6 else "iptables"


def wanted_rules(destination: str, ports: list[int], sources: list[str]) -> list[str]:
    """For each port: RETURN (Docker's rules then let it through) for each source, then DROP for the rest."""
    bits = 128 if ":" in destination else 32
    rules = []
    for port in sorted(set(ports)):
        match = f"-p tcp -m conntrack --ctstate NEW --ctorigdst {destination} --ctorigdstport {int(port)}"
        for source in sorted(set(sources)):
            rules.append(f"-s {source}/{bits} {match} -m comment --comment {COMMENT} -j RETURN")
        rules.append(f"{match} -m comment --comment {COMMENT} -j DROP")
    return rules


_SPEC = re.compile(r"--ctorigdst (\S+?)(?:/\d+)? .*--ctorigdstport (\d+)")


def _key(rule: str) -> tuple[str, str, str, str]:
    """What a rule means, however iptables prints it: (source, destination, port, target)."""
    words = rule.split()
    source = words[words.index("-s") + 1].split("/")[0] if "-s" in words else ""
    target = words[words.index("-j") + 1] if "-j" in words else ""
    m = _SPEC.search(rule)
    return (source, m.group(1) if m else "", m.group(2) if m else "", target)


def _words(rule: str) -> str:
    return " ".join(q(word.strip('"')) for word in rule.split())


def ours(listing: str) -> list[str]:
    """Our rules in `iptables -S DOCKER-USER`'s listing, as it prints them (without "-A CHAIN")."""
    found = []
    for line in listing.splitlines():
        if line.startswith(f"-A {CHAIN} ") and COMMENT in line:
            found.append(line[len(f"-A {CHAIN} "):])
    return found


def with_saved_rules(saved: str, rules: list[str]) -> str | None:
    """The saved rules file with exactly `rules` as our DOCKER-USER lines (the chain declared in its
    filter table); None when it says so already."""
    from installer.components.firewall.stages import EMPTY_FILTER

    text = saved if "*filter" in saved.splitlines() else saved + ("" if not saved or saved.endswith("\n") else "\n") + EMPTY_FILTER
    lines = [line for line in text.splitlines() if not (line.startswith(f"-A {CHAIN} ") and COMMENT in line)]
    begin = lines.index("*filter")
    end = next(i for i in range(begin, len(lines)) if lines[i].strip() == "COMMIT")
    if rules and not any(line.startswith(f":{CHAIN} ") for line in lines[begin:end]):
        lines.insert(begin + 1, f":{CHAIN} - [0:0]")
        end += 1
    lines[end:end] = [f"-A {CHAIN} {rule}" for rule in rules]
    updated = "\n".join(lines) + "\n"
    return None if updated == text or (not rules and updated.rstrip("\n") == text.rstrip("\n")) else updated


async def admit_only(ctx: StageContext, destination: str, ports: list[int], sources: list[str]) -> bool:
    """Our DOCKER-USER rules on the host exactly as wanted (none when `ports` or `sources` is
    empty), live and saved; returns whether anything changed."""
    tool = tool_for(destination) if destination else "iptables"
    rules = wanted_rules(destination, ports, sources) if destination and ports and sources else []
    listing = await ctx.run(f"{tool} -S {CHAIN}", sudo=True, check=False, dry_output=f"-N {CHAIN}\n-A {CHAIN} -j RETURN\n")
    if not listing.ok:
        if not rules:
            return False
        raise StageError(f"{tool} has no {CHAIN} chain on {getattr(ctx, 'label', 'the host')}: Docker's own firewall "
                         "rules are off, so its published ports cannot be limited",
                         "start Docker with its iptables integration (the default), then rerun")
    present = ours(listing.stdout)
    changed = False
    if [_key(r) for r in present] != [_key(r) for r in rules] or ctx.dry_run:
        for rule in present:  # as the host printed it: each word quoted
            await ctx.run(f"{tool} -D {CHAIN} {_words(rule)}", sudo=True)
        for rule in reversed(rules):  # inserted at the top, each above the last: they end up in order
            await ctx.run(f"{tool} -I {CHAIN} 1 {_words(rule)}", sudo=True)
        changed = True
        ctx.log(f"{tool} {CHAIN}: " + (f"ports {', '.join(map(str, sorted(set(ports))))} on {destination} admit only "
                                        f"{', '.join(sorted(set(sources)))}" if rules else "no rules of the workers left"))
    path = SAVED[tool]
    saved = await ctx.read_file(path)
    if saved is None and rules and not await installed(ctx, "iptables-persistent"):
        await ctx.run("debconf-set-selections", sudo=True,
                      input="iptables-persistent iptables-persistent/autosave_v4 boolean false\n"
                            "iptables-persistent iptables-persistent/autosave_v6 boolean false\n")
        await apt_install(ctx, "iptables-persistent")
        saved = await ctx.read_file(path)
    if saved is None and not rules:
        return changed
    updated = with_saved_rules((saved or b"").decode("utf-8", "replace"), rules)
    if updated is not None:
        await ctx.run(f"{tool}-restore --test", sudo=True, input=updated)
        await ctx.put_file(path, updated.encode(), mode=0o640)
        ctx.log(f"{path}: the workers' {CHAIN} rules saved for the next boot")
        changed = True
    return changed
