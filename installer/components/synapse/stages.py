"""Synapse's stages: synapse.config (homeserver.yaml generated once by the image itself, then
edited, comments kept; the signing key is never regenerated) and synapse.admin (the admin account).

Layout on the host (as the manual guide has it): data/ in the compose project, mounted at /data.
"""

from __future__ import annotations

import json
import secrets as _random
import shlex

from installer.components.homeserver import DATABASE_FACT, AdminCredentials, admin_password_from_env, short_password_problem
from installer.components.synapse import CONFIG, CONTAINER, DATA, SYNAPSE
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.layout import PROJECT

q = shlex.quote

SECRET_SETTINGS = ("registration_shared_secret", "macaroon_secret_key", "form_secret", "turn_shared_secret")
PRIVATE_MODE = 0o600
"""homeserver.yaml holds the registration shared secret (whoever reads it can make an admin) and
the signing key is the server's identity: readable by Synapse's own user in the container only."""

# What the dry-run pretends the image generated, so the plan can show the edits it would make.
DRY_HOMESERVER = """# Configuration file for Synapse.
server_name: "{server_name}"
pid_file: /data/homeserver.pid
listeners:
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
  args:
    database: /data/homeserver.db
log_config: "/data/{server_name}.log.config"
media_store_path: /data/media_store
report_stats: false
macaroon_secret_key: "DRY-RUN"
form_secret: "DRY-RUN"
signing_key_path: "/data/{server_name}.signing.key"
trusted_key_servers:
  - server_name: "matrix.org"
"""


def generate_command(ctx: StageContext) -> str:
    """The image's own `generate`, as the manual guide runs it."""
    a = ctx.answers
    return (f"docker run --rm -e SYNAPSE_SERVER_NAME={q(a.domain.server_name)} "
            f"-e SYNAPSE_REPORT_STATS={'yes' if a.synapse.report_stats else 'no'} "
            f"-v {q(DATA)}:/data -- {q(a.synapse.image)} generate")


def register_secrets(ctx: StageContext, text: str) -> None:
    """Every secret in a homeserver.yaml is masked from here on, changed or not."""
    from installer.components.synapse.config import read_setting

    try:
        for key in SECRET_SETTINGS:
            value = read_setting(text, key)
            if isinstance(value, str):
                ctx.secret(value)
    except Exception:  # an unreadable file is reported by the edit below
        pass


async def with_secrets(ctx: StageContext, setting: object) -> object:
    """A setting with the secret it refers to read from the host (masked from here on): the TURN
    shared secret, from the root-only file the TURN server's component keeps."""
    import dataclasses

    from installer.components.homeserver import TurnSettings

    if not isinstance(setting, TurnSettings):
        return setting
    raw = await ctx.read_file(setting.secret_file)
    secret = raw.decode("utf-8", "replace").strip() if raw else ""
    if not secret:
        if not ctx.dry_run:
            raise StageError(f"the TURN shared secret is missing from {setting.secret_file}",
                             "rerun: the stage that makes it runs before this one")
        return setting
    return dataclasses.replace(setting, shared_secret=ctx.secret(secret))


async def configure(ctx: StageContext) -> Status:
    """homeserver.yaml generated once by the image, then edited to the deployment's settings;
    it and the signing key private to Synapse's user."""
    from installer.components.synapse.config import ConfigError, database_engine, edit_homeserver_config, read_setting

    a = ctx.answers
    changed = False
    if not await ctx.probe(f"test -d {q(DATA)}", sudo=True):
        await ctx.run(f"install -d -m 0755 {q(PROJECT)} {q(DATA)}", sudo=True)
        changed = True

    raw = await ctx.read_file(CONFIG)
    generated = raw is None
    if raw is None:
        if await ctx.probe(f"ls {q(DATA)}/*.signing.key >/dev/null 2>&1", sudo=True):
            ctx.log("a signing key is already in data/: the image's generate keeps it (it is never regenerated)")
        await ctx.run(generate_command(ctx), sudo=True, timeout=900)
        raw = await ctx.read_file(CONFIG)
        if raw is None:
            if not ctx.dry_run:
                raise StageError(f"the image's generate did not write {CONFIG}", "see its output above")
            raw = DRY_HOMESERVER.format(server_name=a.domain.server_name).encode()
        changed = True
    text = raw.decode("utf-8")
    register_secrets(ctx, text)
    settings = [await with_secrets(ctx, s) for s in ctx.deployment.homeserver_settings()]
    try:
        in_use = database_engine(text)
        edit = edit_homeserver_config(text, a, settings, new_secret=lambda: ctx.secret(_random.token_urlsafe(36)))
    except ConfigError as exc:
        raise StageError(f"{CONFIG}: {exc}", "fix the file on the host (or move it aside to generate a new one), then rerun") from None
    wanted = database_engine(edit.text)
    if in_use != wanted and not generated and await ctx.probe(f"test -s {q(DATA)}/homeserver.db", sudo=True):
        raise StageError(
            f"this server's Synapse keeps its data in SQLite ({DATA}/homeserver.db), and an install does not move it: "
            f"starting on an empty {wanted} database would lose every account and room. Nothing was changed",
            'move it with `matrix-installer --upgrade` and [database] migrate = "yes" in the answers, '
            'or keep SQLite with [database] engine = "sqlite"',
        )
    if "database" in edit.changed:  # no password in it: shown, as the rest of the file (secrets) is not
        block = json.dumps(read_setting(edit.text, "database"))
        ctx.log(f"homeserver.yaml's database: {block}", "file")
    meta = await ctx.run(f"stat -c '%u:%g %a' {q(CONFIG)}", sudo=True, dry_output="991:991 644")
    owner, mode = meta.stdout.split()
    if edit.changed or int(mode, 8) & 0o077:
        await ctx.put_file(CONFIG, edit.text.encode(), owner=owner, mode=PRIVATE_MODE, secret=True)
        ctx.log(f"homeserver.yaml: set {', '.join(edit.changed) or f'mode {PRIVATE_MODE:04o}'}")
        changed = True
    else:
        ctx.log("homeserver.yaml already has every setting the answers ask for")
    loose = await ctx.run(f"find {q(DATA)} -maxdepth 1 -name '*.signing.key' -perm /077", sudo=True, check=False, dry_output="")
    for key_file in loose.stdout.split():
        await ctx.run(f"chmod 0600 {q(key_file)}", sudo=True)
        changed = True
    ctx.remember(DATABASE_FACT, wanted)
    return Status.DONE if changed else Status.UNCHANGED


# --- synapse.admin ---------------------------------------------------------------------------

async def create_admin(ctx: StageContext) -> Status:
    """The admin account through `register_new_matrix_user` and the shared secret (registration is
    never opened for it); the password from the environment or generated and shown once."""
    from installer.components.synapse.config import read_setting

    a = ctx.answers
    user_id = SYNAPSE.admin_user_id(a)
    raw = await ctx.read_file(CONFIG)
    if raw is not None:
        register_secrets(ctx, raw.decode("utf-8", "replace"))
        if not read_setting(raw.decode("utf-8", "replace"), "registration_shared_secret"):
            raise StageError(f"{CONFIG} has no registration_shared_secret", "rerun: synapse.config adds one")
    elif not ctx.dry_run:
        raise StageError(f"{CONFIG} is missing", "rerun: synapse.config writes it")
    password = admin_password_from_env(ctx)
    if await SYNAPSE.user_exists(ctx, user_id):
        ctx.log(f"{user_id} already exists")
        ctx.give(AdminCredentials(user_id, password))
        return Status.UNCHANGED
    generated = password is None
    if password is None:
        password = ctx.secret(_random.token_urlsafe(18))
    elif problem := short_password_problem(a.registration.admin_password_env, password):
        # Found before the run by installer.readiness (a dry run warned, and goes on); this is the backstop.
        if not ctx.dry_run:
            message, _, hint = problem.partition(": ")
            raise StageError(message, hint)
        ctx.log(f"a real run stops here: {problem}")
    # The password travels on stdin; the shared secret is read from the config inside the container.
    await ctx.run(
        f"docker exec -i {CONTAINER} register_new_matrix_user --user={q(a.registration.admin_user)} -a "
        f"-c /data/homeserver.yaml --password-file /dev/stdin http://localhost:8008",
        sudo=True, input=password + "\n", timeout=120,
    )
    ctx.give(AdminCredentials(user_id, password))
    if generated and not ctx.dry_run:
        ctx.reveal(f"Admin password for {user_id}", password)
    ctx.log(f"created the admin {user_id}" + (" (generated password: shown once at the end)" if generated else
                                               f" (password from ${a.registration.admin_password_env})"))
    return Status.DONE
