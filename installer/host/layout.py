"""Where a deployment lives on the host, as the manual guide lays it out, for install and upgrade.

/opt/matrix/synapse is the compose project (the name it has had since the first release, kept
so that earlier deployments are found): docker-compose.yml, the env files, and each service's
data in a folder beside Synapse's data/, so one backup sees them all.
"""

from __future__ import annotations

import shlex

ROOT = "/opt/matrix"
PROJECT = f"{ROOT}/synapse"
COMPOSE_FILE = f"{PROJECT}/docker-compose.yml"
COMPOSE = f"docker compose -f {COMPOSE_FILE}"
BACKUP_DIR = f"{ROOT}/backups"
BIN = f"{ROOT}/bin"
BACKUP_SCRIPT = f"{BIN}/matrix-backup"
RESTORE_SCRIPT = f"{BIN}/matrix-restore"


def in_project(name: str) -> str:
    """A path inside the compose project folder."""
    return f"{PROJECT}/{name}"


def compose(*words: str) -> str:
    """A `docker compose` command line on the project (every word quoted)."""
    return " ".join([COMPOSE, *(shlex.quote(w) for w in words)])
