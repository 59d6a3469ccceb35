"""The workers' install stages:

- workers.plan: the layout (which workers run where) from the answers and the hosts' sizes,
  kept in the state; the rest of the run reads the deployment with it;
- workers.config: Redis's password, the replication secret, the workers' log config and each
  main-host worker's config file (before the containers start);
- workers.firewall: the main host's private ports open to the worker hosts alone;
- workers.hosts: each worker host made ready and running its workers (and hosts no longer
  listed taken down);
- workers.check: Redis answers, every worker answers its health check from the main host;
- workers.remove: after `preset = "none"`, what the workers left behind goes.
"""

from __future__ import annotations

import shlex

from installer.components.workers import (
    DEPLOYED,
    HOSTS_DEPLOYED,
    LAYOUT,
    LOG_CONFIG,
    LOG_CONFIG_TEXT,
    REDIS,
    REDIS_CONF,
    REDIS_PASSWORD,
    REPLICATION_SECRET,
    VMS,
    WORKERS_DIR,
    layout_of,
    redis_conf,
    worker_config_text,
)
from installer.components.workers import layout as _layout
from installer.components.workers.firewall import admit_only
from installer.components.workers.hosts import deploy, deployed_hosts, each_host, open_host, private_source, shared_files, take_down
from installer.components.workers.layout import Layout, WorkerHost
from installer.components.workers.services import health, reached_from_worker_hosts
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.connect import HostSize
from installer.host.layout import in_project

q = shlex.quote


def refresh_deployment(ctx: StageContext) -> None:
    """Later stages see the deployment with the layout just remembered: the session makes it anew
    from the state's facts on its next use."""
    ctx.session.__dict__.pop("deployment", None)


# --- workers.plan ---------------------------------------------------------------------------

def host_entries(ctx: StageContext) -> list[WorkerHost]:
    """The `hosts` answers as hosts: a server of the user's own as given; "new", the instance the
    installer made for it on Oracle Cloud (workers.vms)."""
    made = list(ctx.facts.get(VMS) or [])
    found, new = [], 0
    for text in ctx.answers.workers.hosts:
        entry = _layout.parse_host(text)
        if entry.new:
            if new >= len(made):
                if ctx.dry_run:
                    found.append(WorkerHost(f"10.0.0.{10 + new}", "ssh-ed25519 AAAA(dry-run)", instance_id="DRY-RUN"))
                    new += 1
                    continue
                raise StageError("the instance made for a worker host is not known yet", "rerun: workers.vms makes it first")
            vm = made[new]
            found.append(WorkerHost(str(vm["private_ip"]), str(vm["host_key"]), instance_id=str(vm["id"])))
            new += 1
        else:
            found.append(WorkerHost(entry.address, entry.host_key))
    return found


async def plan(ctx: StageContext) -> Status:
    """Which workers run where: the auto rule (or the custom counts) on the main host's size and on
    each worker host's, which is connected to first (its OS and size read)."""
    a = ctx.answers.workers
    size = ctx.take(HostSize)
    custom = _layout.parse_custom(a.custom)
    counts = _layout.auto_counts(size.cores, size.memory_mib) if a.preset == "auto" else custom
    if a.preset == "auto" and not counts:
        ctx.log(f"auto: {size.cores} core(s) and {size.memory_mib} MiB is too small for workers to help: one Synapse "
                "process (the rule: " + _layout.AUTO_RULE + ")")
    hosts: list[tuple[WorkerHost, dict[str, int]]] = []
    for host in host_entries(ctx):
        hctx = await open_host(ctx, host)
        try:
            found = hctx.take(HostSize)
        finally:
            await hctx.remote.close()
        sized = WorkerHost(host.address, host.host_key, found.cores, found.memory_mib, host.instance_id)
        hosts.append((sized, _layout.worker_host_counts(a.preset, custom, found.cores, found.memory_mib)))
    main_private = await private_source(ctx, hosts[0][0].address) if hosts else ""
    layout = _layout.resolve(counts, hosts, main_private=main_private, cores=size.cores, memory_mib=size.memory_mib)
    for line in describe(layout):
        ctx.log(line)
    changed = ctx.facts.get(LAYOUT) != layout.to_fact()
    if changed:
        ctx.remember(LAYOUT, layout.to_fact())
    refresh_deployment(ctx)
    return Status.DONE if changed else Status.UNCHANGED


def describe(layout: Layout) -> list[str]:
    if not layout.workers:
        return ["no workers"]
    lines = [f"main host ({layout.cores} cores, {layout.memory_mib} MiB): "
             + (", ".join(f"{w.name} (:{w.port})" for w in layout.on("")) or "no workers")]
    for host in layout.hosts:
        lines.append(f"worker host {host.address} ({host.cores} cores, {host.memory_mib} MiB): "
                     + ", ".join(f"{w.name} (:{w.port})" for w in layout.on(host.address)))
    if layout.main_private:
        lines.append(f"the worker hosts reach Postgres, Redis and replication on the main host's {layout.main_private}")
    return lines


# --- workers.config -------------------------------------------------------------------------

async def _owner(ctx: StageContext) -> str:
    """Synapse's user in its containers, as the owner of its homeserver.yaml says."""
    from installer.components.synapse import CONFIG

    meta = await ctx.run(f"stat -c '%u:%g' {q(CONFIG)}", sudo=True, dry_output="991:991")
    return meta.stdout.strip() or "991:991"


async def _secret_file(ctx: StageContext, path: str, owner: str) -> tuple[str, bool]:
    """A secret kept in a file (made when missing, never changed once made): (secret, changed)."""
    import secrets as _random

    raw = await ctx.read_file(path)
    value = raw.decode("utf-8", "replace").strip() if raw else ""
    made = not value
    if made:
        value = _random.token_urlsafe(32)
    ctx.secret(value)
    changed = await ctx.put_file(path, (value + "\n").encode(), owner=owner, mode=0o600, backup=False, secret=True)
    return value, changed or made


def _conf_password(raw: bytes | None) -> str:
    for line in (raw or b"").decode("utf-8", "replace").splitlines():
        if line.startswith("requirepass "):
            return line.split(" ", 1)[1].strip()
    return ""


async def configure(ctx: StageContext) -> Status:
    """The files the Synapse processes and Redis read at start: secrets (root-only but for the user
    that reads them), the log config, and each main-host worker's config file."""
    layout = layout_of(ctx.deployment)
    owner = await _owner(ctx)
    changed = False
    folder = in_project(WORKERS_DIR)
    if not await ctx.probe(f"test -d {q(folder)}", sudo=True):
        await ctx.run(f"install -d -m 0755 {q(folder)}", sudo=True)
        changed = True
    # Redis's password: in redis.conf for Redis (its user in the image is 999) and a file for Synapse.
    known = _conf_password(await ctx.read_file(in_project(REDIS_CONF)))
    if known:
        ctx.secret(known)
        if await ctx.put_file(in_project(REDIS_PASSWORD), (known + "\n").encode(), owner=owner, mode=0o600, backup=False,
                              secret=True):
            changed = True
        password = known
    else:
        password, made = await _secret_file(ctx, in_project(REDIS_PASSWORD), owner)
        changed = changed or made
    if await ctx.put_file(in_project(REDIS_CONF), redis_conf(password).encode(), owner="999:0", mode=0o600, backup=False,
                          secret=True):
        changed = True
    _, made = await _secret_file(ctx, in_project(REPLICATION_SECRET), owner)
    changed = changed or made
    if await ctx.put_file(in_project(LOG_CONFIG), LOG_CONFIG_TEXT.encode(), mode=0o644, backup=False):
        changed = True
    wanted = {in_project(f"data/{w.config_file}"): w for w in layout.on("")}
    for path, worker in wanted.items():
        if await ctx.put_file(path, worker_config_text(worker).encode(), mode=0o644, backup=False):
            changed = True
    listed = await ctx.run(f"find {q(folder)} -maxdepth 1 -name '*.yaml'", sudo=True, check=False, dry_output="")
    for stale in sorted(set(listed.stdout.split()) - set(wanted)):
        await ctx.run(f"rm -f -- {q(stale)}", sudo=True)
        ctx.log(f"removed the config of a worker no longer wanted: {stale}")
        changed = True
    if not ctx.facts.get(DEPLOYED):
        ctx.remember(DEPLOYED, True)
    return Status.DONE if changed else Status.UNCHANGED


# --- workers.firewall -----------------------------------------------------------------------

async def open_to_worker_hosts(ctx: StageContext) -> Status:
    """Postgres, Redis and the replication listener, published on the main host's private address
    for the worker hosts, admitted from their addresses only (DOCKER-USER, live and saved)."""
    d = ctx.deployment
    layout = layout_of(d)
    ports = reached_from_worker_hosts(d, layout) if layout.hosts else []
    changed = await admit_only(ctx, layout.main_private, ports, [h.address for h in layout.hosts])
    if not changed:
        ctx.log("the firewall already admits exactly the worker hosts" if layout.hosts else "no worker hosts: nothing to admit")
    return Status.DONE if changed else Status.UNCHANGED


# --- workers.hosts --------------------------------------------------------------------------

async def run_on_hosts(ctx: StageContext) -> Status:
    """Each worker host running its workers; a host no longer in the answers taken down."""
    layout = layout_of(ctx.deployment)
    wanted = {h.address for h in layout.hosts}
    gone = [h for h in deployed_hosts(ctx) if h.address not in wanted]
    changed = False
    if layout.hosts:
        files = await shared_files(ctx)
        results = await each_host(ctx, list(layout.hosts), lambda hctx: deploy(ctx, hctx, layout, files))
        changed = any(results)
    remembered = [[h.address, h.host_key] for h in layout.hosts]
    if (ctx.facts.get(HOSTS_DEPLOYED) or []) != remembered:
        ctx.remember(HOSTS_DEPLOYED, remembered)
    if gone:
        results = await each_host(ctx, gone, take_down)
        for host in gone:
            ctx.log(f"took the workers off {host.address}: it is no longer a worker host")
        changed = changed or any(results)
    return Status.DONE if changed else Status.UNCHANGED


# --- workers.check --------------------------------------------------------------------------

async def check(ctx: StageContext) -> Status:
    """Redis answers; every worker answers its health check from the main host (the worker hosts'
    through the private network and their firewalls, as Caddy reaches them)."""
    from installer.components.workers.services import redis_service

    layout = layout_of(ctx.deployment)
    probe = redis_service(ctx.deployment).probe
    if not (await ctx.run(probe, sudo=True, check=False)).ok and not ctx.dry_run:
        raise StageError("Redis does not answer (PING with its password)", f"on the host: sudo docker logs {REDIS}")
    failed = []
    for worker in layout.workers:
        result = await ctx.run(health(worker.port, worker.host or "127.0.0.1"), check=False, dry_output="OK")
        if result.stdout.strip() != "OK":
            failed.append(f"{worker.name} ({worker.host or 'main host'}:{worker.port})")
    if failed and not ctx.dry_run:
        raise StageError(f"these workers do not answer their health check from the main host: {', '.join(failed)}",
                         "see `sudo docker logs synapse-NAME` on their host; a worker host's firewall must admit the "
                         f"main host's {layout.main_private}")
    ctx.found(f"Redis and all {len(layout.workers)} workers answer")
    return ctx.proven()


# --- workers.remove -------------------------------------------------------------------------

async def remove(ctx: StageContext) -> Status:
    """After `preset = "none"`: the workers' files on the main host go (the containers went with the
    compose file, their routes with the Caddyfile, their keys with homeserver.yaml's edit)."""
    changed = False
    for path in (in_project(WORKERS_DIR), in_project(REDIS_CONF)):
        if await ctx.probe(f"test -e {q(path)}", sudo=True):
            await ctx.run(f"rm -rf -- {q(path)}", sudo=True)
            changed = True
    for vm in ctx.facts.get(VMS) or []:
        ctx.log(f"the Oracle Cloud instance {vm.get('id')} made for workers runs none now: terminate it in the console "
                "(Compute > Instances) when it is no longer wanted")
    for fact in (LAYOUT, HOSTS_DEPLOYED, DEPLOYED):
        if fact in ctx.facts:
            ctx.forget(fact)
            changed = True
    ctx.log("the workers, Redis and their routes are gone: one Synapse process serves everything again")
    return Status.DONE if changed else Status.UNCHANGED
