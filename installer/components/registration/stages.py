"""Stage registration.policy: the registration policy the user chose, verified on the running server.

- "closed": nobody registers; the admin account was made with the shared secret.
- "token": registration needs a token; the answers' number of tokens exist (made with the admin
  API, listed once at the end).
- "open-until-admin": the manual guide's way is to open registration until the admin has
  registered, then close it and restart. The installer creates the admin with the shared
  secret (synapse.admin) before this stage, so the window is never needed: the end state,
  closed with the admin in place, is applied and verified directly.
"""

from __future__ import annotations

from installer.components.homeserver import AdminCredentials, Response
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.layout import in_project

ADMIN_TOKEN_FILE = in_project(".admin-access-token")
"""An admin access token for later runs (root only, 0600): managing tokens needs the admin API,
and a generated admin password is not kept anywhere."""


async def api(ctx: StageContext, method: str, path: str, **kwargs: object) -> Response:
    return await ctx.deployment.homeserver.api(ctx, method, path, **kwargs)


async def live_policy(ctx: StageContext, *, dry: str) -> str:
    """What the running server does with a registration attempt: "closed", "token" or "open"."""
    answer = await api(ctx, "POST", "/_matrix/client/v3/register", body={}, dry_output=dry)
    if answer.status == 403:
        return "closed"
    if answer.status == 401:
        stages = [s for flow in answer.json().get("flows", []) for s in flow.get("stages", [])]
        return "token" if "m.login.registration_token" in stages else "open"
    raise StageError(f"POST /register answered HTTP {answer.status}: {answer.body[:200]}")


DRY_REGISTER = {
    "closed": '{"errcode":"M_FORBIDDEN","error":"Registration has been disabled"}\n403',
    "token": '{"flows":[{"stages":["m.login.registration_token","m.login.dummy"]}]}\n401',
}


async def kept_admin_token(ctx: StageContext) -> str | None:
    """The admin access token kept on the host, when it still works."""
    raw = await ctx.read_file(ADMIN_TOKEN_FILE)
    if raw and raw.strip():
        token = ctx.secret(raw.decode().strip())
        if (await api(ctx, "GET", "/_matrix/client/v3/account/whoami", token=token)).status == 200:
            return token
        ctx.log("the kept admin access token no longer works")
    return None


async def admin_token(ctx: StageContext) -> str:
    """An admin access token: the one kept on the host when it still works, else a new login (kept
    in turn). One session for every run: Synapse allows an account 5 logins, then one per 5 minutes."""
    if token := await kept_admin_token(ctx):
        return token
    admin = ctx.take(AdminCredentials)
    user_id, password = admin.user_id, admin.password
    if not password:
        raise StageError(
            "managing registration tokens needs the admin's password, and this run does not have it",
            f"set the environment variable {ctx.answers.registration.admin_password_env} to the admin's password and rerun",
        )
    login = await api(ctx, "POST", "/_matrix/client/v3/login", body={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id},
        "password": password, "initial_device_display_name": "matrix-installer",
    }, dry_output='{"access_token":"DRY-RUN-TOKEN"}\n200')
    token = login.json().get("access_token")
    if login.status != 200 or not isinstance(token, str):
        raise StageError(f"logging in as {user_id} failed: HTTP {login.status} {login.json().get('errcode', '')}",
                         f"check the password in {ctx.answers.registration.admin_password_env}")
    ctx.secret(token)
    await ctx.put_file(ADMIN_TOKEN_FILE, token.encode() + b"\n", mode=0o600, owner="root:root", secret=True)
    return token


async def ensure_tokens(ctx: StageContext) -> int:
    """At least `registration.tokens` valid tokens; returns how many were made now."""
    wanted = ctx.answers.registration.tokens
    token = await admin_token(ctx)
    listing = await api(ctx, "GET", "/_synapse/admin/v1/registration_tokens?valid=true", token=token,
                        dry_output='{"registration_tokens":[]}\n200')
    if listing.status != 200:
        raise StageError(f"listing registration tokens failed: HTTP {listing.status} {listing.json().get('errcode', '')}",
                         f"is {ctx.take(AdminCredentials).user_id} a server admin?")
    existing = listing.json().get("registration_tokens", [])
    for item in existing:
        if isinstance(item, dict) and isinstance(item.get("token"), str):
            ctx.secret(item["token"])
    made = 0
    for number in range(len(existing) + 1, wanted + 1):
        new = await api(ctx, "POST", "/_synapse/admin/v1/registration_tokens/new", body={}, token=token,
                        dry_output=f'{{"token":"DRY-RUN-TOKEN-{number}"}}\n200')
        value = new.json().get("token")
        if new.status != 200 or not isinstance(value, str):
            raise StageError(f"creating a registration token failed: HTTP {new.status} {new.json().get('errcode', '')}")
        if not ctx.dry_run:
            ctx.reveal(f"Registration token {number} of {wanted}", value)
        made += 1
    ctx.log(f"registration tokens: {len(existing)} valid before, {made} created"
            + (" (listed once at the end)" if made else ""))
    return made


async def apply_policy(ctx: StageContext) -> Status:
    policy = ctx.answers.registration.policy
    expected = "token" if policy == "token" else "closed"
    changed = False
    live = await live_policy(ctx, dry=DRY_REGISTER[expected])
    if live != expected:
        ctx.log(f"the running server's registration is {live}, the config says {expected}: restarting Synapse")
        await ctx.deployment.homeserver.restart(ctx)
        changed = True
        live = await live_policy(ctx, dry=DRY_REGISTER[expected])
        if live != expected:
            raise StageError(f"registration is {live} on the running server, but the policy is {policy}",
                             "check enable_registration and registration_requires_token in homeserver.yaml")
    ctx.log(f"a real run verifies on the running server that registration is {live}" if ctx.dry_run
            else f"verified on the running server: registration is {live}")
    if policy == "token" and await ensure_tokens(ctx):
        changed = True
    if policy == "open-until-admin":
        admin = ctx.take(AdminCredentials).user_id
        if not await ctx.deployment.homeserver.user_exists(ctx, admin) and not ctx.dry_run:
            raise StageError(f"{admin} does not exist, so registration cannot stay closed for good",
                             "rerun: synapse.admin creates the admin first")
        ctx.log("the admin exists, so registration is closed (it never had to be opened: the admin was made "
                "with the shared secret)")
    return Status.DONE if changed else Status.UNCHANGED
