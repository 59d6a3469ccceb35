"""The Postgres component as the rest of the installer sees it: its answers, what it adds to a
deployment (compose, Synapse's config, backups, the plan), and the dry run, which shows the
service and the database block but never the password."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from installer.answers import Answers, AnswersError, parse_answers
from installer.components.homeserver import RegistrationPolicy
from installer.components.postgres import major
from installer.components.synapse.config import database_engine, edit_homeserver_config
from installer.deployment import Deployment
from installer.plan import plan_for

ROOT = Path(__file__).resolve().parents[2]
NAMES = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")


def answers_text(database: str = "") -> str:
    return f"""version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
[cloud]
provider = "existing"
[ssh]
host = "203.0.113.7"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"
{database}
"""


def test_postgres_is_the_default_and_its_section_is_checked_like_any_other() -> None:
    assert Answers().database.engine == "postgres" and Answers().database.image == "postgres:17-alpine"
    with pytest.raises(AnswersError) as caught:
        parse_answers(answers_text('[database]\nengine = "mysql"\nimage = "-v/host/x"\nmigrat = "yes"'), "a.toml")
    problems = "\n".join(caught.value.problems)
    assert 'a.toml:11: database.engine: must be one of "postgres", "sqlite"' in problems
    assert "database.image: must not start with \"-\"" in problems
    assert 'database.migrat: unknown key (did you mean "migrate"?)' in problems
    with pytest.raises(AnswersError, match="must pin a major version"):
        parse_answers(answers_text('[database]\nimage = "postgres:latest"'))
    assert major("postgres:17-alpine") == "17" and major("registry:5000/postgres:16.4") == "16" and major("postgres") == ""


def test_the_deployment_gains_a_service_on_the_compose_network_only() -> None:
    d = Deployment.build(NAMES)
    services = {s.name: s for s in d.services}
    postgres = services["postgres"].settings
    assert services["postgres"].image == "postgres:17-alpine"
    assert "ports" not in postgres  # never on a host port
    assert postgres["environment"]["POSTGRES_INITDB_ARGS"] == "--encoding=UTF8 --lc-collate=C --lc-ctype=C"
    assert postgres["volumes"] == ["./postgres:/var/lib/postgresql/data"] and postgres["env_file"] == ["postgres.env"]
    synapse = services["synapse"].settings
    assert synapse["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert synapse["env_file"] == ["postgres.env"]
    assert "PASSWORD" not in d.compose_file()
    # SQLite: Synapse alone, as before, with the warning said on Review and in the plan.
    sqlite = Deployment.build(NAMES.replace("database", engine="sqlite"))
    assert [s.name for s in sqlite.services] == ["synapse"] and "depends_on" not in sqlite.services[0].settings
    assert any("SQLite is for throwaway test servers" in w for w in sqlite.warnings())
    assert not Deployment.build(NAMES).warnings()


def test_synapse_gets_a_database_block_without_a_password() -> None:
    generated = ('server_name: "example.org"\ndatabase:\n  name: sqlite3\n  args:\n    database: /data/homeserver.db\n'
                 "listeners: []\n")
    settings = Deployment.build(NAMES).homeserver_settings()
    edit = edit_homeserver_config(generated, NAMES, settings, new_secret=lambda: "s3cret")
    assert database_engine(edit.text) == "postgres" and "database" in edit.changed
    assert "host: postgres" in edit.text and "user: synapse" in edit.text and "password" not in edit.text
    sqlite = edit_homeserver_config(generated, NAMES, [RegistrationPolicy("closed")], new_secret=lambda: "s3cret")
    assert database_engine(sqlite.text) == "sqlite" and "database" not in sqlite.changed


def test_the_plans_of_each_mode() -> None:
    install = [s.name for s in plan_for("install", NAMES)]
    assert install.index("postgres.config") < install.index("synapse.config") < install.index("services.start")
    assert install.index("services.start") < install.index("postgres.check")
    # Upgrade works on what is deployed: an SQLite server is offered the move; a Postgres one is
    # checked for an unchanged major version, and never moved again.
    old = [s.name for s in plan_for("upgrade", NAMES)]
    assert "database.migrate" in old and "postgres.version" not in old
    assert old.index("upgrade.backup") < old.index("database.migrate") < old.index("upgrade.images")
    new = [s.name for s in plan_for("upgrade", NAMES, {"homeserver.database": "postgres"})]
    assert "database.migrate" not in new and new.index("postgres.version") < new.index("upgrade.backup")
    kept = [s.name for s in plan_for("upgrade", NAMES.replace("database", engine="sqlite"))]
    assert "database.migrate" not in kept


def test_the_backup_of_a_postgres_deployment_is_a_dump_and_the_restore_loads_it() -> None:
    from installer.components.base import BackupDump, BackupFiles

    items = Deployment.build(NAMES).backup_items()
    dump = next(i for i in items if isinstance(i, BackupDump))
    assert dump.name == "postgres.dump" and "--exclude-table-data=e2e_one_time_keys_json" in dump.dump
    assert "pg_restore" in dump.restore
    files = [path for i in items if isinstance(i, BackupFiles) for path in i.paths]
    assert "postgres.env" in files and "postgres" not in files  # the live data folder is not archived: the dump is


def test_the_dry_run_shows_the_service_initdb_and_database_block_and_no_password(tmp_path: Path) -> None:
    path = tmp_path / "answers.toml"
    path.write_text(answers_text())
    done = subprocess.run([sys.executable, "-m", "installer", "--answers", str(path), "--dry-run",
                           "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "|   postgres:" in out and 'POSTGRES_INITDB_ARGS: "--encoding=UTF8 --lc-collate=C --lc-ctype=C"' in out
    block = next(line for line in out.splitlines() if "homeserver.yaml's database:" in line)
    database = json.loads(block.split("database: ", 1)[1])
    assert database["name"] == "psycopg2" and database["args"]["host"] == "postgres" and "password" not in database["args"]
    assert "write /opt/matrix/synapse/postgres.env" in out and "(its content is not shown: it holds secrets)" in out
    assert "POSTGRES_PASSWORD=" not in out and "PGPASSWORD=" not in out
    assert not (tmp_path / "state").exists()
    sqlite = tmp_path / "sqlite.toml"
    sqlite.write_text(answers_text('[database]\nengine = "sqlite"'))
    done = subprocess.run([sys.executable, "-m", "installer", "--answers", str(sqlite), "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "warning: SQLite is for throwaway test servers" in done.stdout and "postgres" not in done.stdout.split("Summary")[1]
