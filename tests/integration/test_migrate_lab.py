"""An SQLite deployment moved to Postgres by upgrade mode, on the lab host, with the real command.

The server is installed on SQLite, as every server was before Postgres became the default; a
real client (matrix-nio) makes a user's room and messages on it. Then, with the answers and state
an older installer left (no [database] section but `migrate = "yes"`, no database in the state):

1. a move whose synapse_port_db is killed mid-way ends back on SQLite, running, exit 1;
2. the move itself: the same user, room and messages read back by the client, from Postgres;
   the SQLite file kept;
3. a rerun changes nothing.

What differs from a real server: the stand-in images (tests/lab/README.md), and Caddy's local CA.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from tests.lab import lab as _lab
from tests.lab.matrix_client import client, login, messages
from tests.lab.scenarios import Command, existing_server_answers, https_mappings, ready_host

pytestmark = pytest.mark.lab

SERVER_NAME = "example.test"
MATRIX_HOST = "matrix.example.test"
ALICE, ALICE_PASSWORD = "@alice:example.test", "alice-lab-password-1"
SENT = ["before the move: one", "before the move: two", "before the move: three"]


@pytest.fixture(scope="module")
def sqlite_server(lab_host_image, lab_session_key, synapse_image, postgres_image):
    with ready_host(lab_host_image, lab_session_key, synapse_image, postgres_image=postgres_image) as host:
        yield host


def stages(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["stages"]}


async def post_messages(host: _lab.LabHost, ca) -> str:
    made = client(MATRIX_HOST, host.https_port, ca, ALICE)
    try:
        await login(made, ALICE_PASSWORD)
        room = await made.room_create(name="the old server")
        for body in SENT:
            await made.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": body})
        return room.room_id
    finally:
        await made.close()


async def read_messages(host: _lab.LabHost, ca, room_id: str) -> list[str]:
    made = client(MATRIX_HOST, host.https_port, ca, ALICE)
    try:
        await login(made, ALICE_PASSWORD)
        return await messages(made, room_id)
    finally:
        await made.close()


def kill_the_port_once_it_runs(host: _lab.LabHost, seen: list[str]) -> threading.Thread:
    """What a crash mid-way looks like: synapse_port_db killed while it copies. (The pattern's
    [s] keeps it from matching the shell that runs pgrep itself.)"""
    pattern = "'[s]ynapse_port_db --sqlite-database'"

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if host.exec(f"pgrep -f {pattern}", timeout=30).returncode == 0:
                time.sleep(1.0)  # let it start copying
                if host.exec(f"pkill -KILL -f {pattern}", timeout=30).returncode == 0:
                    seen.append("killed")
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_an_sqlite_server_moves_to_postgres_with_its_users_rooms_and_messages(sqlite_server, lab_dns, tmp_path):
    host = sqlite_server
    answers = tmp_path / "answers.toml"
    answers.write_text(existing_server_answers(host, extra='[database]\nengine = "sqlite"'))
    state_dir = tmp_path / "state"
    command = Command(answers, state_dir, lab_dns, https_mappings(host, SERVER_NAME, MATRIX_HOST), {})
    first, report = command.run(tmp_path / "install.json")
    assert {stages(report)[n]["status"] for n in ("synapse.config", "services.start", "synapse.admin")} == {"done"}, \
        first.stdout[-3000:]
    assert "postgres.config" not in stages(report)
    assert "warning: SQLite is for throwaway test servers" in first.stdout
    assert host.exec("docker ps --format '{{.Names}}'").stdout.split() == ["synapse"]
    ca = tmp_path / "caddy-root.crt"
    ca.write_bytes(host.caddy_root_ca())

    host.exec(f"docker exec synapse register_new_matrix_user --user=alice --password={ALICE_PASSWORD} --no-admin "
              "-c /data/homeserver.yaml http://localhost:8008", check=True)
    room_id = asyncio.run(post_messages(host, ca))
    assert asyncio.run(read_messages(host, ca, room_id)) == SENT

    # What an older installer left: answers without [database] (migrate added now), a state that
    # never recorded the database.
    answers.write_text(existing_server_answers(host, extra='[database]\nmigrate = "yes"'))
    state_file = state_dir / SERVER_NAME / "state.json"
    state = json.loads(state_file.read_text())
    state["facts"].pop("homeserver.database")
    state_file.write_text(json.dumps(state))

    # 1. The port killed mid-way: back on SQLite, running, and the run says so with exit 1.
    seen: list[str] = []
    watcher = kill_the_port_once_it_runs(host, seen)
    broken, report = command.run(tmp_path / "interrupted.json", "--upgrade", "--ca-file", str(ca))
    watcher.join(5)
    assert seen == ["killed"], broken.stdout[-3000:]
    assert broken.returncode == 1, broken.stdout[-3000:]
    migrate = stages(report)["database.migrate"]
    assert migrate["status"] == "failed" and "back on SQLite, running" in migrate["error"], migrate
    assert "synapse_port_db stopped" in migrate["error"]
    config = host.exec("cat /opt/matrix/synapse/data/homeserver.yaml", check=True).stdout
    assert "sqlite3" in config and "psycopg2" not in config
    assert host.exec("curl -fsS http://127.0.0.1:8008/health").stdout == "OK"
    assert host.exec("docker ps --format '{{.Names}}'").stdout.split() == ["synapse"]
    assert host.exec("test -e /opt/matrix/synapse/postgres").returncode != 0  # the half-made copy went
    assert asyncio.run(read_messages(host, ca, room_id)) == SENT

    # 2. The move: Postgres holds the users, the room and the messages; the SQLite file stays.
    moved, report = command.run(tmp_path / "moved.json", "--upgrade", "--ca-file", str(ca))
    assert moved.returncode == 0, moved.stdout[-4000:]
    assert stages(report)["database.migrate"]["status"] == "done"
    assert report["federation"]["ok"] is True
    out = moved.stdout
    assert "copied " in out and " tables, " in out and "it was down for " in out
    users = host.exec("docker exec postgres psql -U synapse -d synapse -At -c 'SELECT name FROM users ORDER BY name'",
                      check=True).stdout.split()
    assert users == ["@admin:example.test", ALICE, "@matrix-selftest:example.test"]  # the daily self-test's account too
    assert host.exec("test -s /opt/matrix/synapse/data/homeserver.db").returncode == 0
    assert "psycopg2" in host.exec("cat /opt/matrix/synapse/data/homeserver.yaml", check=True).stdout
    assert asyncio.run(read_messages(host, ca, room_id)) == SENT
    assert sorted(host.exec("docker ps --format '{{.Names}}'").stdout.split()) == ["postgres", "synapse"]
    assert json.loads(state_file.read_text())["facts"]["homeserver.database"] == "postgres"

    # 3. A rerun changes nothing: the move is not planned again, every stage unchanged or skipped.
    again, report = command.run(tmp_path / "again.json", "--upgrade", "--ca-file", str(ca))
    assert again.returncode == 0, again.stdout[-3000:]
    assert "database.migrate" not in stages(report)
    assert {s["status"] for s in report["stages"]} <= {"unchanged", "skipped"}, report["stages"]
