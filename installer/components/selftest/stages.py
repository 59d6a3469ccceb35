"""The self-test's stages: selftest.notices (a bot account and a "Server notices" room the admin is
in, made through the homeserver's API on the host's loopback) and selftest.timer (the script, its
configuration and the systemd timer, written through the stages' files)."""

from __future__ import annotations

import json
import secrets as _random
import shlex
from pathlib import Path
from urllib.parse import quote

from installer.components.homeserver import AdminCredentials, admin_password_from_env
from installer.components.selftest import (
    BOT_LOCALPART,
    CONFIG,
    DEPLOYED,
    FOLDER,
    RESTORE_TEST_HOOK,
    RESTORE_TEST_HOOK_TEXT,
    ROOM,
    ROOM_NAME,
    SCRIPT,
    SERVICE_FILE,
    STATE_DIR,
    TIMER_FILE,
    TOKEN_FILE,
    UNIT,
)
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.layout import BIN, ROOT

q = shlex.quote

SERVICE = f"""[Unit]
Description=matrix-installer: self-test of the Matrix server (federation as other servers see it)
After=network-online.target docker.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 {SCRIPT} --config {CONFIG}
StateDirectory={Path(STATE_DIR).name}
StateDirectoryMode=0750
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=yes
TimeoutStartSec=10min
"""

TIMER = """[Unit]
Description=matrix-installer: daily self-test of the Matrix server

[Timer]
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""


def bot_user_id(ctx: StageContext) -> str:
    return f"@{BOT_LOCALPART}:{ctx.answers.domain.server_name}"


def room_path(room: str, rest: str = "") -> str:
    return f"/_matrix/client/v3/rooms/{quote(room, safe='')}{rest}"


async def _working_bot(ctx: StageContext, token: str, room: str | None, admin: str) -> str:
    """"ok" when the kept token is the bot's and the admin is in the kept room; else what is missing."""
    hs = ctx.deployment.homeserver
    who = await hs.api(ctx, "GET", "/_matrix/client/v3/account/whoami", token=token)
    if who.status != 200 or who.json().get("user_id") != bot_user_id(ctx):
        return "the kept token no longer works"
    if not room:
        return "no room yet"
    members = await hs.api(ctx, "GET", room_path(room, "/joined_members"), token=token)
    if members.status != 200:
        return f"the bot is not in {room}"
    if admin not in members.json().get("joined", {}):
        return f"{admin} is not in {room}"
    return "ok"


async def _room_on_host(ctx: StageContext) -> str | None:
    """The room the host's self-test posts to, when this machine's state does not know it (a
    restore from another machine brings back the self-test's files with the database)."""
    raw = await ctx.read_file(CONFIG)
    try:
        room = json.loads(raw or b"null").get("room_id") if raw else None
    except (ValueError, AttributeError):
        return None
    return room if isinstance(room, str) and room.startswith("!") else None


async def _login(ctx: StageContext, user_id: str, password: str, device: str) -> str:
    answer = await ctx.deployment.homeserver.api(ctx, "POST", "/_matrix/client/v3/login", body={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password,
        "initial_device_display_name": device,
    }, dry_output='{"access_token":"DRY-RUN-TOKEN"}\n200')
    token = answer.json().get("access_token")
    if answer.status != 200 or not isinstance(token, str):
        raise StageError(f"logging in as {user_id} failed: HTTP {answer.status} {answer.json().get('errcode', '')}",
                         f"check the admin's password in ${ctx.answers.registration.admin_password_env}")
    return ctx.secret(token)


async def notices_room(ctx: StageContext) -> Status:
    """A bot account (not an admin) and a "Server notices" room it made, the admin joined to it.
    Only the bot's access token is kept, on the host (root only, 0600); the admin's session used
    to make them is logged out again."""
    hs = ctx.deployment.homeserver
    admin = hs.admin_user_id(ctx.answers)
    bot = bot_user_id(ctx)
    room = ctx.facts.get(ROOM) or await _room_on_host(ctx)
    raw = await ctx.read_file(TOKEN_FILE)
    token = ctx.secret(raw.decode().strip()) if raw and raw.strip() else None
    if token and not ctx.dry_run:
        state = await _working_bot(ctx, token, room, admin)
        if state == "ok":
            ctx.log(f"the self-test posts to \"{ROOM_NAME}\" ({room}) as {bot}; {admin} is in it")
            if ctx.facts.get(ROOM) != room:  # found in the host's config (a restore's state lacked it)
                ctx.remember(ROOM, room)
            return Status.UNCHANGED
        ctx.log(f"the notices room needs setting up again: {state}")
    from installer.components.registration.stages import kept_admin_token

    kept = await kept_admin_token(ctx)  # the admin's kept session: no login (Synapse allows few)
    password = (ctx.take(AdminCredentials).password if AdminCredentials in ctx.stage.takes else None) \
        or admin_password_from_env(ctx)
    if not password and not kept:
        ctx.log(f"the self-test's notices room needs the admin's password, which this run does not have: the "
                f"self-test keeps its history but posts nothing; set ${ctx.answers.registration.admin_password_env} "
                "and rerun to make the room")
        return Status.SKIPPED
    admin_token = kept or await _login(ctx, admin, str(password), "matrix-installer (self-test set-up)")
    try:
        bot_password = ctx.secret(_random.token_urlsafe(32))  # used once, to log the bot in; never kept
        made = await hs.api(ctx, "PUT", f"/_synapse/admin/v2/users/{quote(bot, safe='@:')}", token=admin_token, body={
            "password": bot_password, "displayname": "Server self-test", "admin": False, "logout_devices": True,
        }, dry_output="{}\n201")
        if made.status not in (200, 201):
            raise StageError(f"making the bot account {bot} failed: HTTP {made.status} {made.json().get('errcode', '')}",
                             f"is {admin} a server admin?")
        token = await _login(ctx, bot, bot_password, "matrix-selftest")
        if room and not ctx.dry_run:
            joined = await hs.api(ctx, "GET", room_path(room, "/joined_members"), token=token)
            room = room if joined.status == 200 else None
        if not room or ctx.dry_run:
            created = await hs.api(ctx, "POST", "/_matrix/client/v3/createRoom", token=token, body={
                "name": ROOM_NAME, "preset": "private_chat", "invite": [admin],
                "topic": "The daily self-test of this server (matrix-selftest on the host) posts here when a check fails "
                         "or the certificate is close to its end.",
            }, dry_output='{"room_id":"!notices-room-id:example.org"}\n200')
            room = created.json().get("room_id")
            if created.status != 200 or not isinstance(room, str):
                raise StageError(f"the bot could not create the notices room: HTTP {created.status} "
                                 f"{created.json().get('errcode', '')}")
        else:
            await hs.api(ctx, "POST", room_path(room, "/invite"), token=token, body={"user_id": admin})
        joined = await hs.api(ctx, "POST", f"/_matrix/client/v3/join/{quote(room, safe='')}", token=admin_token, body={})
        if joined.status != 200:
            raise StageError(f"{admin} could not join the notices room {room}: HTTP {joined.status} "
                             f"{joined.json().get('errcode', '')}")
    finally:
        if not kept:
            await hs.api(ctx, "POST", "/_matrix/client/v3/logout", token=admin_token, body={})
    await ctx.run(f"install -d -m 0700 -o root -g root {q(FOLDER)}", sudo=True)
    await ctx.put_file(TOKEN_FILE, token.encode() + b"\n", mode=0o600, owner="root:root", backup=False, secret=True)
    ctx.remember(ROOM, room)
    ctx.log(f"\"{ROOM_NAME}\" ({room}): made by {bot}, {admin} joined; the bot's token is kept in {TOKEN_FILE} (root only)")
    return Status.DONE


def selftest_config(ctx: StageContext) -> dict[str, object]:
    """What the script on the host checks: the deployment's names as the answers say, the peer of
    this run's --peer, where it posts. No secret: the token has its own file."""
    a = ctx.answers
    delegation = a.domain.delegation
    federation_host = a.domain.server_name if delegation in ("none", "srv") else a.domain.matrix_host
    well_known = None
    if delegation == "well-known" and a.serves_server_name:
        from installer.components.dns import well_known_server

        well_known = well_known_server(a)["m.server"]
    return {
        "server_name": a.domain.server_name,
        "federation_host": federation_host,
        "federation_port": a.federation_port,
        "well_known": well_known,
        "peer": ctx.options.peer,
        "synapse_url": "http://127.0.0.1:8008",
        "room_id": ctx.facts.get(ROOM),
        "token_file": TOKEN_FILE,
        "state_dir": STATE_DIR,
        "disks": ["/", ROOT],
        "backup": backup_files(ctx),
    }


def backup_files(ctx: StageContext) -> dict[str, str] | None:
    """Where the off-box backups leave their results (None: no backups leave the box)."""
    if not ctx.deployment.has("backup"):
        return None
    from installer.components.backup import RESTORE_TEST_FILE, STATUS_FILE

    return {"status_file": STATUS_FILE, "restore_test_file": RESTORE_TEST_FILE}


async def install_timer(ctx: StageContext) -> Status:
    """The script, its configuration and the daily timer; the timer enabled and started."""
    script = Path(__file__).with_name("matrix_selftest.py").read_bytes()
    config = json.dumps(selftest_config(ctx), indent=2, sort_keys=True).encode() + b"\n"
    changed = False
    if not await ctx.probe(f"test -d {q(FOLDER)} && test -d {q(BIN)}", sudo=True):
        await ctx.run(f"install -d -m 0700 -o root -g root {q(FOLDER)} && install -d -m 0755 {q(BIN)}", sudo=True)
        changed = True
    changed |= await ctx.put_file(SCRIPT, script, mode=0o755, owner="root:root", backup=False)
    changed |= await ctx.put_file(CONFIG, config, mode=0o644, owner="root:root")
    units = [await ctx.put_file(SERVICE_FILE, SERVICE.encode(), mode=0o644, owner="root:root"),
             await ctx.put_file(TIMER_FILE, TIMER.encode(), mode=0o644, owner="root:root")]
    if backup_files(ctx):  # a failed restore test is posted at once, through the self-test
        units.append(await ctx.put_file(RESTORE_TEST_HOOK, RESTORE_TEST_HOOK_TEXT.encode(), mode=0o644, owner="root:root",
                                        backup=False))
    elif await ctx.probe(f"test -e {q(RESTORE_TEST_HOOK)}", sudo=True):
        await ctx.run(f"rm -f -- {q(RESTORE_TEST_HOOK)}", sudo=True)
        units.append(True)
    if any(units):
        await ctx.run("systemctl daemon-reload", sudo=True)
        changed = True
    if not await ctx.probe(f"systemctl is-enabled --quiet {UNIT}.timer && systemctl is-active --quiet {UNIT}.timer",
                           sudo=True):
        await ctx.run(f"systemctl enable --now {UNIT}.timer", sudo=True)
        changed = True
    peer = ctx.options.peer
    ctx.log(f"the self-test runs daily from the host ({SCRIPT}); its history is in {STATE_DIR}"
            + (f"; its outbound check reaches {peer}" if peer else "; no outbound check (--peer none)")
            + ("; it reads the backups' age and restore test, and a failed restore test starts it at once"
               if backup_files(ctx) else "")
            + ("" if ctx.facts.get(ROOM) else "; no notices room: it posts nothing"))
    ctx.remember(DEPLOYED, True)
    return Status.DONE if changed else Status.UNCHANGED
