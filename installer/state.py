"""Run state: one folder per server name, rewritten atomically (0600) after every change, so an
interrupted or failed run resumes and a finished one reruns with nothing to do."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from installer.files import write_private

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "matrix-installer"


class RunState:
    """Facts about the deployment (cloud OCIDs, public IP, pinned host key) and stage records."""

    def __init__(self, folder: Path | None, data: dict[str, Any] | None = None) -> None:
        self.folder = folder
        data = data or {}
        self.facts: dict[str, Any] = data.get("facts", {})
        self.stages: dict[str, dict[str, Any]] = data.get("stages", {})

    @classmethod
    def load(cls, state_dir: Path, server_name: str) -> RunState:
        folder = Path(state_dir) / server_name
        path = folder / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise StateError(f"{path}: cannot read the saved state ({exc}); move it aside to start over") from None
        return cls(folder, data)

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
