"""The server keeps testing itself: a systemd timer on the host runs `matrix-selftest` daily (the
checks other servers make, from the host side, plus our outbound federation and the disk), keeps
the history there, and posts a failure, or a certificate close to its end, to a "Server notices"
room the admin is in, through a bot account the installer makes (its token only on the host,
root-only). With off-box backups it also reads their age and the weekly restore test's result,
and a failed restore test starts it at once (systemd's OnFailure), so that failure reaches the
same room. `matrix-installer --check` shows the last result (the report's `server-health`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from installer.components.base import BackupFiles, Component
from installer.host.layout import BIN, in_project

if TYPE_CHECKING:
    from installer.answers import Answers
    from installer.components.base import BackupItem, Mode
    from installer.deployment import Deployment
    from installer.engine import Stage

SCRIPT = f"{BIN}/matrix-selftest"
FOLDER = in_project("selftest")
CONFIG = f"{FOLDER}/config.json"
TOKEN_FILE = f"{FOLDER}/bot-token"
STATE_DIR = "/var/lib/matrix-selftest"
LAST = f"{STATE_DIR}/last.json"
HISTORY = f"{STATE_DIR}/history.jsonl"
UNIT = "matrix-selftest"
SERVICE_FILE = f"/etc/systemd/system/{UNIT}.service"
TIMER_FILE = f"/etc/systemd/system/{UNIT}.timer"
BOT_LOCALPART = "matrix-selftest"
ROOM_NAME = "Server notices"

RESTORE_TEST_HOOK = "/etc/systemd/system/matrix-restore-test.service.d/matrix-selftest.conf"
"""A drop-in for the backups' weekly restore test: when it fails, systemd starts the self-test,
which reads the restore test's result and posts the failure to the notices room."""
RESTORE_TEST_HOOK_TEXT = f"""# Managed by matrix-installer: a failed restore test starts the self-test at once, which posts
# the failure (the restore-test check) to the admin's "{ROOM_NAME}" room.
[Unit]
OnFailure={UNIT}.service
"""

DEPLOYED = "selftest.deployed"
"""State fact: the timer is installed (an upgrade keeps it up to date)."""
ROOM = "selftest.room"
"""State fact: the notices room's ID."""


class SelfTest(Component):
    name = "selftest"
    title = "Daily self-test"

    def enabled(self, answers: Answers, mode: Mode = "install", facts: Mapping[str, Any] | None = None) -> bool:
        if mode == "upgrade":  # an older deployment gets it through joining_stages
            return bool((facts or {}).get(DEPLOYED))
        return mode in ("install", "restore")  # a restore is an install: the timer and room come back too

    def backup(self, d: Deployment) -> list[BackupItem]:
        return [BackupFiles(("selftest",))]

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        from installer.components.homeserver import AdminCredentials
        from installer.components.selftest import stages as s
        from installer.engine import Stage

        if mode == "install":
            return [
                Stage("selftest.notices", "Notices room for the self-test", s.notices_room, ("registration.policy",),
                      takes=(AdminCredentials,)),
                Stage("selftest.timer", "Daily self-test (systemd timer)", s.install_timer, ("selftest.notices",)),
            ]
        if mode == "upgrade":
            return [Stage("selftest.timer", "Daily self-test (systemd timer)", s.install_timer, ("host.ssh",))]
        return []

    def joining_stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        """An upgrade of a server installed before the self-test existed: the timer, and the
        notices room when the admin's password is in the environment."""
        if mode != "upgrade":
            return []
        from installer.components.selftest import stages as s
        from installer.engine import Stage

        return [Stage("selftest.notices", "Notices room for the self-test", s.notices_room, ("upgrade.images",)),
                Stage("selftest.timer", "Daily self-test (systemd timer)", s.install_timer, ("selftest.notices",))]


COMPONENT = SelfTest()
