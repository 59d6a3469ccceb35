"""Stage caddy.config: the Caddyfile from the template, validated on the host before Caddy loads it."""

from __future__ import annotations

import shlex

from installer.engine import StageContext, StageError
from installer.events import Status

q = shlex.quote

CADDYFILE = "/etc/caddy/Caddyfile"
CANDIDATE = "/etc/caddy/Caddyfile.matrix-installer-new"
"""The new file is validated here first, so the live one is never replaced by a broken one."""


def validate_command(path: str) -> str:
    # As the caddy user with its HOME (both packages use /var/lib/caddy): validation provisions
    # the local CA (tls internal) in the storage the service itself uses, not in root's home.
    return f"runuser -u caddy -- env HOME=/var/lib/caddy caddy validate --adapter caddyfile --config {q(path)}"


async def _reload(ctx: StageContext, active: bool):
    if active:
        return await ctx.run("systemctl reload caddy", sudo=True, check=False, timeout=120)
    return await ctx.run("systemctl enable caddy && systemctl restart caddy", sudo=True, check=False, timeout=120)


async def configure(ctx: StageContext) -> Status:
    """Write /etc/caddy/Caddyfile when it differs (the previous one kept as a .bak), `caddy validate`
    first, then reload; the previous file is restored if Caddy does not take the new one."""
    from installer.render import RenderError, render_caddyfile

    try:
        wanted = render_caddyfile(ctx.answers).encode()
    except RenderError as exc:
        raise StageError(f"the Caddyfile cannot be written safely: {exc}", "check the domain answers") from None
    current = await ctx.read_file(CADDYFILE)
    active = await ctx.probe("systemctl is-active --quiet caddy", sudo=True)
    if current == wanted:
        if active:
            ctx.log(f"{CADDYFILE} is up to date and Caddy is running")
            return Status.UNCHANGED
        result = await _reload(ctx, active=False)
        if not result.ok:
            raise StageError("Caddy does not start with the current Caddyfile", "on the host: sudo journalctl -u caddy -n 50")
        return Status.DONE

    await ctx.put_file(CANDIDATE, wanted, mode=0o644, owner="root:root", backup=False)
    check = await ctx.run(validate_command(CANDIDATE), sudo=True, check=False, timeout=120)
    await ctx.run(f"rm -f {q(CANDIDATE)}", sudo=True)
    if not check.ok:
        last = "; ".join((check.stderr.strip() or check.stdout.strip()).splitlines()[-3:])
        raise StageError(f"Caddy rejects the new Caddyfile, so the previous one stays in place: {last}",
                         "this is a bug in the installer's template or a value it let through: please report it")
    await ctx.put_file(CADDYFILE, wanted, mode=0o644, owner="root:root")
    result = await _reload(ctx, active)
    if result.ok:
        ctx.log("Caddy runs the new configuration" + (" (certificates come from its local CA: tls = \"internal\")"
                                                      if ctx.answers.domain.tls == "internal" else ""))
        return Status.DONE
    if current is not None:
        await ctx.put_file(CADDYFILE, current, mode=0o644, owner="root:root", backup=False)
        await _reload(ctx, active)
        raise StageError("Caddy did not load the new Caddyfile; the previous one is restored and reloaded",
                         "on the host: sudo journalctl -u caddy -n 50 shows why")
    raise StageError("Caddy did not start with the new Caddyfile", "on the host: sudo journalctl -u caddy -n 50 shows why")
