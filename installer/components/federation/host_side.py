"""What the federation check asks on the host: the outbound check through our homeserver (and the
look for its cause), and the self-test's last result (`--check` reaches the host of a deployment
this machine installed through installer.host.saved)."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from installer.engine import StageContext, StageError
from installer.federation.outbound import (
    PROBE_LOCALPART,
    PROBE_SCRIPT,
    Probe,
    diagnose,
    docker_user_rules,
    failed_words,
    homeserver_said,
    judge_answer,
    not_tested,
    probe_path,
)
from installer.federation.report import Check

q = shlex.quote


# --- outbound ----------------------------------------------------------------------------------

async def outbound(ctx: StageContext, *, base_url: str | None, net_options: dict[str, Any]) -> Check:
    """Our server reaches ctx.options.peer over federation: asked on the host's loopback through
    the Homeserver interface when this run is connected to the host, else through the server's
    public client API (`base_url`). A failure is explained by a look from inside the homeserver's
    container and from the host (when connected)."""
    peer = ctx.options.peer
    server_name = ctx.answers.domain.server_name
    if not peer:
        return not_tested("no peer to reach (--peer none)")
    if peer.lower() == server_name.lower():
        return Check("outbound", False, f"the peer {peer} is this server itself: outbound federation needs another one",
                     "give another server with --peer (the default is matrix.org)")
    path = probe_path(peer)
    started = time.monotonic()
    status: int | None
    if ctx.session.remote is not None:
        via = "asked on the host's loopback"
        try:
            answer = await ctx.deployment.homeserver.api(ctx, "GET", path, dry_output='{"errcode":"M_NOT_FOUND"}\n404')
            status, body = answer.status, answer.body
        except StageError:
            status, body = None, ""
    elif base_url:
        from installer.federation.net import Net, NetError

        via = f"asked through {base_url}"
        ctx.log(f"GET {base_url}{path}", "command")
        async with Net(**net_options, timeout=60) as net:
            try:
                fetched = await net.fetch(base_url + path)
                status, body = fetched.status, fetched.body.decode("utf-8", "replace")
            except NetError as exc:
                return Check("outbound", False, f"{base_url} did not answer the look-up on {peer}: {exc.message}",
                             "see the client checks above")
    else:
        return not_tested("the server's client API was not found (see client-well-known)")
    seconds = time.monotonic() - started
    if ctx.dry_run:
        return not_tested("a dry run asks nothing")
    passed = judge_answer(peer, status or 0, body, seconds, via)
    if passed is not None:
        return passed
    words = failed_words(peer, status, body, seconds)
    if ctx.session.remote is None:
        return Check("outbound", False, words,
                     "run the check from the machine that installed this server (it looks from inside the "
                     "homeserver's container to name the cause), or see the homeserver's log")
    return await _explain(ctx, peer, words)


async def _explain(ctx: StageContext, peer: str, words: str) -> Check:
    service = ctx.deployment.homeserver.service
    ctx.progress(f"looking for why our server cannot reach {peer}")
    inside = await ctx.run(f"docker exec -i {q(service)} python3 - {q(peer)}", sudo=True, check=False, timeout=90,
                           input=PROBE_SCRIPT)
    on_host = await ctx.run(f"python3 - {q(peer)}", check=False, timeout=90, input=PROBE_SCRIPT)
    rules = await ctx.run("iptables -S DOCKER-USER", sudo=True, check=False)
    logged = await ctx.run(f"docker logs --since 10m {q(service)} 2>&1 | grep -F {q(PROBE_LOCALPART)} | tail -n 3",
                           sudo=True, check=False)
    return diagnose(peer, words, Probe.parse(inside.stdout), Probe.parse(on_host.stdout),
                    docker_user_rules(rules.stdout), service=service, said=homeserver_said(logged.stdout, peer))


# --- the self-test's last result ------------------------------------------------------------------

STALE_SECONDS = 2 * 86400 + 3600


async def server_health(ctx: StageContext, facts: dict[str, Any]) -> Check | None:
    """`server-health`: the host's self-test, as it last ran (when, passed or not) and whether its
    timer runs; None for a deployment without one."""
    from installer.components.selftest import DEPLOYED, LAST, UNIT

    if not facts.get(DEPLOYED):
        return None
    shown = await ctx.run(f"systemctl show -p LoadState -p ActiveState -p NextElapseUSecRealtime {UNIT}.timer; "
                          f"echo ---; cat {q(LAST)} 2>/dev/null || true", sudo=True, check=False,
                          dry_output="LoadState=loaded\nActiveState=active\n---\n")
    head, _, last_text = shown.stdout.partition("---")
    props = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if props.get("LoadState") != "loaded":
        return Check("server-health", False, f"the self-test's timer ({UNIT}.timer) is not installed on the host",
                     "rerun the installer (or its upgrade) to put it back")
    if props.get("ActiveState") != "active":
        return Check("server-health", False, f"the self-test's timer ({UNIT}.timer) is {props.get('ActiveState')}: "
                     "the server no longer tests itself", f"on the host: sudo systemctl enable --now {UNIT}.timer")
    following = props.get("NextElapseUSecRealtime", "").strip()
    next_words = f"next run {following}" if following else "next run not scheduled yet"
    try:
        last = json.loads(last_text.strip()) if last_text.strip() else None
    except ValueError:
        last = None
    if not isinstance(last, dict) or not isinstance(last.get("at"), int):
        return Check("server-health", True, f"the self-test's timer is active, no result yet ({next_words})")
    from datetime import datetime, timezone

    at = datetime.fromtimestamp(last["at"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    age = time.time() - last["at"]
    ago = f"{age / 3600:.0f} h ago" if age >= 3600 else f"{max(age, 0) / 60:.0f} min ago"
    checks = [Check.from_json(c) for c in last.get("checks", []) if isinstance(c, dict)]
    failed = [c for c in checks if not c.ok]
    warned = [c for c in checks if c.ok and c.warning]
    if age > STALE_SECONDS:
        return Check("server-health", False, f"the self-test last ran at {at} ({ago}): the timer does not run it",
                     f"on the host: systemctl status {UNIT}.timer {UNIT}.service; journalctl -u {UNIT}")
    if failed:
        return Check("server-health", True,
                     f"the self-test at {at} ({ago}) FAILED: " + "; ".join(f"{c.name}: {c.detail}" for c in failed),
                     failed[0].fix or f"see {UNIT}'s notice in the admin's room", warning=True)
    summary = f"the self-test at {at} ({ago}) passed {len(checks)} checks" + (
        f", with a warning: {warned[0].name}: {warned[0].detail}" if warned else "") + f"; {next_words}"
    return Check("server-health", True, summary, warned[0].fix if warned else None, warning=bool(warned))


def net_options(ctx: StageContext) -> dict[str, Any]:
    options = ctx.options
    return {"connect_to": options.connect_to, "dns_server": options.dns_server, "ca_file": options.ca_file}

