"""Stage host.ssh: one verified SSH connection for the run, sudo without a password, cloud-init
finished, and the host's OS and size known (the HostOS and HostSize outputs later stages take).

No trust on first use: the host key comes from the answers' pin, or from what the provider
handed over (the key given to a new VM through cloud-init, retired here after the first verified
connection for one that never left the host).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installer.engine import StageContext, StageError
from installer.events import Status

if TYPE_CHECKING:
    from installer.ssh import SshTarget

q = shlex.quote

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


MIB = 1024


@dataclass(frozen=True)
class HostSize:
    """What the box has: memory, cores, swap and disk (MiB). The deployment is sized from it
    (installer.sizing); a dry run assumes one (`assumed`) and says so."""

    memory_mib: int
    cores: int
    swap_mib: int = 0
    disk_total_mib: int = 0
    disk_free_mib: int = 0
    assumed: bool = False
    tuned: bool = True
    """False only for the benchmark's seed deployment (Synapse's generated defaults): see UNTUNED_ENV."""

    def describe(self) -> str:
        disk = f", {self.disk_free_mib / MIB:.0f} of {self.disk_total_mib / MIB:.0f} GiB disk free" if self.disk_total_mib else ""
        swap = f"{self.swap_mib / MIB:.1f} GiB swap" if self.swap_mib else "no swap"
        return (f"{self.memory_mib / MIB:.1f} GiB memory, {self.cores} core{'s' if self.cores != 1 else ''}, "
                f"{swap}{disk}")


UNTUNED_ENV = "MATRIX_INSTALLER_UNTUNED"
"""Set to 1 by the client-load benchmark (bench/server.py) for its seed deployment: Synapse's
generated defaults, untouched by the sizing, as the manual guide leaves them. Not an answer:
a user has no reason to want a server sized for no box."""
SIZE_COMMAND = "grep -E '^(MemTotal|SwapTotal):' /proc/meminfo; echo CORES=$(nproc); df -Pk / | tail -n 1"


def parse_host_size(text: str, *, assumed: bool = False, tuned: bool = True) -> HostSize:
    """SIZE_COMMAND's output: /proc/meminfo's lines (kB), nproc, and df -Pk's line for /."""
    values: dict[str, int] = {}
    disk_total = disk_free = 0
    for line in text.splitlines():
        words = line.replace(":", " ").replace("=", " ").split()
        if len(words) >= 2 and words[0] in ("MemTotal", "SwapTotal", "CORES") and words[1].isdigit():
            values[words[0]] = int(words[1])
        elif len(words) >= 6 and words[1].isdigit() and words[3].isdigit():
            disk_total, disk_free = int(words[1]) // MIB, int(words[3]) // MIB
    if "MemTotal" not in values:
        raise ValueError("no MemTotal in /proc/meminfo")
    return HostSize(values["MemTotal"] // MIB, max(1, values.get("CORES", 1)), values.get("SwapTotal", 0) // MIB,
                    disk_total, disk_free, assumed, tuned)


def assumed_size(answers: Any) -> HostSize:
    """What a dry run assumes the host has: the Oracle shape the answers ask for, else an
    existing server of 4 GiB and 2 cores (a real run reads the host)."""
    cloud = getattr(answers, "cloud", None)
    shape = getattr(cloud, "shape", "") if getattr(cloud, "provider", "") == "oci" else ""
    if shape.endswith(".Flex"):
        memory, cores = cloud.memory_gb * MIB, cloud.ocpus
    elif shape:
        memory, cores = 1 * MIB, 1  # VM.Standard.E2.1.Micro
    else:
        memory, cores = 4 * MIB, 2
    return HostSize(memory, cores, 0, 47 * MIB, 40 * MIB, assumed=True)


async def read_size(ctx: StageContext) -> HostSize:
    """The host's memory, cores, swap and disk, as it reports them (a dry run assumes them)."""
    import os

    tuned = os.environ.get(UNTUNED_ENV, "") != "1"
    result = await ctx.run(SIZE_COMMAND, check=False, dry_output="")
    if ctx.dry_run:
        return dataclasses.replace(assumed_size(ctx.answers), tuned=tuned)
    try:
        return parse_host_size(result.stdout, tuned=tuned)
    except ValueError:
        raise StageError(f"the host's size could not be read: {result.stdout.strip()[-200:] or result.stderr.strip()[-200:]}",
                         "check that /proc/meminfo, nproc and df work on the host") from None


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
        provider = ctx.deployment.provider
        deadline = time.monotonic() + provider.ssh_wait_seconds
        await remote.wait_until_up(deadline=deadline, progress=ctx.progress, retry_auth=provider.makes_host)
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
    info = await ctx.run("cat /etc/os-release; echo ARCH=$(dpkg --print-architecture)",
                         dry_output=ctx.deployment.provider.assumed_os_release(ctx.answers))
    found = parse_os_release(info.stdout)
    if found.id not in ("ubuntu", "debian") and "debian" not in found.id_like.split():
        raise StageError(f"the host runs {found.pretty or found.id or 'an unknown OS'}; the installer needs Ubuntu or Debian",
                         "use an Ubuntu 22.04/24.04 or Debian 12/13 server")
    ctx.give(found)
    ctx.found(f"host OS: {found.pretty} ({found.arch})")
    size = await read_size(ctx)
    ctx.give(size)
    ctx.found(f"host size: {size.describe()}" + ("" if size.tuned else f"; sizing off (${UNTUNED_ENV}=1: Synapse's generated defaults)"))

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
    if ctx.dry_run:  # shown as the condition it is, not as a check whose answer is then ignored
        ctx.log("where cloud-init is installed (command -v cloud-init), wait for it to finish:")
    elif not await ctx.probe("command -v cloud-init >/dev/null"):
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
