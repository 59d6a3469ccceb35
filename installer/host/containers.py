"""Containers and images on the host, as install and upgrade both see them: one way to inspect a
container, one way to wait until a service is ready, one way to read an image."""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from installer.engine import StageContext
from installer.host.layout import compose
from installer.remote import CommandResult

if TYPE_CHECKING:
    from installer.components.base import Service

q = shlex.quote

POLL_SECONDS = 2.0
READY_TIMEOUT = 300.0
"""Seconds for a service to be ready after a (re)start: a new Synapse may migrate its database first."""
VERSION_LABEL = "org.opencontainers.image.version"
CONTAINER_FORMAT = ("{{.Id}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} "
                    "{{.State.StartedAt}} {{.RestartCount}} {{.Image}} {{.Config.Image}}")
# JSON for the lists: Go's `join` fails on them in some Docker versions ("expected []string").
IMAGE_FORMAT = "{{.Id}} {{.Size}} {{json .RepoDigests}} {{json .Config.Labels}}"


# --- containers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ContainerInfo:
    id: str
    status: str
    health: str
    """Docker's health status ("starting", "healthy", "unhealthy"), or "none" without a healthcheck."""
    started_at: float
    restarts: int
    image_id: str
    image_ref: str

    @property
    def running(self) -> bool:
        return self.status == "running"


def _rfc3339(value: str) -> float:
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", value)
    if not m:
        return 0.0
    zone = m.group(3) or "Z"
    stamp = datetime.fromisoformat(m.group(1) + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + float(f"0.{m.group(2)}") if m.group(2) else stamp


def parse_container(text: str) -> ContainerInfo | None:
    """One line of CONTAINER_FORMAT."""
    parts = text.strip().splitlines()[-1].split() if text.strip() else []
    if len(parts) != 7 or not parts[4].isdigit():
        return None
    return ContainerInfo(parts[0], parts[1], parts[2], _rfc3339(parts[3]), int(parts[4]), parts[5], parts[6])


def _quiet(line: str, kind: str) -> None:
    """Repeated polls: the first is shown; the rest would only fill the log."""


async def run_quietly(ctx: StageContext, command: str, *, shown: bool, sudo: bool = True, dry_output: str = "") -> CommandResult:
    """A command polled again and again: logged the first time (`shown`) only."""
    if shown:
        return await ctx.run(command, sudo=sudo, check=False, dry_output=dry_output)
    return await ctx.remote.run(command, log=_quiet, sudo=sudo, check=False, timeout=60, dry_output=dry_output)


def dry_container(image: str) -> str:
    """What the dry run pretends `docker inspect` said: a healthy container of `image`."""
    return f"DRYRUN running healthy 2000-01-01T00:00:00Z 0 sha256:OLDIMAGE {image}"


async def inspect(ctx: StageContext, name: str, *, shown: bool = True, dry_output: str = "") -> ContainerInfo | None:
    result = await run_quietly(ctx, f"docker inspect --format {q(CONTAINER_FORMAT)} {q(name)}", shown=shown,
                               dry_output=dry_output)
    return parse_container(result.stdout) if result.ok else None


async def wait_ready(ctx: StageContext, service: Service, *, image_id: str | None = None, fresh: bool = False,
                     timeout: float = READY_TIMEOUT) -> tuple[bool, str]:
    """Wait until `service`'s container runs (`image_id`, when given) and is ready: Docker says
    healthy, or the service's own probe answers. Returns (ready, why not).

    A restart (Docker restarting it, or its restart count going up), an exit or Docker's
    "unhealthy" fail at once: a service that crashed once after a start is not one to keep
    waiting for."""
    deadline = time.monotonic() + timeout
    first = True
    why = "it did not start"
    restarts: int | None = 0 if fresh else None
    while True:
        info = await inspect(ctx, service.name, shown=first, dry_output=dry_container(service.image))
        if info is not None and restarts is None:
            restarts = info.restarts
        if info is None:
            why = "the container does not exist"
        elif image_id is not None and info.image_id != image_id and not ctx.dry_run:
            why = f"the container runs {short_id(info.image_id)}, not {short_id(image_id)}"
        elif info.status in ("exited", "dead", "restarting") or info.restarts > (restarts or 0) or info.health == "unhealthy":
            detail = (f"restarted {info.restarts - (restarts or 0)} time(s)" if info.restarts > (restarts or 0)
                      else "keeps restarting" if info.status == "restarting"
                      else "is unhealthy" if info.health == "unhealthy" else info.status)
            return False, f"the container {detail}"
        elif info.running:
            if info.health == "healthy":
                return True, ""
            if service.probe:
                if first:
                    ctx.log(f"$ {service.probe}  (every {POLL_SECONDS:.0f} s until it answers, up to {timeout:.0f} s)", "command")
                probe = await run_quietly(ctx, service.probe, shown=False, dry_output="OK")
                if probe.ok:
                    return True, ""
                why = (probe.stderr.strip().splitlines() or probe.stdout.strip().splitlines() or ["no answer"])[-1]
            else:
                why = f"Docker's health check says {info.health}"
        else:
            why = f"the container is {info.status}"
        first = False
        left = deadline - time.monotonic()
        if left <= 0:
            return False, f"not ready within {timeout:.0f} s: {why}"
        ctx.progress(f"waiting for {service.name} to be ready: {left:.0f} s left", 1 - left / timeout)
        await ctx.sleep(POLL_SECONDS)


async def show_logs(ctx: StageContext, service: str, lines: int = 80) -> None:
    ctx.log(f"the last lines of {service}'s log:")
    await ctx.run(compose("logs", "--no-color", "--tail", str(lines), service), sudo=True, check=False)


# --- images -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageInfo:
    id: str
    digests: tuple[str, ...] = ()
    version: str = ""
    size: int = 0

    @property
    def digest(self) -> str:
        """The registry digest (`sha256:...`) when the image came from a registry, else ''."""
        return self.digests[0].split("@", 1)[1] if self.digests and "@" in self.digests[0] else ""

    def describe(self) -> str:
        what = f"image {short_id(self.id)}"
        if self.digest:
            what += f", digest {short_id(self.digest)}"
        return what


def parse_image(text: str) -> ImageInfo | None:
    """One line of IMAGE_FORMAT: ID, size, repo digests (JSON), labels (JSON)."""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    parts = line.split(" ", 2)
    if len(parts) != 3 or not parts[0].startswith("sha256:") or not parts[1].isdigit():
        return None
    decoder = json.JSONDecoder()
    try:
        digests, end = decoder.raw_decode(parts[2])
        labels, _ = decoder.raw_decode(parts[2][end:].lstrip())
    except ValueError:
        return None
    digests = tuple(d for d in digests or () if isinstance(d, str))
    version = (labels or {}).get(VERSION_LABEL, "") if isinstance(labels, dict) else ""
    return ImageInfo(parts[0], digests, str(version), int(parts[1]))


async def image(ctx: StageContext, ref: str, *, dry_output: str) -> ImageInfo | None:
    result = await ctx.run(f"docker image inspect --format {q(IMAGE_FORMAT)} -- {q(ref)}",
                           sudo=True, check=False, dry_output=dry_output)
    return parse_image(result.stdout) if result.ok else None


def short_id(image_id: str) -> str:
    """`sha256:0123456789ab...` as Docker shows it: the first 12 hex digits."""
    algorithm, _, digest = image_id.partition(":")
    return f"{algorithm}:{digest[:12]}" if digest else image_id[:12]


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKMGT]?i?B)")
_UNITS = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
          "KiB": 1024, "kiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def parse_reclaimed(text: str) -> int:
    """Bytes from `docker image prune`'s "Total reclaimed space: 1.2GB" (Docker's sizes are decimal)."""
    match = re.search(r"Total reclaimed space:\s*" + _SIZE.pattern, text)
    if not match:
        return 0
    return int(float(match.group(1)) * _UNITS.get(match.group(2), 1))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
