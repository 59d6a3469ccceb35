"""Stage host.compress (install, on Postgres): Synapse's state tables compressed every night by
synapse_auto_compressor (matrix-org/rust-synapse-compress-state), from its project's own image.

Why the image and not the package index: synapse-auto-compressor there is a wheel, not a command,
and not one to rely on: 0.1.4's x86_64 wheel holds an empty library, 0.1.0-0.1.2 (2021) are
x86_64 only, and none is built for aarch64 (Oracle's A1 shapes); its source needs a Rust
toolchain. The project publishes `synapse_auto_compressor` for amd64 and arm64 in its image.

The run joins the Postgres container's network namespace and connects on its loopback, which the
image's initdb trusts: no password on a command line. Each run leaves one line in
COMPRESS_STAMP (time, ok|failed, database bytes before and after), which `--check` reads.
"""

from __future__ import annotations

import shlex

from installer.components.tuning.health import COMPRESS_STAMP
from installer.engine import StageContext
from installer.events import Status
from installer.host.layout import BIN

q = shlex.quote

COMPRESSOR_IMAGE = "ghcr.io/matrix-org/rust-synapse-compress-state:latest"
SCRIPT = f"{BIN}/matrix-compress-state"
UNIT = "matrix-compress-state"
CHUNK_SIZE = 500
CHUNKS = 100
"""The project's example: 100 chunks of 500 state groups a night, each chunk's rows in memory."""
MEMORY = "384m"
"""The compressor's container limit: it runs at night beside everything else on a small box."""
SIZE_SQL = "select pg_database_size('synapse')"


def script_text(image: str = COMPRESSOR_IMAGE) -> str:
    return f"""#!/bin/sh
# Managed by matrix-installer: Synapse's state tables compressed by synapse_auto_compressor
# ({CHUNKS} chunks of {CHUNK_SIZE} state groups), run nightly by {UNIT}.timer; each run leaves
# "time ok|failed bytes-before bytes-after" in {COMPRESS_STAMP} (read by matrix-installer --check).
set -u
size() {{ docker exec postgres psql -U synapse -d synapse -Atc "{SIZE_SQL}" 2>/dev/null || echo 0; }}
before=$(size)
if docker run --rm --pull missing --network container:postgres --memory {MEMORY} {image} \\
    synapse_auto_compressor -p "host=127.0.0.1 user=synapse dbname=synapse" -c {CHUNK_SIZE} -n {CHUNKS}; then
    status=ok
else
    status=failed
fi
after=$(size)
echo "$(date +%s) $status $before $after" > {COMPRESS_STAMP}.tmp && mv {COMPRESS_STAMP}.tmp {COMPRESS_STAMP}
echo "state compression $status: database $before -> $after bytes"
[ "$status" = ok ]
"""


SERVICE = f"""[Unit]
Description=Compress Synapse's state tables (matrix-installer)
After=docker.service
Requires=docker.service

[Service]
Type=oneshot
ExecStart={SCRIPT}
Nice=10
IOSchedulingClass=idle
"""
TIMER = f"""[Unit]
Description=Compress Synapse's state tables nightly (matrix-installer)

[Timer]
OnCalendar=*-*-* 04:00:00
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""


async def install_timer(ctx: StageContext) -> Status:
    changed = False
    await ctx.run(f"install -d -m 0755 {q(BIN)}", sudo=True)
    for path, text, mode in ((SCRIPT, script_text(), 0o755), (f"/etc/systemd/system/{UNIT}.service", SERVICE, 0o644),
                             (f"/etc/systemd/system/{UNIT}.timer", TIMER, 0o644)):
        if await ctx.put_file(path, text.encode(), mode=mode, owner="root:root"):
            changed = True
    if changed:
        await ctx.run("systemctl daemon-reload", sudo=True)
    if not await ctx.probe(f"systemctl is-enabled --quiet {UNIT}.timer && systemctl is-active --quiet {UNIT}.timer", sudo=True):
        await ctx.run(f"systemctl enable --now {UNIT}.timer", sudo=True)
        changed = True
    ctx.log(f"state compression: nightly ({UNIT}.timer, around 04:00), {CHUNKS} chunks of {CHUNK_SIZE} state groups "
            f"with {COMPRESSOR_IMAGE}; run it now with `sudo systemctl start {UNIT}`")
    return Status.DONE if changed else Status.UNCHANGED
