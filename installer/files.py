"""Local files written the safe way: atomically, private by default, and only over our own files.

Everything the installer writes on this machine (the report, state.json, the saved answers,
last-run.log, crash files, SSH keys) goes through here, so none of it follows a symbolic link or
replaces what is not a regular file of ours: a `--report /dev/null` run as root must not replace
/dev/null, and a planted `last-run.log -> /etc/passwd` must not be written through.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import TextIO

SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))
"""Kernel file systems: never a place for our files, whatever the permissions say (root may
"write" there)."""

_KINDS = {
    stat.S_IFLNK: "is a symbolic link",
    stat.S_IFIFO: "is a named pipe (FIFO)",
    stat.S_IFCHR: "is a device",
    stat.S_IFBLK: "is a device",
    stat.S_IFSOCK: "is a socket",
    stat.S_IFDIR: "is a folder",
}


class UnsafePathError(OSError):
    """A path we were to write is not a regular file of ours; nothing was written."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(errno.EPERM, what, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _what_is_there(info: os.stat_result) -> str | None:
    """Why what `lstat` found must not be replaced, or None for a regular file of ours."""
    kind = stat.S_IFMT(info.st_mode)
    if kind != stat.S_IFREG:
        return _KINDS.get(kind, "is not a regular file")
    if info.st_uid != os.geteuid():
        return "belongs to another user"
    return None


def replace_problem(path: Path) -> str | None:
    """Why writing `path` must be refused (in words after the path), or None: nothing there yet,
    or a regular file of ours. A symbolic link is refused, never followed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder: give the name of a file"
    if what := _what_is_there(info):
        return f"{what}: refusing to write over it; remove it or give another path"
    return None


def refuse_unsafe(path: Path) -> None:
    if problem := replace_problem(path):
        raise UnsafePathError(path, problem)


def in_system_folder(path: Path) -> Path | None:
    """The kernel folder (/proc, /sys, /dev) `path` is in, once links are resolved, if any."""
    resolved = Path(os.path.realpath(path))
    for folder in SYSTEM_FOLDERS:
        if resolved == folder or folder in resolved.parents:
            return folder
    return None


def output_problem(path: Path, *, make_parents: bool = False) -> str | None:
    """What stops us writing a file at `path` (checked before a run, so it fails early), in words
    after the path; None when it can be written. With `make_parents`, missing folders are fine
    (they are made) and nothing is written to find out."""
    if not str(path):
        return "is empty: give a file name"
    parent = path.parent
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                return f"cannot be made: {above} is a file, not a folder"
            break
    if problem := replace_problem(path):
        return problem
    if folder := in_system_folder(path):
        return f"is under {folder}, a kernel folder: give a path in a folder of your own"
    if make_parents:
        return None
    if not parent.exists():
        return f"cannot be made: the folder {parent} does not exist"
    try:  # permissions alone do not say it (root, read-only mounts): try
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot be written in {parent} ({exc.strerror})"
    return None


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically; the file never exists with looser permissions.
    Raises UnsafePathError, before writing anything, when `path` is not a regular file of ours."""
    path = Path(path)
    refuse_unsafe(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        refuse_unsafe(path)  # again, just before the rename: nothing may have been put there meanwhile
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_private_log(path: Path) -> TextIO:
    """A new, empty log file at `path` (0600) for writing line by line. A previous log of ours is
    replaced; a link, pipe or device there is refused. O_EXCL with O_CREAT never follows a link,
    so nothing put there between the check and the open is written through either."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    refuse_unsafe(path)
    path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise UnsafePathError(path, "appeared while it was being replaced: refusing to write through it") from None
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")


def read_own(path: Path, limit: int) -> bytes:
    """The content of a regular file of ours, at most `limit` bytes (a larger one is an error).
    Raises FileNotFoundError when missing, UnsafePathError for a link, pipe, device or another's file."""
    path = Path(path)
    refuse_unsafe(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(path, "is a symbolic link: refusing to follow it") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if what := _what_is_there(os.fstat(handle.fileno())):
            raise UnsafePathError(path, what)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafePathError(path, f"is larger than {limit:,} bytes: not a file of ours")
    return data


# --- folders ------------------------------------------------------------------------------

def loose_bits(info: os.stat_result) -> int:
    """The group and world write bits of a folder's mode (0 when only its owner can write)."""
    return stat.S_IMODE(info.st_mode) & 0o022


def is_ours_to_tighten(info: os.stat_result) -> bool:
    """A loose folder we may tighten: ours, and not a shared one by design (sticky, as /tmp)."""
    return info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX


def loose_folder_problem(folder: Path) -> str | None:
    """Why a folder that others can write to cannot hold our state (in words after the path), or
    None: it is tight, or it is ours to tighten (`tighten_folder`)."""
    try:
        info = os.stat(folder)
    except OSError:
        return None  # made later, 0700
    if not stat.S_ISDIR(info.st_mode) or not loose_bits(info):
        return None
    if is_ours_to_tighten(info):
        return None
    whose = "a shared folder (sticky, like /tmp)" if info.st_mode & stat.S_ISVTX else "not yours"
    return (f"other users can write to it (mode {stat.S_IMODE(info.st_mode):04o}) and it is {whose}, so they "
            "could replace the run's state: give --state-dir a folder of your own")


def tighten_folder(folder: Path) -> str | None:
    """Take the group and world write bits off a folder of ours; what was done, in words, or None."""
    info = os.stat(folder)
    bits = loose_bits(info)
    if not bits or not is_ours_to_tighten(info):
        return None
    before = stat.S_IMODE(info.st_mode)
    os.chmod(folder, before & ~0o022)
    return f"{folder}: other users could write to it (mode {before:04o}); made it {before & ~0o022:04o}"
