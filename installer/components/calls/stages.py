"""The calls component's stages: turn.secret (the secret coturn and the homeserver share, before
the homeserver's config is written), turn.server (coturn installed, configured and running
behind the host's NAT) and turn.check (an allocation with the credentials a client gets from
the homeserver, and relays to private peers refused)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets as _random
import shlex
import time

from installer.components.calls import DEPLOYED_FACT, RELAY_PORTS, SECRET_FILE, TLS_PORT, TURN_PORT, relay_span
from installer.components.calls import coturn
from installer.components.homeserver import AdminCredentials
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.apt import apt_install, installed

q = shlex.quote

_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
PRIVATE_FACT = "turn.private_address"
"""State fact: the private address coturn relays from ("" when the public one is on an interface)."""
CERT_WAIT = 90.0
"""Seconds to wait for Caddy's first certificate for the Matrix host (ACME can take a minute)."""


# --- turn.secret -------------------------------------------------------------------------------

async def ensure_secret(ctx: StageContext) -> Status:
    """The shared secret in its root-only file: kept when there; else the one coturn already has
    (a lost file must not change what Synapse and coturn agree on); else a new one."""
    raw = await ctx.read_file(SECRET_FILE)
    value = raw.decode("utf-8", "replace").strip() if raw else ""
    made = False
    if not _SECRET.fullmatch(value):
        config = await ctx.read_file(coturn.CONFIG)
        kept = coturn.static_secret(config.decode("utf-8", "replace")) if config else None
        if kept and _SECRET.fullmatch(kept):
            value = kept
            ctx.log(f"{SECRET_FILE} was missing: the secret coturn has is kept there again")
        else:
            value, made = _random.token_urlsafe(48), True
    ctx.secret(value)
    changed = await ctx.put_file(SECRET_FILE, (value + "\n").encode(), mode=0o600, owner="root:root", backup=False,
                                 secret=True)
    if made:
        ctx.log(f"made the TURN shared secret: in {SECRET_FILE} only (root-only, 0600), then coturn's and Synapse's configs")
    return Status.DONE if changed else Status.UNCHANGED


async def read_secret(ctx: StageContext) -> str:
    raw = await ctx.read_file(SECRET_FILE)
    value = raw.decode("utf-8", "replace").strip() if raw else ""
    if not _SECRET.fullmatch(value):
        if ctx.dry_run:
            return "DRY-RUN-" + "x" * 32
        raise StageError(f"the TURN shared secret is missing from {SECRET_FILE}", "rerun: turn.secret makes it first")
    return ctx.secret(value)


# --- turn.server -------------------------------------------------------------------------------

async def find_nat(ctx: StageContext) -> coturn.Nat | None:
    """The host's NAT as the host itself sees it: the public address (Oracle: from the state; an
    existing server: ssh.host or what it resolves to) on an interface, or the private address the
    host reaches it from. None for a public address that is not IPv4 (no mapping is needed)."""
    public = await ctx.deployment.provider.host_address(ctx)
    try:
        address = ipaddress.ip_address(public)
    except ValueError:
        if not ctx.dry_run:
            raise StageError(f"the host's public address {public!r} is not an IP address") from None
        address = ipaddress.ip_address("203.0.113.10")
    if address.version != 4:
        ctx.log(f"the host's address {public} is IPv6: coturn needs no NAT mapping for it")
        return None
    if not address.is_global and not ctx.dry_run:
        ctx.log(f"warning: the host's address {public} is not a public one: callers outside its network cannot "
                "reach TURN there (for a server behind a home router, forward 3478, 5349 and the relay ports to it)")
    listing = await ctx.run("ip -o addr show", check=False, dry_output="2: ens3    inet 10.0.0.2/24 brd 10.0.0.255 scope global ens3")
    addresses = coturn.interface_addresses(listing.stdout)
    if str(address) in addresses:
        return coturn.Nat(str(address), None)
    route = await ctx.run(f"ip -4 route get {q(str(address))}", check=False,
                          dry_output=f"{address} via 10.0.0.1 dev ens3 src 10.0.0.2 uid 0")
    source = coturn.route_source(route.stdout)
    if source is None:
        raise StageError(f"the host has no route to its own public address {address} to learn its private address from",
                         "check the host's network (ip route) and rerun")
    return coturn.nat_for(str(address), addresses, source)


async def set_up_coturn(ctx: StageContext) -> Status:
    """coturn from the OS's packages, never running with its package's default (anonymous)
    configuration; ours, with the NAT mapping and the denied peers; Caddy's certificate for TLS;
    capped by systemd; enabled and running."""
    a = ctx.answers
    changed = False
    secret = await read_secret(ctx)
    nat = await find_nat(ctx)
    if nat is not None:
        ctx.log(nat.describe())
    networks = await ctx.deployment.provider.private_networks(ctx)
    if networks:
        ctx.log(f"relays to the host's own network are refused too: {', '.join(networks)}")
    relay = relay_span(a.calls.relay_ports) or relay_span(RELAY_PORTS)
    try:
        config = coturn.render_config(realm=a.domain.server_name, secret=secret, relay=relay, nat=nat,  # type: ignore[arg-type]
                                      networks=networks)
        script = coturn.certificate_script(a.domain.matrix_host)
    except coturn.ConfigProblem as exc:
        raise StageError(f"coturn's configuration cannot be written safely: {exc}") from None

    if not await installed(ctx, "coturn"):
        # The package starts coturn at once with its own configuration, which lets anyone relay:
        # masked, it cannot start until ours is in place.
        await ctx.run("systemctl mask coturn", sudo=True)
        await apt_install(ctx, "coturn")
        changed = True

    restart = False
    if ctx.dry_run:  # the plan shows what coturn is told, all but the secret
        shown = config.replace(f"static-auth-secret={secret}", f"static-auth-secret=(the secret in {SECRET_FILE})")
        for line in shown.splitlines():
            ctx.log(f"    | {line}", "file")
    if await ctx.put_file(coturn.CONFIG, config.encode(), mode=0o640, owner="root:turnserver", secret=True):
        restart = changed = True
    units = False
    for path, text, mode in ((coturn.DROP_IN, coturn.DROP_IN_TEXT, 0o644), (coturn.CERT_SERVICE, coturn.CERT_SERVICE_TEXT, 0o644),
                             (coturn.CERT_TIMER, coturn.CERT_TIMER_TEXT, 0o644)):
        if await ctx.put_file(path, text.encode(), mode=mode, owner="root:root", backup=False):
            units = changed = True
    if await ctx.put_file(coturn.CERT_SCRIPT, script.encode(), mode=0o755, owner="root:root", backup=False):
        changed = True
    if await copy_certificate(ctx):
        restart = changed = True

    if (await ctx.run("systemctl is-enabled coturn", sudo=True, check=False, dry_output="masked")).stdout.strip() == "masked":
        await ctx.run("systemctl unmask coturn", sudo=True)
        units = changed = True
    if units:
        await ctx.run("systemctl daemon-reload", sudo=True)
        restart = True
    if not await ctx.probe(f"systemctl is-enabled --quiet {coturn.CERT_UNIT}.timer && systemctl is-active --quiet {coturn.CERT_UNIT}.timer", sudo=True):
        await ctx.run(f"systemctl enable --now {coturn.CERT_UNIT}.timer", sudo=True)
        changed = True
    active = await ctx.probe("systemctl is-enabled --quiet coturn && systemctl is-active --quiet coturn", sudo=True)
    if not active or restart:
        await ctx.run("systemctl enable coturn && systemctl restart coturn", sudo=True, timeout=120)
        changed = True
    await wait_listening(ctx)
    private = nat.private if nat is not None and nat.private else ""
    if ctx.facts.get(PRIVATE_FACT) != private:
        ctx.remember(PRIVATE_FACT, private)
    if not ctx.facts.get(DEPLOYED_FACT):
        ctx.remember(DEPLOYED_FACT, True)
    low, high = relay  # type: ignore[misc]
    ctx.log(f"coturn runs: UDP/TCP {TURN_PORT}, TLS {TLS_PORT}, relays on UDP {low}-{high}")
    return Status.DONE if changed else Status.UNCHANGED


async def copy_certificate(ctx: StageContext) -> bool:
    """Caddy's certificate for the Matrix host copied for coturn; waits a while for Caddy's first
    one (coturn starts without TLS otherwise, and the daily copy restarts it once it is there).
    Returns whether it changed."""
    deadline = time.monotonic() + CERT_WAIT
    while True:
        result = await ctx.run(coturn.CERT_SCRIPT, sudo=True, dry_output="copied")
        said = result.stdout.split()[-1:] or ["missing"]
        if said[0] != "missing" or ctx.dry_run:
            return said[0] == "copied"
        if time.monotonic() > deadline:
            ctx.log(f"warning: Caddy has no certificate for {ctx.answers.domain.matrix_host} yet: TURN over TLS "
                    f"({TLS_PORT}) starts once it has (the daily {coturn.CERT_UNIT}.timer copies it and restarts coturn)")
            return False
        ctx.progress("waiting for Caddy's certificate for the Matrix host")
        await ctx.sleep(3)


async def wait_listening(ctx: StageContext, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        listening = await ctx.run(f"ss -Hlnup 'sport = :{TURN_PORT}'", sudo=True, check=False,
                                  dry_output=f'UNCONN 0 0 0.0.0.0:{TURN_PORT} 0.0.0.0:* users:(("turnserver",pid=1,fd=1))')
        if "turnserver" in listening.stdout:
            return
        if time.monotonic() > deadline:
            await ctx.run("journalctl -u coturn --no-pager -n 20", sudo=True, check=False)
            raise StageError(f"coturn does not listen on UDP {TURN_PORT}; its last log lines are above",
                             "on the host: sudo journalctl -u coturn -n 50")
        await ctx.sleep(1)


# --- turn.check --------------------------------------------------------------------------------

DENIED_PROBES = ("169.254.169.254",)
"""Peers a relay must refuse, whatever the host's network: the cloud metadata service; then the
host's own private address (behind NAT), else a private one. Each run of coturn's client holds two
of the relay's ports (its probe allocation and the real one) until coturn lets them expire, 10
minutes later: the check makes three runs, six ports of the range's 49 by default."""


def secret_credentials(secret: str, user: str, seconds: int = 600) -> tuple[str, str]:
    """TURN REST API credentials, as the homeserver makes them: "expiry:user" and its HMAC-SHA1."""
    username = f"{int(time.time()) + seconds}:{user}"
    return username, base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


async def client_credentials(ctx: StageContext) -> tuple[str, str, str]:
    """(username, password, how they were obtained): as a client gets them, from a logged-in
    user's GET /_matrix/client/v3/voip/turnServer; made from the shared secret the way Synapse
    makes them when this run does not know the admin's password."""
    from installer.components.registration.stages import admin_token, kept_admin_token

    homeserver = ctx.deployment.homeserver
    admin = ctx.take(AdminCredentials)
    # The admin's kept session (a login only when there is none): a login per run would soon meet
    # Synapse's per-account login limit (5, then one per 5 minutes).
    token = await admin_token(ctx) if admin.password else await kept_admin_token(ctx)
    if token:
        answer = await homeserver.api(ctx, "GET", "/_matrix/client/v3/voip/turnServer", token=token,
                                      dry_output='{"username": "DRY", "password": "DRY", "uris": []}\n200')
        found = answer.json()
        username, password = str(found.get("username") or ""), str(found.get("password") or "")
        if answer.status != 200 or not username or not password:
            raise StageError(f"{homeserver.display_name} gives no TURN credentials (GET /voip/turnServer: HTTP "
                             f"{answer.status} {found.get('errcode', '')})",
                             "its config lacks turn_uris or turn_shared_secret: rerun the install")
        ctx.secret(password)
        return username, password, f"{admin.user_id}'s, from GET /voip/turnServer"
    username, password = secret_credentials(await read_secret(ctx), "matrix-installer-check")
    ctx.secret(password)
    return username, password, ("made from the shared secret as the homeserver makes them (this run does not "
                                "know the admin's password: set its environment variable to check with a client's)")


async def check_turn(ctx: StageContext) -> Status:
    """On the host, a real TURN client (coturn's turnutils_uclient) allocates a relay with a
    client's credentials, the relay's address is the public one, and every denied peer is refused."""
    private = str(ctx.facts.get(PRIVATE_FACT) or "")
    server = private or await ctx.deployment.provider.host_address(ctx)
    public = await ctx.deployment.provider.host_address(ctx)
    username, password, how = await client_credentials(ctx)
    # The probes of refused peers use credentials of their own (a user of this run's): coturn's
    # quota of allocations is per user, and a user's real calls must not find it used up.
    probe_user = f"matrix-installer-check-{_random.token_hex(4)}"
    probe_name, probe_password = secret_credentials(await read_secret(ctx), probe_user)
    ctx.secret(probe_password)
    peers = (*DENIED_PROBES, private or "10.0.0.1")

    def uclient(peer: str, user: str, key: str) -> str:
        # Only the lines that tell (its -v output is long): the relay's address, refusals, errors.
        return (f"timeout 20 turnutils_uclient -v -n 1 -m 1 -c -u {q(user)} -w {q(key)} -e {q(peer)} "
                f"-p {TURN_PORT} {q(server)} 2>&1 | grep -E 'relay addr|error|ERROR' | sort -u || true")

    got = await ctx.run(uclient(public, username, password), check=False, quiet=True,
                        dry_output=f"IPv4. Received relay addr: {public}:49160")
    if ctx.dry_run:
        for peer in peers:
            await ctx.run(uclient(peer, probe_name, probe_password), check=False, quiet=True)
        ctx.log(f"a real run: a relay allocated at {public} with these credentials; relays to each peer above refused "
                "(403 Forbidden IP)")
        return Status.PLANNED
    relays = coturn.relay_addresses(got.stdout)
    if coturn.allocation_refused(got.stdout) or not relays:
        detail = f"no relay was allocated with credentials {how}"
        ctx.report_check("turn", False, detail, "on the host: sudo journalctl -u coturn -n 50")
        raise StageError(f"TURN: {detail}", "on the host: sudo journalctl -u coturn -n 50")
    relay_host = relays[0].rpartition(":")[0].strip("[]")
    if relay_host != public and ":" not in public:  # an IPv4 relay for an IPv4 address (an IPv6 host's is its own)
        detail = f"the relay's address is {relay_host}, not the public {public}: callers cannot reach it"
        ctx.report_check("turn", False, detail, "rerun the install: turn.server sets the NAT mapping")
        raise StageError(f"TURN: {detail}")
    let_through = []
    for peer in peers:
        probe = await ctx.run(uclient(peer, probe_name, probe_password), check=False, quiet=True)
        if coturn.forbidden(probe.stdout):
            continue
        if not coturn.relay_addresses(probe.stdout):  # no relay to probe with: not a leak, but no proof either
            said = "; ".join(line.split(": : ")[-1] for line in probe.stdout.splitlines() if "error" in line.lower())
            detail = f"no relay could be allocated to probe {peer} with ({said or 'no answer'})"
            fix = (f"the relay ports ([calls] relay_ports) may all be in use: allocations expire 10 minutes after their "
                   "last use; rerun then, or widen the range")
            ctx.report_check("turn", False, detail, fix)
            raise StageError(f"TURN: {detail}", fix)
        let_through.append(peer)
    if let_through:
        detail = f"relays to {', '.join(let_through)} were not refused"
        ctx.report_check("turn", False, detail, f"check denied-peer-ip in {coturn.CONFIG}")
        raise StageError(f"TURN: {detail}")
    refused = ", ".join(peers)
    ctx.report_check("turn", True, f"relay allocated at {relays[0]} with credentials {how}; relays to {refused} refused")
    ctx.log(f"a relay was allocated at {relays[0]} with credentials {how}")
    ctx.log(f"relays to {refused} were refused (403 Forbidden IP)")
    return ctx.proven()
