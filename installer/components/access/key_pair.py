"""Stages on this machine: the SSH key pair the installer logs in with."""

from __future__ import annotations

from pathlib import Path

from installer.engine import StageContext, StageError
from installer.events import Status
from installer.files import UnsafePathError, write_private


def key_paths(ctx: StageContext) -> tuple[Path, Path]:
    private = Path(ctx.answers.ssh.private_key).expanduser()
    return private, private.with_name(private.name + ".pub")


async def ensure_ssh_key(ctx: StageContext) -> Status:
    """An ed25519 key pair at ssh.private_key: kept when present, created (0600, .pub 0644) when not."""
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
    if ctx.dry_run:
        ctx.log(f"would create an ed25519 key pair: {private} (0600) and {public} (0644)", "file")
        return Status.DONE
    key = asyncssh.generate_private_key("ssh-ed25519", comment="matrix-installer")
    try:
        write_private(private, key.export_private_key("openssh"), mode=0o600)
        write_private(public, key.export_public_key("openssh"), mode=0o644)
    except UnsafePathError as exc:  # a link or device put there since the check before the run
        raise StageError(str(exc), "give ssh.private_key a path where nothing else is") from None
    ctx.log(f"created an ed25519 key pair: {private} (0600) and {public}; {key.get_fingerprint('sha256')}")
    return Status.DONE
