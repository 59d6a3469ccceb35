"""Worker hosts: reached over SSH through the main host (by their private address, so they need
no public one), each with Docker, a copy of the shared config, its workers, and a firewall that
lets only the main host reach them.

The same login as the main host's (`ssh.user`, `ssh.private_key`); the host key pinned in the
`hosts` entry (or given to a new Oracle Cloud instance through cloud-init), never trusted on
first sight.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path
from typing import Any

from installer.components.docker.stages import changed_since
from installer.components.workers import HOSTS_DEPLOYED, LOG_CONFIG, REDIS_PASSWORD, REPLICATION_SECRET, worker_config_text
from installer.components.workers.firewall import admit_only
from installer.components.workers.layout import Layout, WorkerHost
from installer.components.workers.services import host_services
from installer.engine import PlanError, StageContext, StageError
from installer.host.connect import HostOS, HostSize, parse_os_release, read_size
from installer.host.containers import inspect, show_logs, wait_ready
from installer.host.layout import COMPOSE, COMPOSE_FILE, PROJECT, compose, in_project
from installer.remote import RecordingRemote, Remote

q = shlex.quote

SSH_WAIT_SECONDS = 90.0
MARKER = in_project("WORKER-HOST")
"""On a worker host: says the compose project there holds workers only (so taking them away may
remove the folder with its copies of the shared config and secrets)."""


class HostContext(StageContext):
    """A stage's context acting on a worker host: its commands go to that host's connection, its
    log lines name the host, and apt's state and the host's OS and size are its own."""

    def __init__(self, parent: StageContext, remote: Remote, label: str) -> None:
        super().__init__(parent.session, parent.stage)
        self._host_remote = remote
        self.label = label
        self._own: dict[type, Any] = {}

    @property
    def remote(self) -> Remote:
        return self._host_remote

    def log(self, line: str, kind: str = "log") -> None:
        super().log(f"[{self.label}] {line}", kind)

    def resource(self, kind: type) -> Any:
        if kind not in self._own:
            self._own[kind] = kind()
        return self._own[kind]

    def give(self, value: Any) -> None:
        self._own[type(value)] = value

    def take(self, kind: type) -> Any:
        if kind not in self._own:
            raise PlanError(f"nothing known of the worker host's {kind.__name__}")
        return self._own[kind]


async def open_host(ctx: StageContext, host: WorkerHost) -> HostContext:
    """A verified connection to a worker host, through the main host's; its OS checked and its
    size read (given to the returned context)."""
    from installer.ssh import SshRemote, SshTarget

    a = ctx.answers.ssh
    if ctx.dry_run:
        ctx.log(f"connect to {a.user}@{host.address}:22 through the main host's connection, accepting only the host "
                f"key {host.host_key.split()[0] if host.host_key else '(given to the new instance)'} pinned for it",
                "command")
        remote: Remote = RecordingRemote(host.address)
    else:
        target = SshTarget(host.address, 22, a.user, Path(a.private_key).expanduser(), host.host_key,
                           f"the host key pinned for {host.address} (workers.hosts)")
        remote = SshRemote(target)
        remote.tunnel = ctx.remote  # type: ignore[assignment]
        await remote.wait_until_up(deadline=time.monotonic() + SSH_WAIT_SECONDS, progress=ctx.progress,
                                   retry_auth=bool(host.instance_id))
    hctx = HostContext(ctx, remote, host.address)
    sudo = await hctx.run("true", sudo=True, check=False)
    if not sudo.ok:
        await remote.close()
        raise StageError(f"`sudo -n true` failed on the worker host {host.address}",
                         f"the SSH user {a.user} needs sudo without a password there too")
    info = await hctx.run("cat /etc/os-release; echo ARCH=$(dpkg --print-architecture)",
                          dry_output=ctx.deployment.provider.assumed_os_release(ctx.answers))
    found = parse_os_release(info.stdout)
    if found.id not in ("ubuntu", "debian") and "debian" not in found.id_like.split():
        await remote.close()
        raise StageError(f"the worker host {host.address} runs {found.pretty or found.id or 'an unknown OS'}",
                         "use an Ubuntu 22.04/24.04 or Debian 12/13 server")
    hctx.give(found)
    hctx.give(await read_size(hctx))
    return hctx


async def private_source(ctx: StageContext, address: str) -> str:
    """The main host's own address on the way to `address` (its private address on that network)."""
    result = await ctx.run(f"ip -o route get {q(address)}", dry_output=f"{address} dev eth0 src 10.0.0.2 uid 1000")
    words = result.stdout.split()
    if "src" not in words or words.index("src") + 1 >= len(words):
        raise StageError(f"the main host has no route to the worker host {address}",
                         "put both hosts on one private network (the same VCN subnet), then rerun")
    return words[words.index("src") + 1]


# --- deploying ------------------------------------------------------------------------------

async def shared_files(ctx: StageContext) -> dict[str, tuple[bytes, str, int]]:
    """What every worker host needs from the main host: path -> (content, owner, mode). The
    shared config, the signing key, the secrets the processes read, the database password."""
    from installer.components.homeserver import DatabaseSettings
    from installer.components.synapse import CONFIG, DATA
    from installer.components.synapse.config import read_setting
    from installer.components.synapse.stages import register_secrets

    raw = await ctx.read_file(CONFIG)
    if raw is None and not ctx.dry_run:
        raise StageError(f"{CONFIG} is missing on the main host", "rerun: synapse.config writes it")
    text = (raw or b"").decode("utf-8", "replace")
    register_secrets(ctx, text)
    meta = await ctx.run(f"stat -c '%u:%g' {q(CONFIG)}", sudo=True, dry_output="991:991")
    owner = meta.stdout.strip() or "991:991"
    files = {CONFIG: (raw or b"", owner, 0o600)}
    key = read_setting(text, "signing_key_path") if text else None
    if isinstance(key, str) and key.startswith("/data/") and "/" not in key.removeprefix("/data/"):
        path = f"{DATA}/{key.removeprefix('/data/')}"
        files[path] = (await ctx.read_file(path) or b"", owner, 0o600)
    for name in (REDIS_PASSWORD, REPLICATION_SECRET):
        content = await ctx.read_file(in_project(name)) or b""
        if content:
            ctx.secret(content.decode().strip())
        files[in_project(name)] = (content, owner, 0o600)
    files[in_project(LOG_CONFIG)] = (await ctx.read_file(in_project(LOG_CONFIG)) or b"", "root:root", 0o644)
    db = next((s for s in ctx.deployment.homeserver_settings() if isinstance(s, DatabaseSettings)), None)
    if db:
        content = await ctx.read_file(in_project(db.env_file)) or b""
        for line in content.decode("utf-8", "replace").splitlines():
            if "=" in line:
                ctx.secret(line.split("=", 1)[1])
        files[in_project(db.env_file)] = (content, "root:root", 0o600)
    return files


async def deploy(ctx: StageContext, hctx: HostContext, layout: Layout, files: dict[str, tuple[bytes, str, int]]) -> bool:
    """Docker, the files, the compose project, the firewall and the running workers on one worker
    host; returns whether anything changed."""
    from installer.components.docker.stages import install_docker
    from installer.render import render_compose

    address = hctx.label
    changed = await _changed(install_docker(hctx))
    d = ctx.deployment
    owner = next((o for path, (_, o, _) in files.items() if path.endswith("homeserver.yaml")), "991:991")
    if not await hctx.probe(f"test -d {q(in_project('data/workers'))}", sudo=True):
        uid, _, gid = owner.partition(":")
        await hctx.run(f"install -d -m 0755 {q(PROJECT)} && install -d -m 0750 -o {q(uid)} -g {q(gid)} "
                       f"{q(in_project('data'))} && install -d -m 0755 {q(in_project('data/workers'))}", sudo=True)
        changed = True
    for path, (content, file_owner, mode) in files.items():
        secret = mode == 0o600
        if await hctx.put_file(path, content, owner=file_owner, mode=mode, backup=False, secret=secret):
            changed = True
    workers = layout.on(address)
    for worker in workers:
        if await hctx.put_file(in_project(f"data/{worker.config_file}"), worker_config_text(worker).encode(), owner="root:root", mode=0o644,
                               backup=False):
            changed = True
    if await hctx.put_file(MARKER, b"matrix-installer: this compose project runs Synapse workers only\n",
                           mode=0o644, backup=False):
        changed = True
    services = host_services(d, layout, address)
    if await hctx.put_file(COMPOSE_FILE, render_compose(services).encode(), mode=0o644, owner="root:root"):
        changed = True
    ports = [w.port for w in workers]
    if await admit_only(hctx, address, ports, [layout.main_private]):
        changed = True
    before = {s.name: await inspect(hctx, s.name, dry_output="") for s in services}
    await hctx.run(compose("up", "-d", "--remove-orphans"), sudo=True, timeout=900)
    for service in services:
        was, now = before[service.name], await inspect(hctx, service.name, dry_output="")
        if was is None or now is None or (was.id, was.started_at) != (now.id, now.started_at):
            changed = True
        elif await changed_since(hctx, service.config_files, now.started_at):
            hctx.log(f"{service.name}'s configuration changed since it started: restarting it")
            await hctx.run(compose("restart", service.name), sudo=True, timeout=300)
            changed = True
    for service in services:
        ready, why = await wait_ready(hctx, service)
        if not ready:
            await show_logs(hctx, service.name)
            raise StageError(f"{service.name} on the worker host {address} is not ready ({why}); its last log lines are above",
                             f"on {address}: sudo {COMPOSE} logs {service.name}")
        hctx.found(f"{service.name} is ready")
    return changed


async def _changed(step: Any) -> bool:
    from installer.events import Status

    return await step is Status.DONE


async def take_down(hctx: HostContext) -> bool:
    """The workers off a worker host: its compose project down, our firewall rules gone, and the
    project's folder (copies of the shared config and secrets) removed, when it is ours."""
    changed = False
    if await hctx.probe(f"test -f {q(COMPOSE_FILE)}", sudo=True):
        await hctx.run(compose("down", "--remove-orphans"), sudo=True, timeout=600)
        changed = True
    if await admit_only(hctx, "", [], []):
        changed = True
    if await hctx.probe(f"test -f {q(MARKER)}", sudo=True):
        await hctx.run(f"rm -rf -- {q(PROJECT)}", sudo=True)
        changed = True
    return changed


async def each_host(ctx: StageContext, hosts: list[WorkerHost], work: Any) -> list[Any]:
    """`work(hctx)` on every host at once, each over its own connection (closed after)."""

    async def one(host: WorkerHost) -> Any:
        hctx = await open_host(ctx, host)
        try:
            return await work(hctx)
        finally:
            await hctx.remote.close()

    return list(await asyncio.gather(*(one(h) for h in hosts)))


def deployed_hosts(ctx: StageContext) -> list[WorkerHost]:
    """The worker hosts an earlier run put workers on."""
    return [WorkerHost(str(a), str(k)) for a, k in ctx.facts.get(HOSTS_DEPLOYED) or []]


__all__ = ["HostContext", "HostOS", "HostSize", "deploy", "deployed_hosts", "each_host", "open_host", "private_source",
           "shared_files", "take_down"]
