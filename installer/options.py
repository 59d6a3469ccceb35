"""The command line's flags for one run, apart from the engine so the guided setup's first
frame does not pay for importing the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunOptions:
    """Everything about this run that is not an answer: the command line's flags."""

    mode: str = "install"
    dry_run: bool = False
    state_dir: Path | None = None
    report: Path | None = None
    connect_to: list[tuple[str, int, str, int]] = field(default_factory=list)
    dns_server: tuple[str, int] | None = None
    ca_file: Path | None = None
    launch_retry_minutes: int | None = None
    """Overrides answers.cloud.launch_retry_minutes (the --launch-retry-minutes flag)."""
    snapshot: str | None = None
    """--restore --snapshot ID: the snapshot to restore (default: the latest)."""
    replace: bool = False
    """--restore --replace: a deployment already on the host may be replaced (it is moved aside)."""

    @property
    def state_root(self) -> Path:
        """--state-dir, else the default ($XDG_STATE_HOME/matrix-installer)."""
        from installer.state import default_state_dir

        return self.state_dir or default_state_dir()
