"""The report's backup checks: `backup-age` (the last snapshot is younger than two schedule
periods) and `restore-test` (the weekly restore test passed, and ran within the last two weeks),
from what the host's runs leave in /opt/matrix/restic (status.json, restore-test.json).

Upgrades read them over the run's connection; `--check SERVER_NAME` reads them when this machine's
state knows the server (its saved answers and pinned host key), over SSH.
"""

from __future__ import annotations

import json
import shlex
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from installer.components.backup import RESTORE_TEST_FILE, STATUS_FILE, target_of
from installer.federation.report import Check

if TYPE_CHECKING:
    from installer.engine import StageContext

q = shlex.quote

STATUS_COMMAND = (f"cat {q(STATUS_FILE)} 2>/dev/null; echo; echo '--'; cat {q(RESTORE_TEST_FILE)} 2>/dev/null; "
                  "echo; echo '--'; date +%s")
RESTORE_TEST_MAX_AGE = 15 * 86400
"""A weekly test that has not run for over two weeks is a failed check (its timer stopped)."""


def _json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text.strip() or "null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_status_output(text: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None, float]:
    """STATUS_COMMAND's output: the backup's status, the restore test's, the host's clock."""
    parts = text.split("\n--\n")
    while len(parts) < 3:
        parts.append("")
    try:
        now = float(parts[2].strip() or 0)
    except ValueError:
        now = 0.0
    return _json(parts[0]), _json(parts[1]), now


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def age_of(status: dict[str, Any], now: float) -> float | None:
    """Seconds since the last snapshot's data was copied, or None when there is none."""
    taken = _number(status.get("snapshot_time"))
    return max(0.0, now - taken) if taken > 0 and status.get("snapshot") else None


def backup_checks(status: dict[str, Any] | None, restore_test: dict[str, Any] | None, now: float) -> list[Check]:
    from installer.components.backup.stages import human_period
    from installer.host.containers import human_size

    checks = []
    if status is None:
        checks.append(Check("backup-age", False, "no off-box backup has finished on this server yet",
                            "run `matrix-installer --backup --answers FILE`; the timer's log: journalctl -u matrix-backup"))
    else:
        period = _number(status.get("period")) or 86400
        ran = now - _number(status.get("at"))
        last_run = (f"the last run, {human_period(ran)} ago, " +
                    ("succeeded" if status.get("ok") else f"failed: {status.get('error') or 'no reason given'}"))
        age = age_of(status, now)
        if age is None:
            checks.append(Check("backup-age", False, f"no snapshot yet; {last_run}",
                                "fix what the last run says, then `matrix-installer --backup --answers FILE`"))
        else:
            fresh = age <= 2 * period
            detail = (f"last snapshot {str(status.get('snapshot'))[:8]} is {human_period(age)} old "
                      f"({int(_number(status.get('files')))} files, {human_size(int(_number(status.get('bytes'))))}; "
                      f"backups every {human_period(period)}); {last_run}")
            checks.append(Check("backup-age", fresh, detail, None if fresh else
                                "older than two schedule periods: see why with `journalctl -u matrix-backup` on the host, "
                                "then `matrix-installer --backup --answers FILE`"))
    if restore_test is None:
        checks.append(Check("restore-test", True, "not run yet: the weekly restore test runs within a week of the setup "
                                                  "(sudo systemctl start matrix-restore-test runs it now)"))
    else:
        ran = now - _number(restore_test.get("at"))
        snapshot = str(restore_test.get("snapshot") or "")[:8]
        if not restore_test.get("ok"):
            checks.append(Check("restore-test", False, f"failed {human_period(ran)} ago: {restore_test.get('reason')}",
                                "see `journalctl -u matrix-restore-test` on the host; after fixing it, "
                                "`sudo systemctl start matrix-restore-test` tests again"))
        elif ran > RESTORE_TEST_MAX_AGE:
            checks.append(Check("restore-test", False, f"last passed {human_period(ran)} ago: the weekly test has not run since",
                                "check its timer: systemctl status matrix-restore-test.timer"))
        else:
            checks.append(Check("restore-test", True, f"passed {human_period(ran)} ago: snapshot {snapshot} restored into "
                                                      f"scratch space; {restore_test.get('details', '')}"))
    return checks


async def state_checks(ctx: StageContext) -> list[Check] | None:
    """For --check: the backup checks of a server this machine's state knows and backs up off the
    box, read over SSH with the host key pinned there; None when there is nothing to say."""
    from installer.answers import AnswersError, load_answers
    from installer.discovery import ANSWERS_FILE
    from installer.engine import StageError
    from installer.state import RunState, StateError

    server_name = ctx.answers.domain.server_name
    try:
        state = RunState.load(ctx.options.state_root, server_name)
    except StateError:
        return None
    if state.folder is None or not state.facts:
        ctx.log(f"no run of this machine's state knows {server_name}: its backups are not checked")
        return None
    try:
        answers = load_answers(state.folder / ANSWERS_FILE)
    except (AnswersError, OSError):
        return None
    if target_of(answers) == "none":
        ctx.log("this server's answers send no backups off the box: backup-age is not checked")
        return None
    shim = SimpleNamespace(answers=answers, facts=state.facts, log=ctx.log, dry_run=ctx.dry_run)
    from installer.host.connect import ssh_target

    try:
        target = ssh_target(shim)  # type: ignore[arg-type]
    except StageError as exc:
        return [Check("backup-age", False, f"not known: {exc}", exc.hint)]
    if ctx.dry_run:
        ctx.log(f"connect to {target.address} (host key pinned in the state) and read {STATUS_FILE}, {RESTORE_TEST_FILE}",
                "command")
        return []
    from installer.ssh import SshRemote

    remote = SshRemote(target, connect_timeout=10.0)
    try:
        await remote.connect_once()
        result = await remote.run(STATUS_COMMAND, log=lambda line, kind: None, sudo=True, check=False, timeout=60)
    except Exception as exc:  # noqa: BLE001 - any failure to ask is a check that could not pass
        from installer.shown import error_summary

        return [Check("backup-age", False, f"the server could not be asked over SSH ({error_summary(exc)})",
                      f"check that {target.address} is up and reachable, then run the check again")]
    finally:
        await remote.close()
    status, restore_test, now = parse_status_output(result.stdout)
    return backup_checks(status, restore_test, now)
