"""Docker's stages: host.docker (the engine with the compose v2 plugin), and services.start (the
deployment's compose file, every service up and ready)."""

from __future__ import annotations

import shlex

from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.apt import add_keyring, apt_install, ensure_service, installed, package_known, sources_changed
from installer.host.connect import HostOS, HostSize
from installer.host.containers import inspect, show_logs, wait_ready
from installer.host.layout import COMPOSE, COMPOSE_FILE, PROJECT, compose

q = shlex.quote


# --- host.docker ------------------------------------------------------------------------------

DOCKER_KEYRING = "/etc/apt/keyrings/docker.asc"
DOCKER_SOURCES = "/etc/apt/sources.list.d/docker.list"
DOCKER_VENDOR_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin")


def docker_source_line(found: HostOS) -> str:
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
    found = ctx.take(HostOS)
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
    ctx.found(f"Docker {engine}, compose {compose}")
    user = ctx.answers.ssh.user
    groups = await ctx.run(f"id -nG -- {q(user)}", dry_output=user)
    if "docker" not in groups.stdout.split():
        await ctx.run(f"usermod -aG docker -- {q(user)}", sudo=True)
        ctx.log(f"{user} joined the docker group (it takes effect at the next login)")
        changed = True
    return Status.DONE if changed else Status.UNCHANGED


# --- services.start ---------------------------------------------------------------------------

async def changed_since(ctx: StageContext, paths: tuple[str, ...], started_at: float) -> bool:
    """Whether any of the files changed after the container started (so it runs an old config)."""
    if not paths:
        return False
    result = await ctx.run(f"stat -c %Y {' '.join(q(p) for p in paths)}", sudo=True, check=False, dry_output="0")
    stamps = [float(word) for word in result.stdout.split() if word.isdigit()]
    return bool(stamps) and max(stamps) > started_at


async def start_services(ctx: StageContext) -> Status:
    """docker-compose.yml from the deployment, `docker compose up -d`; a service whose config
    changed since it started is restarted; every service ready. The services are sized for the
    host (the HostSize this stage takes)."""
    d = ctx.deployment.sized(ctx.take(HostSize))
    changed = False
    if not await ctx.probe(f"test -d {q(PROJECT)}", sudo=True):
        await ctx.run(f"install -d -m 0755 {q(PROJECT)}", sudo=True)
    if await ctx.put_file(COMPOSE_FILE, d.compose_file().encode(), mode=0o644, owner="root:root"):
        changed = True
    before = {s.name: await inspect(ctx, s.name, dry_output="") for s in d.services}
    await ctx.run(compose("up", "-d", "--remove-orphans"), sudo=True, timeout=900)
    for service in d.services:
        was, now = before[service.name], await inspect(ctx, service.name, dry_output="")
        if was is None or now is None or (was.id, was.started_at) != (now.id, now.started_at):
            changed = True
        elif await changed_since(ctx, service.config_files, now.started_at):
            ctx.log(f"{service.name}'s configuration changed since it started: restarting it")
            await ctx.run(compose("restart", service.name), sudo=True, timeout=300)
            changed = True
    for service in d.services:
        ready, why = await wait_ready(ctx, service)
        if not ready:
            await show_logs(ctx, service.name)
            raise StageError(f"{service.name} is not ready ({why}); its last log lines are above",
                             f"on the host: sudo {COMPOSE} logs {service.name}")
        ctx.found(f"{service.name} is ready")
    return Status.DONE if changed else Status.UNCHANGED
