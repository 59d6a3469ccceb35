"""The backup component's stages: backup.bucket (the bucket and its credentials), backup.setup
(restic, the repository, the scripts and the timers on the host), backup.first (the first
snapshot of an install), backup.now (--backup), backup.age (what the last backup and restore test
left, for upgrades and --check). The restore is in restore.py.

Secrets (the repository's password, the bucket's secret key) go to the host only in root-only
files written with put_file(secret=True), are registered with ctx.secret, and are never on a
command line: the host's scripts read them from those files.
"""

from __future__ import annotations

import json
import re
import secrets as _random
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from installer.components.backup import (
    CACHE_DIR,
    ENV_FILE,
    PASSWORD_FACT,
    PASSWORD_FILE,
    RESTIC_DIR,
    RESTORE_TEST_FILE,
    RESTORE_TEST_SCHEDULE,
    RESTORE_TEST_SCRIPT,
    STATUS_FILE,
    BackupAccess,
    env_value,
    target_of,
)
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.containers import human_size
from installer.host.layout import BACKUP_DIR, BACKUP_SCRIPT, BIN, RESTORE_SCRIPT

q = shlex.quote

HINTS = {
    2: "see the error above",
    3: "free some space on the host (`sudo docker image prune`, old logs in /var/log), then run it again; "
       "nothing was sent, and the earlier backups are untouched",
    4: "the deployment lacks a file a restore needs: rerun the install, which puts it back",
    5: "see the error above; rerun once the server runs",
    20: "check that the host reaches the bucket's endpoint (its address, DNS, a firewall): `curl -I ENDPOINT` on the host",
    21: "check the access key and its secret (the environment variables named in [backup]); a new Oracle Customer "
        "Secret Key can take a minute to work",
    22: "make the bucket (or correct [backup] bucket and s3_endpoint), then rerun",
    23: "give the password the backups were made with: it was shown once when they were set up, and is kept in the "
        "installer's state folder and on the old host in /opt/matrix/restic/password; put it in ${password_env} "
        "and rerun",
    24: "check [backup] bucket and s3_endpoint: they must name the bucket the backups went to",
    25: "leave --snapshot out for the latest, or list them: `sudo matrix-restore --snapshots` on a host set up for "
        "the same bucket",
    26: "restore an older snapshot (--snapshot ID); `restic check --read-data` on the host names what is damaged",
    27: "see restic's words above; rerun",
    28: "wait for the other run to finish (`systemctl status matrix-backup`), then rerun",
}
FRESH_KEY_WAIT = 90.0
"""Seconds to keep asking with a Customer Secret Key just made: Oracle may refuse it for a moment."""


# --- the host's scripts, run with their output read as it comes ----------------------------------

@dataclass
class Output:
    """A host script's output as it streams: restic's JSON lines become progress; the script's own
    lines go to the log; its "error: ..." line is kept for the stage's message."""

    ctx: StageContext
    summary: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    error: str = ""

    def __call__(self, line: str, kind: str) -> None:
        if kind == "out" and line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            if isinstance(data, dict):
                self._restic(data)
                return
        if kind in ("out", "err"):
            self.lines.append(line)
            if kind == "err" and line.startswith("error: "):
                self.error = line.removeprefix("error: ")
        self.ctx.log(line, kind)

    def _restic(self, data: dict[str, Any]) -> None:
        kind = data.get("message_type")
        if kind == "status":
            files, total_files = data.get("files_done", data.get("files_restored", 0)), data.get("total_files", 0)
            done, total = data.get("bytes_done", data.get("bytes_restored", 0)), data.get("total_bytes", 0)
            fraction = data.get("percent_done")
            self.ctx.progress(f"{files} of {total_files} files, {human_size(int(done or 0))} of {human_size(int(total or 0))}",
                              float(fraction) if isinstance(fraction, (int, float)) else None)
        elif kind == "summary":  # the last word on files and bytes, however quick the run
            self.summary = data
            files = data.get("total_files_processed", data.get("files_restored", 0))
            done = data.get("total_bytes_processed", data.get("bytes_restored", 0))
            self.ctx.progress(f"{files} of {files} files, {human_size(int(done or 0))} of {human_size(int(done or 0))}", 1.0)
        elif kind in ("error", "exit_error"):
            error = data.get("error")
            message = error.get("message") if isinstance(error, dict) else data.get("message")
            self.ctx.log(f"restic: {message} {data.get('item', '')}".strip(), "err")

    def said(self, word: str) -> list[str]:
        """The script's lines that start with `word` (without it)."""
        return [line[len(word) + 1:] for line in self.lines if line.startswith(word + " ")]


async def run_script(ctx: StageContext, command: str, *, timeout: float = 6 * 3600, dry_output: str = "") -> tuple[int, Output]:
    output = Output(ctx)
    result = await ctx.remote.run(command, log=output, sudo=True, check=False, timeout=timeout, dry_output=dry_output)
    return result.exit_status, output


def script_failed(status: int, output: Output, what: str) -> StageError:
    hint = HINTS.get(status, "see the output above").replace("{password_env}", output.ctx.answers.backup.password_env)
    return StageError(output.error or f"{what} failed (status {status})", hint)


# --- the password ----------------------------------------------------------------------------------

async def password_for(ctx: StageContext) -> tuple[str, str]:
    """The repository's password and where it came from: this machine's state, the host's file,
    the environment variable the answers name, or (for a new repository) made now."""
    variable = ctx.answers.backup.password_env
    from_env = env_value(variable)
    if stored := ctx.facts.get(PASSWORD_FACT):
        if from_env and from_env != stored:
            ctx.log(f"note: ${variable} differs from the password in this machine's state: the state's is used")
        return ctx.secret(str(stored)), "state"
    raw = await ctx.read_file(PASSWORD_FILE)
    if raw and raw.strip():
        return ctx.secret(raw.decode("utf-8", "replace").strip()), "host"
    if from_env:
        if len(from_env) < 12:
            raise StageError(f"the password in ${variable} is shorter than 12 characters",
                             "choose a longer one, or unset the variable: one is generated and shown once")
        return ctx.secret(from_env), "environment"
    if ctx.options.mode == "restore":
        raise StageError(
            f"the backups' password is not known here: this machine's state does not have it, and ${variable} is not set",
            f"set ${variable} to the password shown when the backups were set up (the old installer's state folder "
            "and the old host's /opt/matrix/restic/password keep it too), then rerun")
    return ctx.secret(_random.token_urlsafe(24)), "made"


# --- backup.bucket --------------------------------------------------------------------------------

async def access(ctx: StageContext) -> Status:
    from installer.components.backup.bucket import bucket_access

    found, changed = await bucket_access(ctx)
    ctx.give(found)
    return Status.DONE if changed else ctx.proven()


# --- backup.setup --------------------------------------------------------------------------------

DRY_CALENDAR = "Normalized form: *-*-* 00:00:00\n    Next elapse: Tue 2026-12-01 00:00:00 UTC\n   Iteration #2: Wed 2026-12-02 00:00:00 UTC\n"


async def schedule_period(ctx: StageContext) -> int:
    """Seconds between two runs of the answers' schedule, as the host's systemd reads it."""
    schedule = ctx.answers.backup.schedule
    result = await ctx.run(f"env TZ=UTC systemd-analyze calendar --iterations=2 {q(schedule)}", check=False,
                           dry_output=DRY_CALENDAR)
    if not result.ok:
        said = (result.stderr.strip().splitlines() or ["(no reason given)"])[-1]
        raise StageError(f"backup.schedule {schedule!r} is not a calendar the host's systemd understands: {said}",
                         'use a systemd OnCalendar expression such as "daily", "hourly" or "*-*-* 03:30:00" '
                         "(man systemd.time)")
    return period_from(result.stdout)


def period_from(text: str) -> int:
    """The seconds between the first two elapses systemd-analyze lists (a day when it lists fewer)."""
    import datetime as dt

    stamps = re.findall(r"(?:Next elapse|Iteration #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text)
    if len(stamps) < 2:
        return 86400
    first, second = (dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S") for s in stamps[:2])
    return max(60, int((second - first).total_seconds()))


def env_text(found: BackupAccess, password_file: str, period: int) -> str:
    """The repository's settings for the host's scripts (sourced by bash: every value quoted)."""
    values = [
        ("RESTIC_REPOSITORY", found.repository),
        ("RESTIC_PASSWORD_FILE", password_file),
        ("RESTIC_CACHE_DIR", CACHE_DIR),
        ("RESTIC_PROGRESS_FPS", "1"),
        ("AWS_ACCESS_KEY_ID", found.access_key),
        ("AWS_SECRET_ACCESS_KEY", found.secret_key),
        ("MATRIX_S3_ENDPOINT", found.endpoint),
        ("MATRIX_S3_BUCKET", found.bucket),
        ("MATRIX_S3_REGION", found.region),
        ("MATRIX_BACKUP_PERIOD", str(int(period))),
    ]
    lines = ["# Managed by matrix-installer (backup.setup): where backups go. Root only: it holds the bucket's credentials."]
    lines += [f"{name}={q(value)}" for name, value in values]
    return "\n".join(lines) + "\n"


def units(schedule: str) -> dict[str, str]:
    """The systemd units: the backup on the answers' schedule, the restore test weekly."""
    return {
        "matrix-backup.service": (
            "[Unit]\nDescription=Matrix backup, off the box (matrix-installer)\nWants=network-online.target\n"
            "After=network-online.target docker.service\n\n[Service]\nType=oneshot\n"
            f"ExecStart={BACKUP_SCRIPT} --offsite\nNice=10\nIOSchedulingClass=idle\n"),
        "matrix-backup.timer": (
            "[Unit]\nDescription=Matrix backup, off the box (matrix-installer)\n\n[Timer]\n"
            f"OnCalendar={schedule}\nPersistent=true\nRandomizedDelaySec=10min\n\n[Install]\nWantedBy=timers.target\n"),
        "matrix-restore-test.service": (
            "[Unit]\nDescription=Matrix restore test: the latest backup restored into scratch space and compared "
            "(matrix-installer)\nWants=network-online.target\nAfter=network-online.target docker.service\n\n"
            f"[Service]\nType=oneshot\nExecStart={RESTORE_TEST_SCRIPT}\nNice=10\nIOSchedulingClass=idle\n"),
        "matrix-restore-test.timer": (
            "[Unit]\nDescription=Matrix restore test, weekly (matrix-installer)\n\n[Timer]\n"
            f"OnCalendar={RESTORE_TEST_SCHEDULE}\nPersistent=true\nRandomizedDelaySec=1h\n\n[Install]\nWantedBy=timers.target\n"),
    }


def restore_test_text(ctx: StageContext) -> str:
    from installer.components.base import BackupDump
    from installer.components.homeserver import DatabaseSettings
    from installer.render import render_restore_test

    d = ctx.deployment
    items = d.backup_items()
    homeserver = d.service(d.homeserver.service)
    settings = next((s for s in d.homeserver_settings() if isinstance(s, DatabaseSettings)), None)
    dump = next((i for i in items if isinstance(i, BackupDump)), None)
    db = {"engine": "sqlite"}
    if settings is not None and dump is not None:
        service = d.service(settings.service)
        environment = service.settings.get("environment", {})
        db = {"engine": settings.engine, "dump": dump.name, "image": service.image, "service": settings.service,
              "user": settings.user, "database": settings.database,
              "initdb_args": str(environment.get("POSTGRES_INITDB_ARGS", ""))}
    return render_restore_test(items, result_file=RESTORE_TEST_FILE, db=db,
                               homeserver={"container": homeserver.name, "image": homeserver.image})


async def install_scripts(ctx: StageContext) -> bool:
    """matrix-backup, matrix-restore (as an upgrade writes them: the same items, the same script)
    and matrix-restore-test."""
    from installer.render import render_backup_scripts

    backup, restore = render_backup_scripts(ctx.deployment.backup_items(), keep=ctx.answers.upgrade.keep_backups)
    changed = False
    for path, text in ((BACKUP_SCRIPT, backup), (RESTORE_SCRIPT, restore), (RESTORE_TEST_SCRIPT, restore_test_text(ctx))):
        changed |= await ctx.put_file(path, text.encode(), mode=0o700, owner="root:root", backup=False)
    return changed


async def check_repository(ctx: StageContext, env_file: str, found: BackupAccess) -> str:
    """The bucket reached, the credentials and the password accepted, the repository there (made
    by an install; a restore needs it there). Returns what the script said."""
    mode = "--probe" if ctx.options.mode == "restore" else "--init"
    deadline = time.monotonic() + FRESH_KEY_WAIT
    while True:
        status, output = await run_script(ctx, f"env MATRIX_BACKUP_ENV={q(env_file)} {BACKUP_SCRIPT} {mode}", timeout=600,
                                          dry_output=f"repository {found.repository}: made\n")
        if status == 0:
            return (output.said("repository") or [""])[-1]
        if status == 21 and found.fresh and time.monotonic() < deadline:
            ctx.progress("a Customer Secret Key just made: waiting for Object Storage to accept it")
            await ctx.sleep(10)
            continue
        raise script_failed(status, output, "checking the repository")


async def setup(ctx: StageContext) -> Status:
    """restic from the OS's packages, the repository checked (made by an install), its settings
    and password in root-only files, the scripts, the backup timer on the answers' schedule and
    the weekly restore test."""
    from installer.host.apt import apt_install, ensure_service

    found = ctx.take(BackupAccess)
    changed = False
    if not await ctx.probe("command -v restic >/dev/null && command -v curl >/dev/null", sudo=True):
        await apt_install(ctx, "restic", "curl", "ca-certificates")
        changed = True
    version = await ctx.run("restic version", dry_output="restic 0.16.4 compiled with go1.22.2 on linux/arm64")
    ctx.log(version.stdout.strip().splitlines()[0] if version.stdout.strip() else "restic installed")
    period = await schedule_period(ctx)
    for folder, mode in ((RESTIC_DIR, "0700"), (CACHE_DIR, "0700"), (BIN, "0755")):
        if not await ctx.probe(f"test -d {q(folder)}", sudo=True):
            await ctx.run(f"install -d -m {mode} -o root -g root {q(folder)}", sudo=True)
            changed = True

    password, origin = await password_for(ctx)
    changed |= await install_scripts(ctx)
    # The new settings are tried first, beside the ones in use: a wrong key or password changes nothing.
    candidate_password, candidate_env = PASSWORD_FILE + ".new", ENV_FILE + ".new"
    await ctx.put_file(candidate_password, (password + "\n").encode(), mode=0o600, secret=True, backup=False)
    await ctx.put_file(candidate_env, env_text(found, candidate_password, period).encode(), mode=0o600, secret=True,
                       backup=False)
    try:
        said = await check_repository(ctx, candidate_env, found)
    finally:
        await ctx.run(f"rm -f {q(candidate_password)} {q(candidate_env)}", sudo=True)
    changed |= said.endswith(": made")
    changed |= await ctx.put_file(PASSWORD_FILE, (password + "\n").encode(), mode=0o600, secret=True, backup=False)
    changed |= await ctx.put_file(ENV_FILE, env_text(found, PASSWORD_FILE, period).encode(), mode=0o600, secret=True,
                                  backup=False)
    if ctx.facts.get(PASSWORD_FACT) != password and not ctx.dry_run:
        ctx.remember(PASSWORD_FACT, password)  # the state is 0600: the one copy on this machine

    units_changed = False
    for unit, text in units(ctx.answers.backup.schedule).items():
        units_changed |= await ctx.put_file(f"/etc/systemd/system/{unit}", text.encode(), mode=0o644, backup=False)
    if units_changed:
        await ctx.run("systemctl daemon-reload", sudo=True)
        changed = True
    for timer in ("matrix-backup.timer", "matrix-restore-test.timer"):
        if units_changed and await ctx.probe(f"systemctl is-active --quiet {timer}", sudo=True):
            await ctx.run(f"systemctl restart {timer}", sudo=True)  # a new schedule applies now
        changed |= await ensure_service(ctx, timer)
    ctx.log(f"backups: {ctx.answers.backup.schedule} (every {human_period(period)}), then restic forget --prune "
            f"keeping {ctx.answers.backup.keep_daily} daily, {ctx.answers.backup.keep_weekly} weekly, "
            f"{ctx.answers.backup.keep_monthly} monthly; the restore test {RESTORE_TEST_SCHEDULE}")
    if origin == "made" and ctx.dry_run:
        ctx.log("a real run makes the backups' password here and shows it once at the end (never in a log)")
    elif origin == "made":
        ctx.reveal(f"Backup password for {ctx.answers.domain.server_name} (restic)", password)
        ctx.log("made the backups' password: shown once at the end. WITHOUT IT THE BACKUPS CANNOT BE READ, by anyone: "
                "keep it somewhere other than this machine and the server (it is also in this machine's state folder, "
                f"0600, and on the host in {PASSWORD_FILE}, root-only)")
    elif origin != "state":
        ctx.log(f"the backups' password: from {'the host' if origin == 'host' else '$' + ctx.answers.backup.password_env}; "
                "kept in this machine's state (0600)")
    return Status.DONE if changed else Status.UNCHANGED


def human_period(seconds: float) -> str:
    """A duration in the unit a person would use: "45 s", "20 min", "5 h", "3 days"."""
    seconds = max(0, int(seconds))
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400} day{'s' if seconds > 86400 else ''}"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


# --- backup.first and backup.now ---------------------------------------------------------------

async def read_status(ctx: StageContext) -> tuple[dict[str, Any] | None, dict[str, Any] | None, float]:
    """What the last off-box backup and restore test left on the host, and the host's clock."""
    from installer.components.backup.check import STATUS_COMMAND, parse_status_output

    def quiet(line: str, kind: str) -> None:
        ctx.log(line, "debug" if kind in ("out", "err") else kind)

    result = await ctx.remote.run(STATUS_COMMAND, log=quiet, sudo=True, check=False, dry_output="\n--\n\n--\n0\n")
    return parse_status_output(result.stdout)


async def take_backup(ctx: StageContext, *, offsite: bool) -> Status:
    """Run matrix-backup on the host, its progress shown, and say what it made."""
    command = f"{BACKUP_SCRIPT} --offsite" if offsite else BACKUP_SCRIPT
    ctx.progress("making the consistent copies")
    started = time.monotonic()
    status, output = await run_script(ctx, command, dry_output="snapshot 0123456789abcdef 0 0 0 0\n")
    if status != 0:
        raise script_failed(status, output, "the backup")
    for dump in output.said("dump"):
        name, _, size = dump.rpartition(" ")
        ctx.log(f"consistent copy {name}: {human_size(int(size)) if size.isdigit() else size}")
    seconds = time.monotonic() - started
    if offsite:
        made = (output.said("snapshot") or [""])[-1].split()
        if len(made) >= 4 and not ctx.dry_run:
            snapshot, files, read, added = made[0], int(made[1]), int(made[2]), int(made[3])
            ctx.log(f"snapshot {snapshot[:8]}: {files} files, {human_size(read)} read, {human_size(added)} new in the "
                    f"repository (encrypted), {seconds:.1f} s")
            ctx.remember("backup.last_snapshot", snapshot)
    else:
        made = (output.said("backup") or [""])[-1].rpartition(" ")
        ctx.log(f"local archive {made[0]} ({human_size(int(made[2])) if made[2].isdigit() else made[2]}), {seconds:.1f} s; "
                f"it stays on the server's disk (no [backup] target)")
    return Status.DONE


async def first_backup(ctx: StageContext) -> Status:
    """A snapshot right away (the timer's first run is hours off): it proves the whole way works.
    A rerun takes none while the last one is younger than the schedule's period."""
    from installer.components.backup.check import age_of

    status, _, now = await read_status(ctx)
    if status is not None and not ctx.dry_run:
        old = age_of(status, now)
        if status.get("ok") and old is not None and old < float(status.get("period") or 86400):
            ctx.log(f"the last snapshot ({str(status.get('snapshot', ''))[:8]}) is {human_period(int(old))} old: "
                    "no new one needed")
            await age(ctx)
            return Status.UNCHANGED
    result = await take_backup(ctx, offsite=True)
    await age(ctx)
    return result


async def backup_now(ctx: StageContext) -> Status:
    """--backup: a snapshot now, off the box (a local archive when the answers have no target)."""
    offsite = target_of(ctx.answers) != "none"
    if offsite and not await ctx.probe(f"test -f {q(ENV_FILE)} -a -x {q(BACKUP_SCRIPT)}", sudo=True) and not ctx.dry_run:
        raise StageError(f"backups are not set up on this server yet ({ENV_FILE} is missing)",
                         "run the installer with these answers (or --upgrade): it sets them up; then --backup")
    if not offsite:
        ctx.log('[backup] target is "none": the backup is a local archive in '
                f"{BACKUP_DIR}, on the server's own disk")
        if not await ctx.probe(f"test -x {q(BACKUP_SCRIPT)}", sudo=True):
            await install_scripts(ctx)
    result = await take_backup(ctx, offsite=offsite)
    if offsite:
        await age(ctx)
    return result


# --- backup.age -----------------------------------------------------------------------------------

async def age(ctx: StageContext) -> Status:
    """What the last backup and restore test left on the host, as the report's checks. In an
    upgrade that brings backups to a server for the first time, the first snapshot is taken here."""
    from installer.components.backup.check import backup_checks

    status, restore_test, now = await read_status(ctx)
    if ctx.dry_run:
        return Status.PLANNED
    if status is None and ctx.stage.name == "backup.age":
        ctx.log("no off-box backup was ever taken here: taking the first one now")
        await take_backup(ctx, offsite=True)
        status, restore_test, now = await read_status(ctx)
    for check in backup_checks(status, restore_test, now):
        ctx.log(check.summary_line())
        ctx.report_check(check.name, check.ok, check.detail, check.fix)
    return ctx.proven()


async def check_mode_age(ctx: StageContext) -> Status:
    """--check SERVER_NAME: when this machine's state knows the server and it backs up off the box,
    the last backup's age and the restore test, read over SSH (the host key pinned in the state)."""
    from installer.components.backup.check import state_checks

    found = await state_checks(ctx)
    if found is None:
        return Status.SKIPPED
    for check in found:
        ctx.log(check.summary_line())
        ctx.report_check(check.name, check.ok, check.detail, check.fix)
    return Status.DONE
