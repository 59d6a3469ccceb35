"""Stages on this machine: the SSH key pair the installer logs in with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from installer.engine import StageContext, StageError
from installer.events import Status
from installer.files import UnsafePathError, write_private

if TYPE_CHECKING:
    from installer.ssh import KeyToAuthorize


def key_paths(ctx: StageContext) -> tuple[Path, Path]:
    private = Path(ctx.answers.ssh.private_key).expanduser()
    return private, private.with_name(private.name + ".pub")


def key_to_authorize(ctx: StageContext, public_line: str) -> KeyToAuthorize:
    from installer.ssh import KeyToAuthorize

    a = ctx.answers.ssh
    return KeyToAuthorize(key_paths(ctx)[1], public_line, a.user, a.host or "SERVER", a.port)


async def have_it_authorized(ctx: StageContext, key: KeyToAuthorize) -> None:
    """A new key for a server that exists already: the server must be told before the first
    connection. Guided, the run waits while the person adds it; headless, it stops saying how."""
    for line in key.lines():
        ctx.log(line)
    if ctx.can_ask:
        if await ctx.confirm("\n".join(key.lines()), yes="Added: continue", no="Stop here"):
            return
        raise StageError("stopped: the server does not accept the new key yet", key.hint("Retry (or rerun later)"))
    raise StageError("made a new key pair, which the server does not accept yet: the run stops here",
                     key.hint("rerun the same command to go on"))


async def ensure_ssh_key(ctx: StageContext) -> Status:
    """An ed25519 key pair at ssh.private_key: kept when present, created (0600, .pub 0644) when not.
    A new key for a server that already exists (not one the provider makes, which is given the key
    at its first boot) is added to it by the person before anything connects."""
    import asyncssh

    private, public = key_paths(ctx)
    if private.exists():
        try:
            key = asyncssh.read_private_key(str(private))
        except asyncssh.KeyEncryptionError:
            raise StageError(f"{private} is protected by a passphrase, which a headless run cannot type",
                             "give ssh.private_key a key without a passphrase, or a new path (a key is created there)") from None
        except (asyncssh.KeyImportError, OSError) as exc:
            raise StageError(f"{private} is not a usable SSH private key: {exc}",
                             "give ssh.private_key another path (a key is created there when missing)") from None
        if private.stat().st_mode & 0o077:
            ctx.log(f"warning: {private} can be read by others; `chmod 600 {private}` is advised")
        if not public.exists():
            if not ctx.dry_run:
                try:
                    write_private(public, key.export_public_key("openssh"), mode=0o644)
                except UnsafePathError as exc:
                    raise StageError(str(exc), "remove it, or give ssh.private_key another path") from None
            ctx.log(f"wrote the missing public half {public}")
            return Status.DONE
        ctx.log(f"using {private} ({key.get_algorithm()}, {key.get_fingerprint('sha256')})")
        return Status.UNCHANGED
    if ctx.options.mode != "install":
        missing = StageError(f"{private} does not exist: an upgrade logs in with the key the server already accepts",
                             "give ssh.private_key the key pair that installed the server: a new one would be refused")
        if not ctx.dry_run:
            raise missing
        ctx.log(f"a real run stops here: {missing} ({missing.hint})")
        return Status.DONE
    told = not ctx.deployment.provider.makes_host
    if ctx.dry_run:
        ctx.log(f"would create an ed25519 key pair: {private} (0600) and {public} (0644)", "file")
        if told:
            ctx.log("then a real run stops until the server accepts it, saying how to add it (ssh-copy-id, or a line "
                    "for ~/.ssh/authorized_keys)")
        return Status.DONE
    key = asyncssh.generate_private_key("ssh-ed25519", comment="matrix-installer")
    try:
        write_private(private, key.export_private_key("openssh"), mode=0o600)
        write_private(public, key.export_public_key("openssh"), mode=0o644)
    except UnsafePathError as exc:  # a link or device put there since the check before the run
        raise StageError(str(exc), "give ssh.private_key a path where nothing else is") from None
    ctx.log(f"created an ed25519 key pair: {private} (0600) and {public}; {key.get_fingerprint('sha256')}")
    if told:
        await have_it_authorized(ctx, key_to_authorize(ctx, key.export_public_key("openssh").decode().strip()))
    return Status.DONE
