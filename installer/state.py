"""Run state: one folder per server name, rewritten atomically (0600) after every change, so an
interrupted or failed run resumes and a finished one reruns with nothing to do."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from installer.files import UnsafePathError, loose_folder_problem, read_own, replace_problem, tighten_folder, write_private

STATE_FILE = "state.json"
STATE_FILES = (STATE_FILE, "answers.toml", "last-run.log", "report.json")
"""What a run writes in its state folder: each must be a regular file of ours, or not there yet."""
MAX_STATE_BYTES = 16 * 1024 * 1024


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "matrix-installer"


class RunState:
    """Facts about the deployment (cloud OCIDs, public IP, pinned host key) and stage records."""

    def __init__(self, folder: Path | None, data: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.notices: list[str] = []
        """What was changed to make the state folder safe (a loose folder tightened), to tell the user."""
        data = data or {}
        self.facts: dict[str, Any] = data.get("facts", {})
        self.stages: dict[str, dict[str, Any]] = data.get("stages", {})

    @classmethod
    def load(cls, state_dir: Path, server_name: str) -> RunState:
        folder = Path(state_dir) / server_name
        path = folder / STATE_FILE
        try:
            data = json.loads(read_own(path, MAX_STATE_BYTES))
        except FileNotFoundError:
            data = {}
        except UnsafePathError as exc:
            raise StateError(f"{exc}; the saved state must be a file of yours") from None
        except (OSError, ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise StateError(f"{path}: cannot read the saved state ({why}); move it aside to start over") from None
        if not (isinstance(data, dict) and all(isinstance(data.get(k, {}), dict) for k in ("facts", "stages"))):
            raise StateError(f"{path}: is not the saved state of a run; move it aside to start over")
        return cls(folder, data)

    @classmethod
    def open(cls, state_dir: Path, server_name: str) -> RunState:
        """The state of a real run: its folder made (0700) or checked first, so that nothing the
        run writes there can follow a link or land in a folder others can write to. Loose
        folders of ours are tightened (said in `notices`); others' are refused (StateError)."""
        notices = prepare_folder(Path(state_dir), server_name)
        state = cls.load(state_dir, server_name)
        state.notices = notices
        return state

    @classmethod
    def in_memory(cls, other: RunState | None = None) -> RunState:
        """A copy that is never written (dry-run)."""
        data = json.loads(json.dumps(other.to_dict())) if other else None
        return cls(None, data)

    @property
    def exists(self) -> bool:
        return bool(self.facts or self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "facts": self.facts, "stages": self.stages}

    def remember(self, key: str, value: Any) -> None:
        self.facts[key] = value
        self.save()

    def forget(self, key: str) -> None:
        if self.facts.pop(key, None) is not None:
            self.save()

    def record_stage(self, name: str, status: str, seconds: float, error: str | None) -> None:
        self.stages[name] = {"status": status, "seconds": round(seconds, 2), "error": error, "at": int(time.time())}
        self.save()

    def save(self) -> None:
        if self.folder is None:
            return
        write_private(self.folder / STATE_FILE, json.dumps(self.to_dict(), indent=2, sort_keys=True).encode())


class StateError(Exception):
    pass


def prepare_folder(root: Path, server_name: str) -> list[str]:
    """Make or check `root`/`server_name` for a run's files; what was tightened, in words.

    The state root may be a link (a home folder's layout is the user's business); the folder of
    one server is ours: a real folder, owned by us, 0700, and each file we write in it a regular
    file of ours or absent."""
    if problem := loose_folder_problem(root):
        raise StateError(f"{root}: {problem}")
    notices: list[str] = []
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if note := tighten_folder(root):
            notices.append(note)
        folder = root / server_name
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            folder.mkdir(mode=0o700)
            info = os.lstat(folder)
    except FileExistsError:
        raise StateError(f"{root}: is a file, not a folder: pass --state-dir with a folder") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
        raise StateError(f"{folder}: is {what}; a run's state folder must be a real folder of yours: move it aside")
    if info.st_uid != os.geteuid():
        raise StateError(f"{folder}: belongs to another user; a run's state folder must be yours")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(folder, 0o700)
        notices.append(f"{folder}: others could read or write it (mode {stat.S_IMODE(info.st_mode):04o}); made it 0700")
    for name in STATE_FILES:
        if problem := replace_problem(folder / name):
            raise StateError(f"{folder / name}: {problem}")
    return notices
