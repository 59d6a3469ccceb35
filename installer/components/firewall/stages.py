"""Stage host.firewall: the deployment's ports accepted by iptables above the catch-all REJECT of
Oracle's images (IPv4 and IPv6), and saved for the next boot.

Never ufw: it fights these rules. The saved rules files gain exactly our ACCEPT lines and nothing
else, so Docker's own rules (made anew at each start) are never saved there, as
`netfilter-persistent save` would do.
"""

from __future__ import annotations

from installer.components.base import Port
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.apt import apt_install, installed


SAVED_RULES = {"iptables": "/etc/iptables/rules.v4", "ip6tables": "/etc/iptables/rules.v6"}


def _dport(port: Port) -> str:
    low, high = port.span
    return f"{int(low)}:{int(high)}" if low != high else str(int(low))


def accept_rule(port: Port) -> str:
    """The rule as Oracle writes its SSH rule, so `iptables -S` lists them alike."""
    return f"-p {port.protocol} -m state --state NEW -m {port.protocol} --dport {_dport(port)} -j ACCEPT"


def reject_position(listing: str) -> int | None:
    """1-based position of the INPUT chain's first catch-all REJECT/DROP rule, wherever it is."""
    rules = [line for line in listing.splitlines() if line.startswith("-A INPUT")]
    for number, rule in enumerate(rules, start=1):
        words = rule.split()
        target = words[words.index("-j") + 1] if "-j" in words else ""
        matches = [w for w in words[2:words.index("-j")]] if "-j" in words else words[2:]
        if target in ("REJECT", "DROP") and not matches:
            return number
    return None


def opens(rule: str, port: Port) -> bool:
    """Whether an INPUT rule (as `iptables -S` or a saved file writes it) accepts `port` (its
    protocol, all of its range) from anywhere: limited to a source, interface or destination, it
    does not count."""
    words = rule.split()
    if words[:2] != ["-A", "INPUT"] or words[-2:] != ["-j", "ACCEPT"] or {"-s", "-i", "-d", "!"} & set(words):
        return False
    pairs = dict(zip(words, words[1:]))
    if pairs.get("-p") != port.protocol or "--dport" not in pairs:
        return False
    low, _, high = pairs["--dport"].partition(":")
    if not low.isdigit() or not (high or low).isdigit():
        return False
    want_low, want_high = port.span
    return int(low) <= want_low and want_high <= int(high or low)


def closed_ports(listing: str, ports: list[Port]) -> list[Port]:
    """The ports no rule opens above the catch-all REJECT (a rule below it opens nothing)."""
    rules = [line for line in listing.splitlines() if line.startswith("-A INPUT")]
    effective = rules[:(reject_position(listing) or len(rules) + 1) - 1]
    return [p for p in ports if not any(opens(rule, p) for rule in effective)]


EMPTY_FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def with_saved_ports(saved: str, ports: list[Port]) -> str | None:
    """The saved rules file (iptables-save format) with ACCEPT rules for `ports` in its filter table,
    above the REJECT; None if they are all there already. Nothing else in the file changes: what
    is saved is exactly what was there plus our rules (never Docker's, which it makes at each start,
    as `netfilter-persistent save` would do)."""
    text = saved if "*filter" in saved.splitlines() else saved + ("" if not saved or saved.endswith("\n") else "\n") + EMPTY_FILTER
    lines = text.splitlines()
    begin = lines.index("*filter")
    end = next(i for i in range(begin, len(lines)) if lines[i].strip() == "COMMIT")
    table = "\n".join(lines[begin + 1:end])
    missing = closed_ports(table, ports)
    if not missing:
        return None
    position = reject_position(table)
    rule_lines = [i for i in range(begin + 1, end) if lines[i].startswith("-A INPUT")]
    at = rule_lines[position - 1] if position else end
    lines[at:at] = [f"-A INPUT {accept_rule(p)}" for p in missing]
    return "\n".join(lines) + "\n"


def _listed(ports: list[Port]) -> str:
    """ "TCP 80, 443; UDP 3478" """
    by_protocol: dict[str, list[str]] = {}
    for port in ports:
        by_protocol.setdefault(port.protocol.upper(), []).append(_dport(port).replace(":", "-"))
    return "; ".join(f"{proto} {', '.join(numbers)}" for proto, numbers in by_protocol.items())


async def open_firewall(ctx: StageContext) -> Status:
    """ACCEPT new connections to the deployment's ports above the REJECT, IPv4 and IPv6, persisted."""
    changed = False
    ports = ctx.deployment.ports
    if await ctx.probe("command -v ufw >/dev/null && ufw status | grep -q 'Status: active'", sudo=True):
        raise StageError("ufw is active on the host; it fights Oracle's iptables rules the installer edits",
                         "turn it off (sudo ufw disable) and rerun; the installer opens the ports with iptables")
    if not await installed(ctx, "iptables-persistent"):
        # It brings iptables and netfilter-persistent. Installing it would ask (debconf) whether to
        # save the current rules, Docker's among them: no; the installer writes the file itself.
        await ctx.run("debconf-set-selections", sudo=True,
                      input="iptables-persistent iptables-persistent/autosave_v4 boolean false\n"
                            "iptables-persistent iptables-persistent/autosave_v6 boolean false\n")
        await apt_install(ctx, "iptables-persistent")
        changed = True

    for tool in ("iptables", "ip6tables"):
        listing = await ctx.run(f"{tool} -S INPUT", sudo=True, check=False,
                                dry_output=ctx.deployment.provider.assumed_input_rules(tool))
        if not listing.ok:
            ctx.log(f"{tool} cannot list the INPUT chain here ({listing.stderr.strip()[-120:]}): skipped")
            continue
        missing = closed_ports(listing.stdout, ports)
        position = reject_position(listing.stdout)
        for offset, port in enumerate(missing):
            where = f"-I INPUT {position + offset}" if position else "-A INPUT"
            await ctx.run(f"{tool} {where} {accept_rule(port)}", sudo=True)
        if missing:
            changed = True
            ctx.found(f"{tool}: opened {_listed(missing)}"
                      + (f" above the REJECT rule (was rule {position})" if position else " (no REJECT rule found: appended)"))
        else:
            ctx.found(f"{tool}: {_listed(ports)} already open")
        path = SAVED_RULES[tool]
        saved = (await ctx.read_file(path) or b"").decode("utf-8", "replace")
        if (updated := with_saved_ports(saved, ports)) is not None:
            # Checked by the tool's own parser before it replaces the file the next boot loads.
            await ctx.run(f"{tool}-restore --test", sudo=True, input=updated)
            await ctx.put_file(path, updated.encode(), mode=0o640)
            ctx.log(f"{path}: {_listed(ports)} saved for the next boot")
            changed = True
    return Status.DONE if changed else Status.UNCHANGED
