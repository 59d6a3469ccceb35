"""Stages on the host over SSH: the verified connection, the firewall, Caddy and Docker.

Each stage checks what is there and changes only what differs. Remote work is written as
command lines (every value through `shlex.quote`) so the dry-run prints exactly what would run.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installer.engine import StageContext, StageError
from installer.events import Status

if TYPE_CHECKING:
    from installer.ssh import SshTarget

q = shlex.quote

# --- apt ------------------------------------------------------------------------------------

APT_GET = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600"
"""Waits for the dpkg lock instead of failing (unattended-upgrades runs right after a VM's first boot)."""
APT_TIMEOUT = 1800


def _lock(ctx: StageContext, name: str) -> asyncio.Lock:
    """One lock per concern for the whole run (stages run concurrently; apt must not)."""
    lock = ctx.session.shared.get(f"lock.{name}")
    if lock is None:
        lock = ctx.session.shared[f"lock.{name}"] = asyncio.Lock()
    return lock


def sources_changed(ctx: StageContext) -> None:
    """An apt source was added: the next install refreshes the package lists first."""
    ctx.session.shared["apt.updated"] = False


async def apt_install(ctx: StageContext, *packages: str) -> None:
    """Install packages (refreshing the lists once per run, and again after a new source)."""
    async with _lock(ctx, "apt"):
        if not ctx.session.shared.get("apt.updated"):
            await ctx.run(f"{APT_GET} update", sudo=True, timeout=APT_TIMEOUT)
            ctx.session.shared["apt.updated"] = True
        result = await ctx.run(f"{APT_GET} install {' '.join(q(p) for p in packages)}", sudo=True,
                               timeout=APT_TIMEOUT, check=False)
    if not result.ok:
        missing = re.findall(r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation candidate", result.stderr)
        if missing:
            names = ", ".join(a or b for a, b in missing)
            raise StageError(f"this system's package lists have no {names}",
                             'set packages.source = "vendor" in the answers to use the vendor\'s own repository')
        tail = "; ".join(result.stderr.strip().splitlines()[-3:])
        raise StageError(f"apt-get install {' '.join(packages)} failed (status {result.exit_status}): {tail}",
                         "run the same apt-get command on the host to see the whole story, fix it, then rerun")


async def installed(ctx: StageContext, package: str) -> bool:
    return await ctx.probe(f"dpkg-query -W -f='${{Status}}' {q(package)} 2>/dev/null | grep -q 'install ok installed'")


async def package_known(ctx: StageContext, package: str) -> bool:
    """Whether apt could install `package` from the configured sources."""
    async with _lock(ctx, "apt"):
        if not ctx.session.shared.get("apt.updated"):
            await ctx.run(f"{APT_GET} update", sudo=True, timeout=APT_TIMEOUT)
            ctx.session.shared["apt.updated"] = True
    result = await ctx.run(f"apt-cache policy {q(package)}", check=False,
                           dry_output=f"{package}:\n  Installed: (none)\n  Candidate: 1.0\n")
    m = re.search(r"Candidate:\s*(\S+)", result.stdout)
    return bool(m and m.group(1) != "(none)")


async def ensure_service(ctx: StageContext, unit: str) -> bool:
    """The unit enabled and running; returns whether anything had to change."""
    enabled = await ctx.probe(f"systemctl is-enabled --quiet {q(unit)}", sudo=True)
    active = await ctx.probe(f"systemctl is-active --quiet {q(unit)}", sudo=True)
    if enabled and active:
        return False
    await ctx.run(f"systemctl enable --now {q(unit)}", sudo=True, timeout=300)
    return True


# --- host.ssh ---------------------------------------------------------------------------------

DRY_OS_RELEASE = 'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\nPRETTY_NAME="Ubuntu 24.04 LTS"\nARCH=arm64\n'
SSH_WAIT_SECONDS = {"oci": 600.0, "existing": 90.0}
CLOUD_INIT_TIMEOUT = 1200.0


@dataclass(frozen=True)
class HostOS:
    id: str
    codename: str
    version: str
    arch: str
    pretty: str
    id_like: str = ""

    @property
    def is_ubuntu(self) -> bool:
        return self.id == "ubuntu"


def parse_os_release(text: str) -> HostOS:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return HostOS(
        id=values.get("ID", ""), codename=values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME", ""),
        version=values.get("VERSION_ID", ""), arch=values.get("ARCH", ""), pretty=values.get("PRETTY_NAME", ""),
        id_like=values.get("ID_LIKE", ""),
    )


def host_os(ctx: StageContext) -> HostOS:
    found = ctx.session.shared.get("host.os")
    if not isinstance(found, HostOS):
        raise StageError("the host's OS is not known", "the host.ssh stage must run first")
    return found


def ssh_target(ctx: StageContext):
    """Where to connect and which host key to accept; refuses to trust a key it cannot vouch for."""
    from pathlib import Path

    from installer.ssh import SshTarget

    a = ctx.answers.ssh
    host = a.host or ctx.facts.get("host.address")
    if not host:
        raise StageError("the host's address is not known", 'set ssh.host in the answers (provider "existing"), '
                         "or let the cloud stages finish")
    pinned, given = a.host_key.strip(), ctx.facts.get("host.host_key")
    if pinned:
        expected, source = pinned, "the pinned key (ssh.host_key in the answers)"
        if given and given.split()[:2] != pinned.split()[:2]:
            ctx.log("the host key in the state differs from ssh.host_key in the answers: the answers' pin is used")
    elif given:
        source = {"cloud-init": "the key this installer gave the VM through cloud-init",
                  "host": "the key the installer made on the host"}.get(ctx.facts.get(HOST_KEY_FROM), "the key saved in the run state")
        return SshTarget(host, a.port, a.user, Path(a.private_key).expanduser(), given, source,
                         next_host_key=ctx.facts.get(NEXT_HOST_KEY) or "")
    else:
        raise StageError(
            f"the SSH host key of {host} is not known, and the installer does not trust a key on first sight",
            f'read the key on the server itself (its console, not over the network): sudo cat /etc/ssh/ssh_host_ed25519_key.pub, '
            f'then set ssh.host_key = "ssh-ed25519 AAAA..." in the answers. (`ssh-keyscan -t ed25519 {host}` only shows what '
            "the network says, which is what needs checking.)",
        )
    return SshTarget(host, a.port, a.user, Path(a.private_key).expanduser(), expected, source)


async def connect(ctx: StageContext) -> Status:
    """One verified SSH connection for the run; sudo without a password; cloud-init finished."""
    from installer.ssh import SshRemote, fingerprint, key_text, parse_host_key

    try:
        target = ssh_target(ctx)
    except StageError as exc:
        if not ctx.dry_run:
            raise
        ctx.log(f"a real run stops here: {exc} ({exc.hint})")
        target = None
    if ctx.dry_run:
        if target is not None:
            shown = fingerprint(parse_host_key(target.host_key))
            ctx.log(f"connect to {target.address} with {target.key_path}, accepting only host key {shown} ({target.host_key_source})", "command")
    else:
        assert target is not None
        remote = SshRemote(target)
        deadline = time.monotonic() + SSH_WAIT_SECONDS.get(ctx.answers.cloud.provider, 90.0)
        await remote.wait_until_up(deadline=deadline, progress=ctx.progress,
                                   retry_auth=ctx.answers.cloud.provider == "oci")
        old = ctx.session.remote
        ctx.attach_remote(remote)
        if old is not None and old is not remote:
            await old.close()
        presented = remote.server_key or remote.trusted_key
        source = target.host_key_source if key_text(presented) == key_text(remote.trusted_key) else "the key the installer made on the host"
        ctx.log(f"connected to {target.address}; host key {fingerprint(presented)} verified against {source}")

    sudo = await ctx.run("true", sudo=True, check=False)
    if not sudo.ok:
        raise StageError(f"`sudo -n true` failed on the host (status {sudo.exit_status}): {sudo.stderr.strip()[-200:]}",
                         "the SSH user needs sudo without a password (Oracle's images set this up for ubuntu)")
    await wait_for_cloud_init(ctx)
    info = await ctx.run("cat /etc/os-release; echo ARCH=$(dpkg --print-architecture)", dry_output=DRY_OS_RELEASE)
    found = parse_os_release(info.stdout)
    if found.id not in ("ubuntu", "debian") and "debian" not in found.id_like.split():
        raise StageError(f"the host runs {found.pretty or found.id or 'an unknown OS'}; the installer needs Ubuntu or Debian",
                         "use an Ubuntu 22.04/24.04 or Debian 12/13 server")
    ctx.session.shared["host.os"] = found
    ctx.log(("a dry run assumes the host OS: " if ctx.dry_run else "host OS: ") + f"{found.pretty} ({found.arch})")

    if ctx.facts.get(HOST_KEY_FROM) == "cloud-init" and target is not None and not ctx.answers.ssh.host_key.strip():
        await replace_cloud_init_host_key(ctx, target)
        return Status.DONE
    if ctx.dry_run or target is None:
        return Status.DONE
    verified = key_text(parse_host_key(target.host_key))
    if (ctx.facts.get("host.host_key") or "").split()[:2] == verified.split():
        return Status.UNCHANGED
    ctx.remember("host.host_key", verified)
    return Status.DONE


HOST_KEY_FROM = "host.host_key_from"
"""Where the pinned host key came from: "cloud-init" (the pair the installer put in the VM's user
data), or "host" (made on the host itself, over a verified connection)."""
NEXT_HOST_KEY = "host.host_key_next"
HOST_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key"


async def replace_cloud_init_host_key(ctx: StageContext, target: SshTarget) -> None:
    """Give the host a new ed25519 host key that never left it, and pin that one.

    The first key pair travelled in the VM's user data, which Oracle's metadata service hands to
    any process on the VM (containers included) for as long as the VM lives: once it has served
    its purpose, a verified first connection, it is retired. Safe to stop anywhere: the new key is
    remembered before it is put in place, and the next connection accepts either."""
    from installer import ssh
    from installer.ssh import fingerprint, key_text, parse_host_key

    new = ctx.facts.get(NEXT_HOST_KEY) or ""
    remote = ctx.session.remote
    presented = getattr(remote, "server_key", None)
    if not (new and presented is not None and key_text(presented) == key_text(parse_host_key(new))):
        path = q(HOST_KEY_PATH)
        await ctx.run(f"rm -f {path}.next {path}.next.pub && ssh-keygen -q -t ed25519 -N '' -C '' -f {path}.next", sudo=True)
        made = await ctx.read_file(f"{HOST_KEY_PATH}.next.pub")
        if not ctx.dry_run:
            if not made:
                raise StageError("ssh-keygen made no new host key on the host", "check that /etc/ssh is writable by root; rerun")
            new = key_text(parse_host_key(made.decode()))
            ctx.remember(NEXT_HOST_KEY, new)
        await ctx.run(f"mv -f {path}.next.pub {path}.pub && mv -f {path}.next {path} && "
                      "(systemctl reload ssh.service 2>/dev/null || systemctl reload sshd.service)", sudo=True)
        if ctx.dry_run:
            ctx.log("then a new connection accepting only the new key proves it, and it is pinned")
            return
        # The proof: a new connection that accepts only the new key (the open one goes on).
        check = ssh.SshRemote(ssh.SshTarget(target.host, target.port, target.user, target.key_path, new, "the host's new key"))
        try:
            await _connect_after_reload(check)
            await check.run("true", log=lambda *_: None)
        finally:
            await check.close()
    ctx.remember("host.host_key", new)
    ctx.remember(HOST_KEY_FROM, "host")
    ctx.forget(NEXT_HOST_KEY)
    ctx.log(f"the host key sent in the VM's user data (readable by any process on the VM) is retired; "
            f"the host's own new key {fingerprint(parse_host_key(new))} is pinned")


async def _connect_after_reload(remote: Any, seconds: float = 20.0) -> None:
    """Connect while sshd re-executes itself after a reload: meanwhile connections drop, or still
    get the old key; retried until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await remote.wait_until_up(deadline=deadline, every=0.5)
            return
        except StageError as exc:
            if "does not match" not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def wait_for_cloud_init(ctx: StageContext) -> None:
    """Let cloud-init finish first (it may still be installing packages or writing users)."""
    if not await ctx.probe("command -v cloud-init >/dev/null"):
        if not ctx.dry_run:
            ctx.log("no cloud-init on this host: nothing to wait for")
            return
    started = time.monotonic()

    async def countdown() -> None:
        while True:
            left = CLOUD_INIT_TIMEOUT - (time.monotonic() - started)
            ctx.progress(f"waiting for cloud-init to finish: {left:.0f} s left", 1 - left / CLOUD_INIT_TIMEOUT)
            await asyncio.sleep(1)

    ticker = asyncio.create_task(countdown())
    try:
        result = await ctx.run("cloud-init status --wait", check=False, timeout=CLOUD_INIT_TIMEOUT, dry_output="status: done")
    finally:
        ticker.cancel()
    if result.exit_status == 2:
        ctx.log("cloud-init finished with recoverable errors (see `cloud-init status --long` on the host); going on")
    elif not result.ok:
        ctx.log(f"warning: cloud-init reports an error (status {result.exit_status}); going on. "
                "`cloud-init status --long` on the host says more")


# --- host.firewall ----------------------------------------------------------------------------

DRY_RULES = {
    "iptables": "-P INPUT ACCEPT\n-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p icmp -j ACCEPT\n"
                "-A INPUT -i lo -j ACCEPT\n-A INPUT -p udp -m udp --sport 123 -j ACCEPT\n"
                "-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT\n"
                "-A INPUT -j REJECT --reject-with icmp-host-prohibited\n",
    "ip6tables": "-P INPUT ACCEPT\n-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p ipv6-icmp -j ACCEPT\n"
                 "-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT\n"
                 "-A INPUT -j REJECT --reject-with icmp6-adm-prohibited\n",
}
SAVED_RULES = {"iptables": "/etc/iptables/rules.v4", "ip6tables": "/etc/iptables/rules.v6"}


def open_ports(ctx: StageContext) -> list[int]:
    return [80, 443] + ([8448] if ctx.answers.federation_port == 8448 else [])


def accept_rule(port: int) -> str:
    """The rule as Oracle writes its SSH rule, so `iptables -S` lists them alike."""
    return f"-p tcp -m state --state NEW -m tcp --dport {int(port)} -j ACCEPT"


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


def opens(rule: str, port: int) -> bool:
    """Whether an INPUT rule (as `iptables -S` or a saved file writes it) accepts TCP to `port`
    from anywhere: limited to a source, interface or destination, it does not count."""
    words = rule.split()
    if words[:2] != ["-A", "INPUT"] or words[-2:] != ["-j", "ACCEPT"] or {"-s", "-i", "-d", "!"} & set(words):
        return False
    pairs = set(zip(words, words[1:]))
    return ("-p", "tcp") in pairs and ("--dport", str(int(port))) in pairs


def closed_ports(listing: str, ports: list[int]) -> list[int]:
    """The ports no rule opens above the catch-all REJECT (a rule below it opens nothing)."""
    rules = [line for line in listing.splitlines() if line.startswith("-A INPUT")]
    effective = rules[:(reject_position(listing) or len(rules) + 1) - 1]
    return [p for p in ports if not any(opens(rule, p) for rule in effective)]


EMPTY_FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def with_saved_ports(saved: str, ports: list[int]) -> str | None:
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


async def open_firewall(ctx: StageContext) -> Status:
    """ACCEPT new TCP connections to 80/443 (and 8448) above the REJECT, IPv4 and IPv6, persisted."""
    changed = False
    ports = open_ports(ctx)
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
        listing = await ctx.run(f"{tool} -S INPUT", sudo=True, check=False, dry_output=DRY_RULES[tool])
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
            ctx.log(f"{tool}: opened TCP {', '.join(map(str, missing))}"
                    + (f" above the REJECT rule (was rule {position})" if position else " (no REJECT rule found: appended)"))
        else:
            ctx.log(f"{tool}: TCP {', '.join(map(str, ports))} already open")
        path = SAVED_RULES[tool]
        saved = (await ctx.read_file(path) or b"").decode("utf-8", "replace")
        if (updated := with_saved_ports(saved, ports)) is not None:
            # Checked by the tool's own parser before it replaces the file the next boot loads.
            await ctx.run(f"{tool}-restore --test", sudo=True, input=updated)
            await ctx.put_file(path, updated.encode(), mode=0o640)
            ctx.log(f"{path}: TCP {', '.join(map(str, ports))} saved for the next boot")
            changed = True
    return Status.DONE if changed else Status.UNCHANGED


# --- host.caddy -------------------------------------------------------------------------------

CADDY_KEY_URL = "https://dl.cloudsmith.io/public/caddy/stable/gpg.key"
CADDY_KEYRING = "/usr/share/keyrings/caddy-stable-archive-keyring.gpg"
CADDY_SOURCES = "/etc/apt/sources.list.d/caddy-stable.list"
CADDY_SOURCE_LINE = (f"deb [signed-by={CADDY_KEYRING}] https://dl.cloudsmith.io/public/caddy/stable/deb/debian any-version main\n"
                     f"deb-src [signed-by={CADDY_KEYRING}] https://dl.cloudsmith.io/public/caddy/stable/deb/debian any-version main\n")


async def add_keyring(ctx: StageContext, url: str, keyring: str, *, dearmor: bool) -> bool:
    """Fetch a repository's signing key on the host into `keyring` (0644) unless it is there."""
    if await ctx.probe(f"test -s {q(keyring)}", sudo=True):
        return False
    for tool in (("curl", "gnupg") if dearmor else ("curl",)):
        if not await ctx.probe(f"command -v {'gpg' if tool == 'gnupg' else tool} >/dev/null", sudo=True):
            await apt_install(ctx, tool, "ca-certificates")
    await ctx.run(f"install -d -m 0755 {q(keyring.rsplit('/', 1)[0])}", sudo=True)
    fetch = f"curl -fsSL --retry 3 {q(url)}"
    if dearmor:
        await ctx.run(f"{fetch} | gpg --batch --yes --dearmor -o {q(keyring)} && chmod 0644 {q(keyring)}", sudo=True, timeout=120)
    else:
        await ctx.run(f"{fetch} -o {q(keyring)} && chmod 0644 {q(keyring)}", sudo=True, timeout=120)
    return True


def port_holders(listing: str, ports: list[int]) -> dict[int, list[str]]:
    """Which programs listen on `ports`, from `ss -Htlnp` ("nginx (pid 812)"); caddy is left out."""
    held: dict[int, list[str]] = {}
    for line in listing.splitlines():
        words = line.split()
        if len(words) < 4 or not words[3].rpartition(":")[2].isdigit():
            continue
        port = int(words[3].rpartition(":")[2])
        if port not in ports:
            continue
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if name != "caddy" and f"{name} (pid {pid})" not in held.get(port, []):
                held.setdefault(port, []).append(f"{name} (pid {pid})")
    return held


async def check_web_ports_free(ctx: StageContext) -> None:
    """Caddy needs 80 and 443 (and 8448): another web server there would make it fail to start,
    after the installer had changed things. Found before anything is installed."""
    ports = open_ports(ctx)
    listing = await ctx.run("ss -Htlnp", sudo=True, check=False, dry_output="")
    if not listing.ok:
        ctx.log("cannot list the listening ports here (no ss): not checked whether another web server holds them")
        return
    if held := port_holders(listing.stdout, ports):
        names = sorted({name.split(" (")[0] for holders in held.values() for name in holders})
        said = "; ".join(f"port {port}: {', '.join(holders)}" for port, holders in sorted(held.items()))
        raise StageError(f"another program already listens where Caddy must: {said}. Nothing was installed",
                         f"stop it and keep it from starting again (e.g. sudo systemctl disable --now {names[0]}), "
                         "or move it to other ports; then rerun")


async def install_caddy(ctx: StageContext) -> Status:
    """Caddy from Caddy's own apt repository ("vendor") or the distribution ("distro"); enabled, running."""
    changed = False
    await check_web_ports_free(ctx)
    if await installed(ctx, "caddy"):
        version = await ctx.run("dpkg-query -W -f='${Version}' caddy", dry_output="2.8.4")
        ctx.log(f"caddy {version.stdout.strip()} is installed")
    else:
        if ctx.answers.packages.source == "vendor":
            await add_keyring(ctx, CADDY_KEY_URL, CADDY_KEYRING, dearmor=True)
            if await ctx.put_file(CADDY_SOURCES, CADDY_SOURCE_LINE.encode(), mode=0o644):
                sources_changed(ctx)
        await apt_install(ctx, "caddy")
        changed = True
    if await ensure_service(ctx, "caddy"):
        changed = True
    return Status.DONE if changed else Status.UNCHANGED


# --- host.docker ------------------------------------------------------------------------------

DOCKER_KEYRING = "/etc/apt/keyrings/docker.asc"
DOCKER_SOURCES = "/etc/apt/sources.list.d/docker.list"
DOCKER_VENDOR_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin")


def docker_source_line(found) -> str:
    distro = "ubuntu" if found.is_ubuntu else "debian"
    return (f"deb [arch={found.arch} signed-by={DOCKER_KEYRING}] "
            f"https://download.docker.com/linux/{distro} {found.codename} stable\n")


async def distro_compose_package(ctx: StageContext) -> str:
    """Compose v2 as the distribution packages it: `docker-compose-v2` on Ubuntu; on Debian 13
    (trixie) `docker-compose` is v2 already (Debian 12's is the old v1, refused below)."""
    if await package_known(ctx, "docker-compose-v2"):
        return "docker-compose-v2"
    return "docker-compose"


async def install_docker(ctx: StageContext) -> Status:
    """Docker engine with the compose v2 plugin; the SSH user in the docker group."""
    changed = False
    found = host_os(ctx)
    vendor = ctx.answers.packages.source == "vendor"
    if not await ctx.probe("command -v docker >/dev/null", sudo=True):
        if vendor:
            await add_keyring(ctx, f"https://download.docker.com/linux/{'ubuntu' if found.is_ubuntu else 'debian'}/gpg",
                              DOCKER_KEYRING, dearmor=False)
            if await ctx.put_file(DOCKER_SOURCES, docker_source_line(found).encode(), mode=0o644):
                sources_changed(ctx)
            await apt_install(ctx, *DOCKER_VENDOR_PACKAGES)
        else:
            await apt_install(ctx, "docker.io", await distro_compose_package(ctx))
        changed = True
    elif not await ctx.probe("docker compose version", sudo=True):
        # Docker is there without compose v2 (installed by hand, or Debian's docker.io alone).
        from_vendor = await installed(ctx, "docker-ce")
        await apt_install(ctx, "docker-compose-plugin" if from_vendor else await distro_compose_package(ctx))
        changed = True
    if changed and not ctx.dry_run and not await ctx.probe("docker compose version", sudo=True):
        raise StageError("`docker compose` (compose v2) is still missing: this distribution's compose is the old v1",
                         'set packages.source = "vendor" to install Docker\'s own docker-compose-plugin')
    if await ensure_service(ctx, "docker"):
        changed = True
    version = await ctx.run("docker version --format '{{.Server.Version}}' && docker compose version --short",
                            sudo=True, dry_output="27.0.3\n2.29.1\n")
    engine, _, compose = version.stdout.strip().partition("\n")
    ctx.log(f"Docker {engine}, compose {compose}")
    user = ctx.answers.ssh.user
    groups = await ctx.run(f"id -nG {q(user)}", dry_output=user)
    if "docker" not in groups.stdout.split():
        await ctx.run(f"usermod -aG docker {q(user)}", sudo=True)
        ctx.log(f"{user} joined the docker group (it takes effect at the next login)")
        changed = True
    return Status.DONE if changed else Status.UNCHANGED
