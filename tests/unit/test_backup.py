"""The backup component as the rest of the installer sees it: its answers and their checks, the
plans of each mode (a restore is an install with the data put back before Synapse first starts),
the scripts it renders from the deployment's one list of items, the flags, what its stages make of
the host's answers (progress, messages for each fault, the checks), and the dry run: every bucket
call and host command, never a secret."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest

from installer.answers import Answers, AnswersError, parse_answers
from installer.components.backup import BackupAccess, on_calendar, s3_endpoint, target_of
from installer.components.backup.check import backup_checks, parse_status_output
from installer.components.backup.stages import HINTS, Output, env_text, human_period, period_from, script_failed, units
from installer.components.base import BackupDump, BackupFiles, BackupSqlite, BackupTarget
from installer.deployment import Deployment
from installer.engine import Engine, Session, StageContext
from installer.events import StageFinished, StageLog, StageProgress, Status
from installer.options import RunOptions
from installer.plan import plan_for
from installer.remote import CommandResult
from installer.render import render_backup_scripts, render_restore_test
from installer.state import RunState
from tests.fixtures.cli import HOST_KEY, assert_refused_up_front, existing_server_answers, run

NAMES = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
S3 = {"target": "s3", "bucket": "lab-bucket", "s3_endpoint": "http://172.17.0.1:9000",
      "s3_access_key_env": "TEST_S3_KEY", "s3_secret_key_env": "TEST_S3_SECRET"}
ACCESS_KEY, SECRET_KEY = "AKIDTESTKEY123", "sEcReT/with+chars=0123456789"
PASSWORD = "the-repository-password-0123456789"


def existing(**backup) -> Answers:
    a = NAMES.replace("cloud", provider="existing").replace("ssh", host="203.0.113.7", host_key=HOST_KEY)
    return a.replace("backup", **backup) if backup else a


def answers_file(tmp_path: Path, backup: str) -> Path:
    path = existing_server_answers(tmp_path)
    path.write_text(path.read_text().split("[backup]")[0] + "[backup]\n" + backup + "\n")
    return path


S3_TOML = "\n".join(f'{k} = "{v}"' for k, v in S3.items())


# --- the answers ------------------------------------------------------------------------------

def test_backups_go_to_object_storage_on_oracle_cloud_and_nowhere_by_default_elsewhere() -> None:
    assert Answers().backup.target == "auto"
    assert target_of(NAMES) == "oci"
    assert target_of(existing()) == "none"
    assert target_of(existing(target="s3")) == "s3"
    b = Answers().backup
    assert (b.bucket, b.schedule, b.keep_daily, b.keep_weekly, b.keep_monthly) == ("matrix-backups", "daily", 7, 4, 6)
    assert b.password_env == "MATRIX_BACKUP_PASSWORD"
    assert not Deployment.build(existing()).has("backup") and Deployment.build(NAMES).has("backup")


def test_the_backup_section_is_checked_like_any_other() -> None:
    base = ('version = 1\n[domain]\nserver_name = "example.org"\nmatrix_host = "matrix.example.org"\n'
            '[cloud]\nprovider = "existing"\n[ssh]\nhost = "203.0.113.7"\n'
            f'host_key = "{HOST_KEY}"\n[backup]\n')
    assert parse_answers(base + S3_TOML).backup.s3_endpoint == "http://172.17.0.1:9000"
    with pytest.raises(AnswersError) as found:
        parse_answers(base + 'target = "s3"\nbucket = "Has Spaces"\nschedule = "daily; rm -rf /"\n'
                             's3_access_key_env = "$(id)"\nkeep_daily = -1\n')
    text = "\n".join(found.value.problems)
    assert "backup.bucket: must be a bucket name" in text
    assert "backup.schedule: must be a systemd OnCalendar expression" in text
    assert "backup.s3_access_key_env: must be an environment variable's name" in text
    assert "backup.keep_daily: must be a whole number from 0 to 1000" in text
    assert "backup.s3_endpoint: is required with target = \"s3\"" in text
    assert 'backup.s3_secret_key_env: is required with target = "s3": the name of the environment variable' in text
    with pytest.raises(AnswersError) as found:
        parse_answers(base + 'target = "oci"\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\n')
    assert "every snapshot would be forgotten" in found.value.problems[0]
    with pytest.raises(AnswersError) as found:
        parse_answers(base + S3_TOML + '\ns3_secret = "the key itself"\n')
    assert "backup.s3_secret: unknown key" in "\n".join(found.value.problems)  # values never go in the answers


@pytest.mark.parametrize("value, ok", [
    ("https://s3.eu-central-1.amazonaws.com", True), ("http://172.17.0.1:39000", True), ("http://[::1]:9000", True),
    ("https://host/path", False), ("ftp://host", False), ("https://a b", False), ("http://host:99999", False),
    ("https://x\n.example.org", False), ("https://bad_host.example.org", False),
])
def test_an_s3_endpoint_is_a_url_with_no_path(value: str, ok: bool) -> None:
    assert (s3_endpoint(value) is None) is ok


@pytest.mark.parametrize("value, ok", [
    ("daily", True), ("*-*-* 03:30:00", True), ("Mon..Fri 02:00", True), ("hourly", True),
    ("-daily", False), ("daily;reboot", False), ("daily\n[Service]", False), ("$(id)", False), ("", False),
])
def test_a_schedule_is_what_oncalendar_takes_and_nothing_that_breaks_a_unit_file(value: str, ok: bool) -> None:
    assert (on_calendar(value) is None) is ok


def test_credentials_come_from_variables_named_in_the_answers_checked_before_anything_runs(tmp_path: Path) -> None:
    answers = answers_file(tmp_path, S3_TOML)
    result = run("--answers", str(answers), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert_refused_up_front(result, "backup.s3_access_key_env", "TEST_S3_KEY", "TEST_S3_SECRET")
    assert not (tmp_path / "state").exists()
    result = run("--answers", str(answers), "--state-dir", str(tmp_path / "state"), cwd=tmp_path,
                 env={"TEST_S3_KEY": "has space", "TEST_S3_SECRET": SECRET_KEY})
    assert_refused_up_front(result, "backup.s3_access_key_env: the value of TEST_S3_KEY is not an S3 key")
    assert "has space" not in result.stderr


# --- the flags --------------------------------------------------------------------------------

@pytest.mark.parametrize("args, said", [
    (["--backup"], "--backup needs --answers FILE"),
    (["--restore"], "--restore needs --answers FILE"),
    (["--restore", "--upgrade", "--answers", "a.toml"], "--upgrade and --restore: choose one mode"),
    (["--backup", "--check", "example.org"], "--backup and --check: choose one mode"),
    (["--snapshot", "abcdef12", "--answers", "a.toml"], "--snapshot: only with --restore"),
    (["--restore", "--snapshot", "x;rm -rf /", "--answers", "a.toml"], "--snapshot x;rm -rf /: must be a snapshot ID"),
    (["--replace", "--answers", "a.toml"], "--replace: only with --restore"),
])
def test_the_new_flags_are_checked_before_anything_runs(tmp_path: Path, args: list[str], said: str) -> None:
    result = run(*args, "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert_refused_up_front(result, said)


def test_a_restore_needs_answers_that_send_backups_somewhere(tmp_path: Path) -> None:
    answers = existing_server_answers(tmp_path)  # target "auto" off Oracle Cloud: none
    result = run("--restore", "--answers", str(answers), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert_refused_up_front(result, "--restore takes the server back from its off-box backups")


# --- the plans --------------------------------------------------------------------------------

def names(mode: str, answers: Answers, facts: dict | None = None) -> list[str]:
    return [s.name for s in plan_for(mode, answers, facts or {"homeserver.database": "postgres"})]


def needs(mode: str, answers: Answers) -> dict[str, tuple[str, ...]]:
    return {s.name: s.needs for s in plan_for(mode, answers, {"homeserver.database": "postgres"})}


def upstream(graph: dict[str, tuple[str, ...]], name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[name])
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += graph[n]
    return seen


def test_an_install_sets_backups_up_and_takes_the_first_one_once_the_server_runs() -> None:
    plan = names("install", existing(**S3))
    for stage in ("backup.bucket", "backup.setup", "backup.unfinished", "backup.first"):
        assert stage in plan
    graph = needs("install", existing(**S3))
    assert {"backup.setup", "services.start"} <= upstream(graph, "backup.first")
    assert "backup.first" in upstream(graph, "federation.check")
    for later in ("synapse.config", "postgres.config", "services.start"):
        assert "backup.unfinished" in upstream(graph, later)  # a half-restored server never starts
    assert not [n for n in names("install", existing()) if n.startswith("backup.")]


def test_a_restore_is_the_install_with_the_data_put_back_before_synapse_first_starts() -> None:
    answers = existing(**S3)
    install, restore = names("install", answers), names("restore", answers)
    assert set(restore) == set(install) | {"backup.replace", "backup.restore"}
    graph = needs("restore", answers)
    for later in ("synapse.config", "postgres.config", "services.start", "synapse.admin", "backup.first", "federation.check"):
        assert "backup.restore" in upstream(graph, later), later
    assert {"backup.setup", "host.docker"} <= upstream(graph, "backup.restore")
    # Nothing on the host changes before the restore knows it may replace what is there.
    for change in ("host.firewall", "host.caddy", "host.docker", "dns.records", "backup.setup"):
        assert "backup.replace" in upstream(graph, change), change
    # On Oracle Cloud the normal install stages make the VM first.
    oci = names("restore", NAMES)
    assert oci.index("cloud.instance") < oci.index("host.ssh") < oci.index("backup.restore")


def test_a_backup_now_is_ssh_and_the_backup_alone() -> None:
    assert names("backup", existing(**S3)) == ["local.ssh_key", "host.ssh", "backup.now"]
    assert names("backup", existing()) == ["local.ssh_key", "host.ssh", "backup.now"]  # a local archive


def test_an_upgrade_reads_the_last_backup_beside_its_own_and_check_reads_it_beside_the_federation_test() -> None:
    graph = needs("upgrade", existing(**S3))
    assert {"backup.bucket", "backup.setup", "backup.age"} <= set(graph)
    for step in ("upgrade.preflight", "upgrade.backup", "upgrade.images"):  # a backup problem never blocks an upgrade
        assert not [n for n in upstream(graph, step) if n.startswith("backup.")], step
    assert "backup.age" in upstream(graph, "federation.check")
    assert names("check", NAMES) == ["backup.age", "federation.check"]


@pytest.mark.parametrize("endpoint, region", [
    ("https://s3.eu-central-1.amazonaws.com", "eu-central-1"), ("https://s3-us-west-2.amazonaws.com", "us-west-2"),
    ("https://s3.us-west-1.wasabisys.com", "us-west-1"), ("https://s3.fr-par.scw.cloud", "fr-par"),
    ("http://172.17.0.1:9000", ""), ("https://account.r2.cloudflarestorage.com", ""),
])
def test_requests_are_signed_for_the_region_the_endpoint_names(endpoint: str, region: str) -> None:
    from installer.components.backup.bucket import region_of

    assert region_of(endpoint) == region


# --- the scripts ------------------------------------------------------------------------------

def target() -> BackupTarget:
    return BackupTarget("/opt/matrix/restic/env", "/opt/matrix/restic/status.json", "example.org",
                        (("daily", 7), ("weekly", 4), ("monthly", 6)))


def bash_parses(tmp_path: Path, *scripts: str) -> None:
    for number, script in enumerate(scripts):
        path = tmp_path / f"s{number}.sh"
        path.write_text(script)
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_one_list_of_items_two_destinations_the_local_archive_and_the_snapshot(tmp_path: Path) -> None:
    d = Deployment.build(existing(**S3))
    items = d.backup_items()
    assert [type(i).__name__ for i in items] == ["BackupFiles", "BackupFiles", "BackupDump", "BackupFiles", "BackupTarget"]
    backup, restore = render_backup_scripts(items, keep=3)
    bash_parses(tmp_path, backup, restore)
    # The same consistent copy and files for both destinations.
    assert backup.count("pg_dump -Fc -U synapse -d synapse --exclude-table-data=e2e_one_time_keys_json") == 1
    assert "--offsite) mode=offsite" in backup and "env_file=${MATRIX_BACKUP_ENV:-/opt/matrix/restic/env}" in backup
    assert "rs forget --prune --host \"$snapshot_host\" --keep-daily 7 --keep-weekly 4 --keep-monthly 6" in backup
    assert "snapshot_host=example.org" in backup
    assert 'for path in docker-compose.yml data postgres.env turn.secret ; do' in backup
    assert "--time \"$copied_at\"" in backup  # the snapshot is dated when the database copy began
    assert "--snapshot) [ $# -ge 2 ] || usage; snapshot=$2; shift ;;" in restore
    assert "pg_restore -U synapse -d synapse --no-owner --exit-on-error" in restore
    # No target: the script is the upgrade's, without the off-box half.
    local, local_restore = render_backup_scripts(Deployment.build(existing()).backup_items(), keep=3)
    assert "--offsite)" not in local and "rs backup" not in local and "--snapshot)" not in local_restore
    bash_parses(tmp_path, local, local_restore)


def test_on_sqlite_the_live_files_are_left_out_of_the_snapshot_for_their_online_copies(tmp_path: Path) -> None:
    d = Deployment.build(existing(**S3).replace("database", engine="sqlite"))
    backup, restore = render_backup_scripts(d.backup_items(), keep=3)
    bash_parses(tmp_path, backup, restore)
    assert "--exclude \"$project/\"'data/*.db' \\" in backup  # absolute: the staged copy is not excluded too
    assert "container=synapse" in backup and "pg_dump" not in backup


def test_odd_names_are_quoted_everywhere(tmp_path: Path) -> None:
    odd = [BackupFiles(("a b",), exclude=("x y/*",), required=("a b",)), BackupSqlite("c", "d e"),
           BackupDump("dump one.bin", 'echo made > "$out"', restore='cat "$dump"', note="a test dump"), target()]
    backup, restore = render_backup_scripts(odd, keep=1)
    bash_parses(tmp_path, backup, restore)
    assert "for path in 'a b' ; do" in backup and "--exclude \"$project/\"'x y/*'" in backup
    assert "out=\"$snap/\"'dump one.bin'" in backup and "dump=\"$project/\"'dump one.bin'" in restore
    with pytest.raises(ValueError):
        render_backup_scripts([*odd, target()], keep=1)  # one place off the box


def test_the_restore_test_loads_the_dump_into_a_scratch_postgres_or_reads_the_sqlite_copy(tmp_path: Path) -> None:
    from installer.components.backup.stages import restore_test_text

    for answers in (existing(**S3), existing(**S3).replace("database", engine="sqlite")):
        session = Session(answers, RunState(None), RunOptions())
        text = restore_test_text(StageContext(session, plan_for("install", answers)[0]))
        bash_parses(tmp_path, text)
        assert "matrix-restore --snapshot latest --fetch --into \"$work\"" in text
        assert "signing key" in text and "/opt/matrix/restic/restore-test.json" in text
        if answers.database.engine == "postgres":
            assert "docker run -d --name \"$scratch\" --network none -e POSTGRES_HOST_AUTH_METHOD=trust" in text
            assert "POSTGRES_INITDB_ARGS='--encoding=UTF8 --lc-collate=C --lc-ctype=C' postgres:17-alpine" in text
            assert 'dump="$tree/"postgres.dump' in text
        else:
            assert "--entrypoint python3 matrixdotorg/synapse:latest" in text and "homeserver.db" in text


def test_the_env_file_quotes_every_value_and_the_units_run_the_scripts() -> None:
    found = BackupAccess("https://ns.compat.objectstorage.us-phoenix-1.oraclecloud.com", "b", "us-phoenix-1",
                         ACCESS_KEY, SECRET_KEY)
    text = env_text(found, "/opt/matrix/restic/password", 3600)
    assert "RESTIC_REPOSITORY=s3:https://ns.compat.objectstorage.us-phoenix-1.oraclecloud.com/b" in text
    assert f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}\n" in text and "MATRIX_BACKUP_PERIOD=3600" in text
    odd = BackupAccess("https://h", "b", "", "key with space", "it's")
    assert "AWS_ACCESS_KEY_ID='key with space'" in env_text(odd, "/p", 60)  # sourced by bash: every value quoted
    assert "AWS_SECRET_ACCESS_KEY='it'\"'\"'s'" in env_text(odd, "/p", 60)
    assert SECRET_KEY not in repr(found) and ACCESS_KEY not in repr(found)
    made = units("Mon..Fri 02:00")
    assert "OnCalendar=Mon..Fri 02:00\nPersistent=true" in made["matrix-backup.timer"]
    assert "ExecStart=/opt/matrix/bin/matrix-backup --offsite" in made["matrix-backup.service"]
    assert "OnCalendar=weekly" in made["matrix-restore-test.timer"]


def test_the_schedule_period_is_what_systemd_says() -> None:
    assert period_from("    Next elapse: Tue 2026-12-01 00:00:00 UTC\n   Iteration #2: Wed 2026-12-02 00:00:00 UTC\n") == 86400
    assert period_from("    Next elapse: Mon 2026-12-07 02:00:00 UTC\n   Iteration #2: Mon 2026-12-14 02:00:00 UTC\n") == 7 * 86400
    assert period_from("nothing") == 86400
    assert [human_period(s) for s in (5, 600, 86400, 3 * 86400, 7200)] == ["5 s", "10 min", "1 day", "3 days", "2 h"]


# --- what the host says, read ---------------------------------------------------------------

def test_restic_json_is_progress_and_the_scripts_error_line_is_the_message() -> None:
    progress, logs = [], []

    class Ctx:
        answers = Answers()

        def progress(self, text, fraction=None):
            progress.append((text, fraction))

        def log(self, line, kind="log"):
            logs.append((line, kind))

    out = Output(Ctx())  # type: ignore[arg-type]
    out('{"message_type":"status","percent_done":0.5,"total_files":30,"files_done":14,"total_bytes":90000000,"bytes_done":45000000}', "out")
    out('{"message_type":"summary","snapshot_id":"abc","total_files_processed":30}', "out")
    out('{"message_type":"status","percent_done":1,"total_files":15,"files_restored":15,"total_bytes":2048,"bytes_restored":2048}', "out")
    out("dump postgres.dump 290133", "out")
    out("error: the disk is full: ...", "err")
    assert progress == [("14 of 30 files, 42.9 MiB of 85.8 MiB", 0.5), ("30 of 30 files, 0 B of 0 B", 1.0),
                        ("15 of 15 files, 2.0 KiB of 2.0 KiB", 1)]
    assert out.summary["snapshot_id"] == "abc" and out.said("dump") == ["postgres.dump 290133"]
    assert out.error == "the disk is full: ..." and ("dump postgres.dump 290133", "out") in logs
    failed = script_failed(3, out, "the backup")
    assert str(failed) == "the disk is full: ..." and failed.hint == HINTS[3]
    assert set(HINTS) >= {2, 3, 4, 5, 20, 21, 22, 23, 24, 25, 26, 27, 28}


DAY = 86400


def status(**more) -> dict:
    return {"ok": True, "at": 1000 * DAY, "last_success": 1000 * DAY, "snapshot": "0123456789abcdef",
            "snapshot_time": 1000 * DAY, "files": 12, "bytes": 2048, "added": 100, "period": DAY, "error": "", **more}


def test_a_backup_older_than_two_schedule_periods_is_a_failed_check() -> None:
    now = 1000 * DAY
    young = backup_checks(status(), None, now + DAY)
    assert [(c.name, c.ok) for c in young] == [("backup-age", True), ("restore-test", True)]
    assert young[0].detail.startswith("last snapshot 01234567 is 1 day old (12 files, 2.0 KiB; backups every 1 day)")
    old = backup_checks(status(), None, now + 2 * DAY + 1)[0]
    assert not old.ok and "older than two schedule periods" in old.fix
    # A failed last run is said; the check fails only once the snapshot is too old.
    failed = backup_checks(status(ok=False, at=now + DAY, error="the disk is full"), None, now + DAY)[0]
    assert failed.ok and "failed: the disk is full" in failed.detail
    none = backup_checks(None, None, now)[0]
    assert not none.ok and none.detail == "no off-box backup has finished on this server yet"


def test_the_restore_test_check_says_why_it_failed_and_when_it_stopped_running() -> None:
    now = 1000 * DAY
    passed = {"ok": True, "at": now - DAY, "snapshot": "fedcba9876543210", "details": "users 2, rooms 1, events 30 restored"}
    assert backup_checks(status(), passed, now)[1].ok
    failed = backup_checks(status(), {**passed, "ok": False, "reason": "the latest snapshot cannot be restored: x"}, now)[1]
    assert not failed.ok and failed.detail == "failed 1 day ago: the latest snapshot cannot be restored: x"
    stale = backup_checks(status(), {**passed, "at": now - 16 * DAY}, now)[1]
    assert not stale.ok and "has not run since" in stale.detail


def test_the_status_files_as_the_host_prints_them() -> None:
    text = json.dumps(status()) + "\n\n--\n\n\n--\n86400000\n"
    found, restore_test, now = parse_status_output(text)
    assert found == status() and restore_test is None and now == 86400000
    assert parse_status_output("garbage") == (None, None, 0.0)


# --- the stages against a scripted host -------------------------------------------------------

class Host:
    """Answers the backup stages' commands as a host would; `statuses` sets a script's exit status."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.secret_files: set[str] = set()
        self.commands: list[str] = []
        self.statuses: dict[str, tuple[int, str]] = {}

    async def run(self, command, *, log, sudo=False, check=True, timeout=900, input=None, quiet=False, dry_output=""):
        self.commands.append(command)
        log(f"$ {command}", "command")
        for pattern, (status, said) in self.statuses.items():
            if pattern in command:
                for line in said.splitlines():
                    log(line, "err" if line.startswith("error:") else "out")
                return CommandResult(status, "", said)
        if command.startswith("env TZ=UTC systemd-analyze"):
            out = "    Next elapse: Tue 2026-12-01 00:00:00 UTC\n   Iteration #2: Wed 2026-12-02 00:00:00 UTC\n"
        elif command == "restic version":
            out = "restic 0.18.0 compiled with go1.24.4 on linux/amd64\n"
        elif command.endswith("--init"):
            out = "repository s3:http://172.17.0.1:9000/lab-bucket: made\n"
        elif command.endswith("--offsite"):
            out = ('{"message_type":"status","percent_done":0.5,"total_files":4,"files_done":2,"total_bytes":10,"bytes_done":5}\n'
                   "dump postgres.dump 1000\nsnapshot 0123456789abcdef 4 10 8 1\n")
        elif "status.json" in command:
            out = "\n--\n\n--\n100\n"
        else:
            out = ""
        for line in out.splitlines():
            log(line, "out")
        return CommandResult(0, out, "")

    async def probe(self, command, *, log, sudo=False):
        self.commands.append(command)
        return command.startswith("command -v restic") or command.startswith("test -d")

    async def read_file(self, path, *, log=None, sudo=True):
        return self.files.get(path)

    async def put_file(self, path, data, *, log, mode=0o644, owner="root:root", backup=True, secret=False):
        log(f"write {path}" + (" (its content is not shown)" if secret else ""), "file")
        if secret:
            self.secret_files.add(path)
        changed = self.files.get(path) != data
        self.files[path] = data
        return changed

    async def close(self):
        return None


def backup_run(host: Host, answers: Answers, names_: tuple[str, ...], *, facts: dict | None = None, mode: str = "install",
               env: dict | None = None, monkeypatch=None):
    state = RunState(None, {"facts": dict(facts or {})})
    events: list = []
    session = Session(answers, state, RunOptions(mode=mode), listeners=[events.append], remote=host)  # type: ignore[arg-type]
    stages = [s for s in plan_for(mode, answers, {"homeserver.database": "postgres"}) if s.name in names_]
    stages = [s.__class__(s.name, s.title, s.run, tuple(n for n in s.needs if n in names_), s.skippable, s.gives, s.takes)
              for s in stages]
    result = asyncio.run(Engine(stages, session).run())
    return result, events, session


def text_of(events: list) -> str:
    return "\n".join(getattr(e, "line", None) or getattr(e, "text", None) or f"{getattr(e, 'error', '')} {getattr(e, 'hint', '')}"
                     for e in events)


def test_setup_makes_the_password_shows_it_once_and_never_logs_it(monkeypatch) -> None:
    monkeypatch.setenv("TEST_S3_KEY", ACCESS_KEY)
    monkeypatch.setenv("TEST_S3_SECRET", SECRET_KEY)
    monkeypatch.delenv("MATRIX_BACKUP_PASSWORD", raising=False)
    host = Host()
    result, events, session = backup_run(host, existing(**S3), ("backup.bucket", "backup.setup", "backup.first"))
    assert result.ok, text_of(events)
    password = session.state.facts["backup.password"]
    assert len(password) >= 24
    assert [label for label, _ in result.shown_once] == ["Backup password for example.org (restic)"]
    shown = text_of(events)
    for secret in (password, SECRET_KEY, ACCESS_KEY):
        assert secret not in shown
    assert "WITHOUT IT THE BACKUPS CANNOT BE READ" in shown
    assert host.files["/opt/matrix/restic/password"] == (password + "\n").encode()
    assert {"/opt/matrix/restic/password", "/opt/matrix/restic/env", "/opt/matrix/restic/env.new",
            "/opt/matrix/restic/password.new"} <= host.secret_files
    assert SECRET_KEY.encode() in host.files["/opt/matrix/restic/env"]
    # The new settings are tried beside the ones in use before they replace them.
    init = next(c for c in host.commands if c.endswith("--init"))
    assert init == "env MATRIX_BACKUP_ENV=/opt/matrix/restic/env.new /opt/matrix/bin/matrix-backup --init"
    assert host.commands.index(init) < host.commands.index("rm -f /opt/matrix/restic/password.new /opt/matrix/restic/env.new")
    progress = [e.text for e in events if isinstance(e, StageProgress) and e.stage == "backup.first"]
    assert "2 of 4 files, 5 B of 10 B" in progress
    assert [c["name"] for c in session.checks] == ["backup-age", "restore-test"]


@pytest.mark.parametrize("status, said, words", [
    (20, "error: the bucket's endpoint http://172.17.0.1:9000 cannot be reached from this host: curl: (7) refused", "cannot be reached"),
    (21, "error: http://172.17.0.1:9000 refused the credentials for bucket lab-bucket (HTTP 403)", "refused the credentials"),
    (22, "error: there is no bucket lab-bucket at http://172.17.0.1:9000 (HTTP 404)", "no bucket"),
    (23, "error: the repository at s3:x does not open with this password", "does not open with this password"),
])
def test_each_repository_fault_is_said_and_the_settings_in_use_are_kept(monkeypatch, status: int, said: str, words: str) -> None:
    monkeypatch.setenv("TEST_S3_KEY", ACCESS_KEY)
    monkeypatch.setenv("TEST_S3_SECRET", SECRET_KEY)
    host = Host()
    host.files["/opt/matrix/restic/env"] = b"the settings in use\n"
    host.statuses["--init"] = (status, said)
    result, events, session = backup_run(host, existing(**S3), ("backup.bucket", "backup.setup"),
                                         facts={"backup.password": PASSWORD})
    finished = next(e for e in events if isinstance(e, StageFinished) and e.stage == "backup.setup")
    assert finished.status is Status.FAILED and words in finished.error
    assert finished.hint == HINTS[status].replace("{password_env}", "MATRIX_BACKUP_PASSWORD")
    assert host.files["/opt/matrix/restic/env"] == b"the settings in use\n"  # nothing lost
    assert "rm -f /opt/matrix/restic/password.new /opt/matrix/restic/env.new" in host.commands
    assert PASSWORD not in text_of(events)


def test_a_restore_never_makes_a_password_it_asks_for_the_one_the_backups_were_made_with(monkeypatch) -> None:
    monkeypatch.setenv("TEST_S3_KEY", ACCESS_KEY)
    monkeypatch.setenv("TEST_S3_SECRET", SECRET_KEY)
    monkeypatch.delenv("MATRIX_BACKUP_PASSWORD", raising=False)
    host = Host()
    result, events, _ = backup_run(host, existing(**S3), ("backup.bucket", "backup.setup"), mode="restore")
    finished = next(e for e in events if isinstance(e, StageFinished) and e.stage == "backup.setup")
    assert finished.status is Status.FAILED
    assert "the backups' password is not known here" in finished.error and "$MATRIX_BACKUP_PASSWORD" in finished.hint
    monkeypatch.setenv("MATRIX_BACKUP_PASSWORD", PASSWORD)
    host = Host()
    result, events, session = backup_run(host, existing(**S3), ("backup.bucket", "backup.setup"), mode="restore")
    assert result.ok, text_of(events)
    assert any(c.endswith("matrix-backup --probe") for c in host.commands)  # a restore never makes a repository
    assert session.state.facts["backup.password"] == PASSWORD and not result.shown_once


def test_a_plain_install_refuses_to_start_a_half_restored_server() -> None:
    host = Host()
    host.statuses["test -e /opt/matrix/.restore-in-progress"] = (0, "")

    async def probe(command, *, log, sudo=False):
        return command == "test -e /opt/matrix/.restore-in-progress"

    host.probe = probe  # type: ignore[method-assign]
    result, events, _ = backup_run(host, existing(**S3), ("backup.unfinished",))
    finished = next(e for e in events if isinstance(e, StageFinished) and e.stage == "backup.unfinished")
    assert finished.status is Status.FAILED and "must not start on it" in finished.error
    assert "--restore" in finished.hint


# --- the dry run ------------------------------------------------------------------------------

def test_the_dry_runs_show_every_host_command_and_no_secret(tmp_path: Path) -> None:
    answers = answers_file(tmp_path, S3_TOML)
    env = {"TEST_S3_KEY": ACCESS_KEY, "TEST_S3_SECRET": SECRET_KEY, "MATRIX_BACKUP_PASSWORD": PASSWORD}
    install = run("--answers", str(answers), "--dry-run", "--state-dir", str(tmp_path / "s"), cwd=tmp_path, env=env)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr
    out = install.stdout
    for expected in ("install restic curl ca-certificates", "env TZ=UTC systemd-analyze calendar --iterations=2 daily",
                     "write /opt/matrix/restic/env (owner root:root, mode 0600", "sudo systemctl enable --now matrix-backup.timer",
                     "sudo env MATRIX_BACKUP_ENV=/opt/matrix/restic/env.new /opt/matrix/bin/matrix-backup --init",
                     "sudo /opt/matrix/bin/matrix-backup --offsite", "write /etc/systemd/system/matrix-restore-test.timer"):
        assert expected in out, expected
    restore = run("--restore", "--snapshot", "0123abcd", "--answers", str(answers), "--dry-run", "--state-dir",
                  str(tmp_path / "s"), cwd=tmp_path, env=env)
    assert restore.returncode == 0, restore.stdout[-3000:] + restore.stderr
    for expected in ("/opt/matrix/bin/matrix-backup --probe", "sudo /opt/matrix/bin/matrix-restore --snapshot 0123abcd --fetch",
                     "sudo /opt/matrix/bin/matrix-restore --place", "write /opt/matrix/.restore-in-progress"):
        assert expected in restore.stdout, expected
    backup = run("--backup", "--answers", str(answers), "--dry-run", "--state-dir", str(tmp_path / "s"), cwd=tmp_path, env=env)
    assert backup.returncode == 0, backup.stdout[-3000:] + backup.stderr
    assert "sudo /opt/matrix/bin/matrix-backup --offsite" in backup.stdout
    for result in (install, restore, backup):
        for secret in (ACCESS_KEY, SECRET_KEY, PASSWORD):
            assert secret not in result.stdout + result.stderr
    assert not (tmp_path / "s").exists()
