"""Backups off the box: the same items every component says a backup holds (Synapse's files, the
Postgres dump, ...) sent by restic to an S3 bucket, encrypted on the host before they leave it;
Oracle Cloud's Object Storage (bucket and Customer Secret Key made through the oci SDK) or any
S3-compatible service. A systemd timer takes them on the answers' schedule and forgets old ones as
the answers keep them; a weekly timer restores the latest into scratch space and compares it with
the live server. `matrix-installer --backup` takes one now; `--restore` rebuilds a server from one.

How it relates to the upgrade's local archive: one script (templates/backup.sh.j2), fed by one
list of items (Deployment.backup_items), with two destinations: `matrix-backup` writes the local
archive an upgrade makes first (a quick way back on the same disk), `matrix-backup --offsite`
sends the same consistent copies and files to the repository. This component adds the
destination (a BackupTarget item) and the stages around it; it lists nothing of its own to back up.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from installer import checks
from installer.components.base import BackupTarget, Component
from installer.host.layout import BIN, ROOT
from installer.sections import Part, key

if TYPE_CHECKING:
    from collections.abc import Mapping

    from installer.answers import Answers
    from installer.components.base import BackupItem, Mode
    from installer.deployment import Deployment
    from installer.engine import Stage
    from installer.options import RunOptions

# --- where it lives on the host -----------------------------------------------------------------

RESTIC_DIR = f"{ROOT}/restic"
"""Root-only (0700): what restic needs and what the runs leave for the checks."""
ENV_FILE = f"{RESTIC_DIR}/env"
"""0600: the repository, the bucket's credentials, the schedule's period (sourced by the scripts)."""
PASSWORD_FILE = f"{RESTIC_DIR}/password"
"""0600: the repository's password. Without it the backups cannot be read, by anyone."""
CACHE_DIR = f"{RESTIC_DIR}/cache"
STATUS_FILE = f"{RESTIC_DIR}/status.json"
RESTORE_TEST_FILE = f"{RESTIC_DIR}/restore-test.json"
RESTORE_TEST_SCRIPT = f"{BIN}/matrix-restore-test"
RESTORE_MARKER = f"{ROOT}/.restore-in-progress"
"""There while a restore is under way: a half-restored server is never started (an install refuses
to go on, a rerun of the restore resumes it)."""
UNITS = ("matrix-backup.service", "matrix-backup.timer", "matrix-restore-test.service", "matrix-restore-test.timer")
RESTORE_TEST_SCHEDULE = "weekly"

# --- what the run knows (state facts) -----------------------------------------------------------

PASSWORD_FACT = "backup.password"
"""The repository's password, in the run's state (0600), as on the host."""
OCI_KEY_FACT = "backup.oci_key_id"
OCI_SECRET_FACT = "backup.oci_secret"
"""The Customer Secret Key the installer made for the bucket (Oracle shows its secret only once)."""
OCI_ENDPOINT_FACT = "backup.oci_endpoint"
"""The bucket's S3-compatible endpoint and region, so an upgrade needs no Oracle Cloud call."""
RESTORED_FACT = "backup.restored"

TARGETS = (
    ("auto", 'Automatic: Oracle Object Storage on Oracle Cloud, "none" elsewhere'),
    ("oci", "Oracle Cloud Object Storage (its S3-compatible API)"),
    ("s3", "An S3-compatible bucket (give its endpoint)"),
    ("none", "None: no backups off this server"),
)
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_S3_ENDPOINT = re.compile(r"https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")
_CALENDAR = re.compile(r"[A-Za-z0-9*:.,/~+ -]{1,100}")
_CREDENTIAL = re.compile(r"[A-Za-z0-9+/=._~-]{1,256}")
"""S3 access keys and secrets (AWS, Oracle's Customer Secret Keys, rclone's): no quotes, no spaces."""


def target_of(answers: Answers) -> str:
    """Where backups go: the answer, with "auto" decided by the provider."""
    target = answers.backup.target
    if target == "auto":
        return "oci" if answers.cloud.provider == "oci" else "none"
    return str(target)


def _offsite(answers: Answers) -> bool:
    return target_of(answers) != "none"


def _s3(answers: Answers) -> bool:
    return target_of(answers) == "s3"


def s3_endpoint(value: object) -> str | None:
    """An S3 service's URL: http(s), a host name or IP address, a port; no path (the bucket is its own key)."""
    from urllib.parse import urlsplit

    if value == "":
        return None
    if not isinstance(value, str) or not _S3_ENDPOINT.fullmatch(value):
        return 'must be an http(s) URL with no path, such as "https://s3.eu-central-1.amazonaws.com"'
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "has a port outside 1-65535"
    if problem := checks.host_or_ip(parts.hostname or ""):
        return f"host {problem}"
    return None


def on_calendar(value: object) -> str | None:
    """A systemd OnCalendar expression, as far as can be told here (the host's systemd-analyze checks it)."""
    if not isinstance(value, str) or not _CALENDAR.fullmatch(value) or value.startswith("-"):
        return ('must be a systemd OnCalendar expression, such as "daily", "hourly" or "*-*-* 03:30:00" '
                "(letters, digits, * : . , / ~ + - and spaces)")
    return None


@dataclass(frozen=True)
class BackupKeys:
    target: str = key("auto", "Backups go to", '"oci" (Object Storage) | "s3" | "none"; "auto": "oci" on Oracle Cloud, '
                      'else "none"', step="Server", choices=tuple(v for v, _ in TARGETS), options=TARGETS, group="Backups",
                      guide="encrypted with restic on the server before they leave it; daily by default, with a "
                            "restore test every week")
    bucket: str = key("matrix-backups", "Bucket", "the bucket (made on Oracle Cloud when missing)", step="Server",
                      check=checks.pattern(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]",
                                           "a bucket name: 3-63 lowercase letters, digits, . _ -"),
                      applies=_offsite, group="Backups")
    s3_endpoint: str = key("", "S3 endpoint", 'target "s3": the service\'s URL, such as "https://s3.eu-central-1.amazonaws.com"',
                           step="Server", check=s3_endpoint, applies=_s3, group="Backups")
    s3_access_key_env: str = key("", "Access key variable", 'target "s3": the environment variable holding the access key ID',
                                 step="Server", check=checks.pattern(_ENV_NAME, "an environment variable's name", optional=True),
                                 applies=_s3, group="Backups", placeholder="AWS_ACCESS_KEY_ID")
    s3_secret_key_env: str = key("", "Secret key variable", 'target "s3": the environment variable holding the secret key',
                                 step="Server", check=checks.pattern(_ENV_NAME, "an environment variable's name", optional=True),
                                 applies=_s3, group="Backups", placeholder="AWS_SECRET_ACCESS_KEY")
    password_env: str = key("MATRIX_BACKUP_PASSWORD", "Password variable",
                            "the environment variable with the backups' password, when this machine's state does not "
                            "have it (a restore from elsewhere); unset at the first install: one is generated and shown once",
                            step="Server", check=checks.pattern(_ENV_NAME, "an environment variable's name"),
                            applies=_offsite, group="Backups")
    schedule: str = key("daily", "Schedule", "when backups run: a systemd OnCalendar expression", step="Server",
                        check=on_calendar, applies=_offsite, group="Backups")
    keep_daily: int = key(7, "Daily kept", "daily snapshots kept", step="Server", check=checks.int_range(0, 1000),
                          applies=_offsite, group="Backups")
    keep_weekly: int = key(4, "Weekly kept", "weekly snapshots kept", step="Server", check=checks.int_range(0, 1000),
                           applies=_offsite, group="Backups")
    keep_monthly: int = key(6, "Monthly kept", "monthly snapshots kept", step="Server", check=checks.int_range(0, 1000),
                            applies=_offsite, group="Backups")


@dataclass(frozen=True)
class BackupAccess:
    """The bucket and the credentials the host uses (a stage output; the secret never shown)."""

    endpoint: str
    bucket: str
    region: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    fresh: bool = False
    """A key made by this run: S3 may refuse it for a little while."""

    @property
    def repository(self) -> str:
        return f"s3:{self.endpoint}/{self.bucket}"


def env_value(name: str) -> str:
    return os.environ.get(name, "").strip() if name else ""


class Backup(Component):
    name = "backup"
    title = "Backups off the box"
    answers = (Part("backup", BackupKeys),)

    def enabled(self, answers: Answers, mode: Mode = "install", facts: Mapping[str, Any] | None = None) -> bool:
        # --check reads what the state says of the server; --backup with no target makes a local
        # archive; --restore with no target is refused before it starts (problems_before_run).
        return mode in ("check", "backup", "restore") or _offsite(answers)

    def problems(self, answers: Answers) -> list[tuple[str, str]]:
        b = answers.backup
        found = []
        if _s3(answers):
            if not b.s3_endpoint:
                found.append(("backup.s3_endpoint", 'is required with target = "s3": the S3 service\'s URL'))
            for name in ("s3_access_key_env", "s3_secret_key_env"):
                if not getattr(b, name):
                    found.append((f"backup.{name}", 'is required with target = "s3": the name of the environment '
                                                    "variable that holds it (never the key itself)"))
        if _offsite(answers) and not (b.keep_daily or b.keep_weekly or b.keep_monthly):
            found.append(("backup.keep_daily", "keep_daily, keep_weekly and keep_monthly are all 0: every snapshot "
                                               "would be forgotten as soon as it is made"))
        return found

    def warnings(self, answers: Answers) -> list[str]:
        if answers.backup.target == "none":
            return ["no backups leave the server ([backup] target = \"none\"): losing the VM loses everything "
                    "(Oracle can also reclaim an idle Always Free instance)"]
        return []

    def problems_before_run(self, answers: Answers, options: RunOptions) -> list[str]:
        """The S3 credentials' variables set (their values are never in the answers)."""
        if options.mode == "restore" and not _offsite(answers):
            return ['--restore takes the server back from its off-box backups, and these answers have none '
                    '([backup] target = "none" here): give the answers of the server that was backed up']
        if options.mode == "backup" or not _s3(answers):
            return []
        found = []
        for name in ("s3_access_key_env", "s3_secret_key_env"):
            variable = getattr(answers.backup, name)
            value = env_value(variable)
            if not value:
                found.append(f"backup.{name}: the environment variable {variable} is not set: it holds the bucket's "
                             f"{'access key ID' if 'access' in name else 'secret key'}")
            elif not _CREDENTIAL.fullmatch(value):
                found.append(f"backup.{name}: the value of {variable} is not an S3 key (letters, digits and + / = . _ ~ - only)")
        return found

    def backup(self, d: Deployment) -> list[BackupItem]:
        if not _offsite(d.answers) or d.mode == "check":
            return []
        b = d.answers.backup
        keep = tuple((period, count) for period, count in (("daily", b.keep_daily), ("weekly", b.keep_weekly),
                                                           ("monthly", b.keep_monthly)) if count)
        return [BackupTarget(ENV_FILE, STATUS_FILE, d.answers.domain.server_name, keep)]

    def stages(self, d: Deployment, mode: Mode) -> list[Stage]:
        from installer.components.backup import stages as s
        from installer.engine import Stage

        if mode == "check":
            return [Stage("backup.age", "Last backup and restore test", s.check_mode_age)]
        if mode == "backup":
            return [Stage("backup.now", "Backup now", s.backup_now, ("host.ssh",))]
        if not _offsite(d.answers):
            return []
        setup = [
            Stage("backup.bucket", "Backups: the bucket and its credentials", s.access, gives=(BackupAccess,)),
            Stage("backup.setup", "Backups: restic repository, schedule and restore test", s.setup, ("host.ssh",),
                  takes=(BackupAccess,)),
        ]
        if mode == "install":
            from installer.components.backup.restore import no_unfinished_restore

            return [
                *setup,
                Stage("backup.unfinished", "No restore left half-done", no_unfinished_restore, ("host.ssh",),
                      before=("synapse.config", "postgres.config", "services.start")),
                Stage("backup.first", "First backup, off the box", s.first_backup, ("backup.setup", "services.start")),
            ]
        if mode == "upgrade":  # beside the upgrade, never in its way: it makes its own local archive first
            return [*setup, Stage("backup.age", "Last backup and restore test", s.age, ("backup.setup",))]
        return []

    def restoring_stages(self, d: Deployment) -> list[Stage]:
        if not _offsite(d.answers):
            return []
        from installer.components.backup.restore import preflight, restore
        from installer.engine import Stage

        return [
            # Before the install's steps change the host or its DNS: a deployment there is not
            # replaced unless the restore was told so.
            Stage("backup.replace", "A deployment there replaced only if asked", preflight, ("host.ssh",),
                  before=("host.firewall", "host.caddy", "host.docker", "dns.records", "backup.setup")),
            # After the install's steps that need no data (SSH, firewall, Caddy, Docker, restic);
            # before anything that would make a new server's data (config, database, first start).
            Stage("backup.restore", "The server's data restored from the backup", restore,
                  ("backup.setup", "host.docker"), before=("synapse.config", "postgres.config", "services.start")),
        ]


COMPONENT = Backup()
