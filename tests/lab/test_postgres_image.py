"""The lab's stand-in for `postgres:17-alpine` keeps the official image's contract, and the
Synapse stand-in runs on it (psycopg2) and ports an SQLite database into it (synapse_port_db).

What differs from the real images, for every test here (see tests/lab/README.md):
- Postgres is Debian trixie's postgresql-17 (glibc, bash, perl) instead of PostgreSQL built on
  Alpine (musl, busybox); the entrypoint is the lab's own. Same uid/gid 70, PGDATA, variables,
  pg_hba rules, STOPSIGNAL SIGINT and CMD.
- Synapse's psycopg2 is the psycopg2-binary wheel (its own libpq) instead of psycopg2 compiled
  against Debian's libpq5.
The first tests run in the runner's Docker (an image is an image there); the last module part
runs the two under compose inside a lab host, where the installer runs them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml

from . import lab as _lab
from .scenarios import ready_host

pytestmark = pytest.mark.lab

INITDB_ARGS = "--encoding=UTF8 --lc-collate=C --lc-ctype=C"


# --- helpers (the runner's Docker) -----------------------------------------------------------

def _start(image: str, data: Path, env: dict[str, str], *command: str) -> str:
    name = f"lab-postgres-{uuid.uuid4().hex[:8]}"
    args = ["run", "-d", "--name", name, "--label", f"{_lab.LABEL}.pid={os.getpid()}",
            "-v", f"{data}:/var/lib/postgresql/data"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    _lab.docker(*args, image, *command)
    return name


def _logs(name: str) -> str:
    p = _lab.docker("logs", name, check=False)
    return p.stdout + p.stderr


def _wait_serving(name: str, timeout: float = 90) -> None:
    """Until the server answers on TCP: the set-up server during initialization listens on the
    socket only, so this is the real server (pg_isready on the socket may answer earlier)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _lab.docker("exec", name, "pg_isready", "-h", "127.0.0.1", "-q", check=False).returncode == 0:
            return
        if _lab.docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip() != "true":
            raise AssertionError(f"postgres stopped:\n{_logs(name)}")
        time.sleep(0.3)
    raise AssertionError(f"postgres did not answer within {timeout:.0f} s:\n{_logs(name)}")


def _sql(name: str, query: str, *, user: str = "synapse", db: str = "synapse", check: bool = True):
    p = _lab.docker("exec", name, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", user,
                    "-d", db, "-c", query, check=False)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout.strip()
    return p


def _remove(name: str) -> None:
    _lab.docker("rm", "-f", "-v", name, check=False)


def _config(image: str) -> dict:
    return json.loads(_lab.docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)


# --- the image ---------------------------------------------------------------------------------

def test_postgres_stand_in_has_the_official_image_settings_and_tools(postgres_image):
    """Same ENTRYPOINT/CMD/STOPSIGNAL/VOLUME/port and variables as postgres:17-alpine, and the
    tools the installer uses. Differs: Debian's binaries (`postgres --version` says Debian)."""
    cfg = _config(postgres_image)
    assert cfg["Entrypoint"] == ["docker-entrypoint.sh"] and cfg["Cmd"] == ["postgres"]
    assert cfg["StopSignal"] == "SIGINT"  # fast shutdown on `docker stop`
    assert list(cfg["Volumes"]) == ["/var/lib/postgresql/data"]
    assert list(cfg["ExposedPorts"]) == ["5432/tcp"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PGDATA"] == "/var/lib/postgresql/data" and env["PG_MAJOR"] == "17"
    version = cfg["Labels"]["org.opencontainers.image.version"]
    assert re.fullmatch(r"17\.\d+", version) and env["PG_VERSION"] == version
    assert _lab.label(postgres_image, "org.opencontainers.image.version") == version

    # `postgres --version` goes straight to postgres, as in the real entrypoint.
    p = _lab.docker("run", "--rm", postgres_image, "postgres", "--version")
    assert p.stdout.startswith(f"postgres (PostgreSQL) {version}"), p.stdout
    # Any other command runs as given, with the tools on PATH.
    p = _lab.docker("run", "--rm", postgres_image, "sh", "-c",
                    "id postgres; for t in psql pg_dump pg_restore pg_isready; do $t --version; done")
    lines = p.stdout.splitlines()
    assert lines[0].startswith("uid=70(postgres) gid=70(postgres)"), lines
    for tool, line in zip(("psql", "pg_dump", "pg_restore", "pg_isready"), lines[1:]):
        assert line.startswith(f"{tool} (PostgreSQL) 17."), line


def test_missing_password_refuses_to_start_and_initializes_nothing(postgres_image, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    p = _lab.docker("run", "--rm", "-v", f"{data}:/var/lib/postgresql/data", postgres_image,
                    check=False, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Database is uninitialized and superuser password is not specified" in p.stderr
    assert '"-e POSTGRES_PASSWORD=password"' in p.stderr and "POSTGRES_HOST_AUTH_METHOD=trust" in p.stderr
    assert not (data / "PG_VERSION").exists()

    # POSTGRES_HOST_AUTH_METHOD=trust starts without one, and says so in pg_hba.conf.
    name = _start(postgres_image, data, {"POSTGRES_HOST_AUTH_METHOD": "trust"})
    try:
        _wait_serving(name)
        assert "host all all all trust" in (data / "pg_hba.conf").read_text()
        assert _sql(name, "select current_user", user="postgres", db="postgres") == "postgres"
    finally:
        _remove(name)


@pytest.fixture(scope="module")
def synapse_db(postgres_image, tmp_path_factory):
    """A server made as the installer will make Synapse's: user synapse, a password, Synapse's
    initdb arguments, the data in a host folder. Plain `docker run IMAGE` (no command)."""
    data = tmp_path_factory.mktemp("pg") / "data"
    data.mkdir()
    password = secrets.token_urlsafe(18)
    env = {"POSTGRES_USER": "synapse", "POSTGRES_PASSWORD": password,
           "POSTGRES_INITDB_ARGS": INITDB_ARGS}
    name = _start(postgres_image, data, env)
    try:
        _wait_serving(name)
        yield {"name": name, "data": data, "password": password}
    finally:
        _remove(name)


def test_initdb_args_give_a_utf8_database_with_c_collation(synapse_db):
    name = synapse_db["name"]
    # The installer's healthcheck, over the socket, as in the real image.
    p = _lab.docker("exec", name, "pg_isready", "-U", "synapse", "-d", "synapse", check=False)
    assert p.returncode == 0 and "accepting connections" in p.stdout, p.stdout + p.stderr
    # POSTGRES_DB defaults to the user.
    row = _sql(name, "select pg_encoding_to_char(encoding), datcollate, datctype "
                     "from pg_database where datname = 'synapse'")
    assert row == "UTF8|C|C"
    assert _sql(name, "select rolsuper from pg_roles where rolname = 'synapse'") == "t"
    assert _sql(name, "select count(*) from pg_roles where rolname = 'postgres'") == "0"
    assert "PostgreSQL init process complete; ready for start up." in _logs(name)


def test_data_folder_is_owned_by_uid_70_as_with_the_alpine_image(synapse_db):
    data: Path = synapse_db["data"]
    st = data.stat()
    # The entrypoint gives the folder to the postgres user (owner only, as the official one);
    # what initdb made inside is 70:70.
    assert st.st_uid == 70 and oct(st.st_mode & 0o777) == "0o700"
    version = data / "PG_VERSION"
    assert version.read_text().strip() == "17"
    assert (version.stat().st_uid, version.stat().st_gid) == (70, 70)
    assert _sql(synapse_db["name"], "show data_directory") == "/var/lib/postgresql/data"


def test_network_clients_need_the_password_scram(synapse_db, postgres_image):
    """Listens on all addresses on 5432; pg_hba lets network clients in with scram-sha-256,
    as the real image configures it (the socket and loopback stay trust, initdb's default)."""
    name = synapse_db["name"]
    assert _sql(name, "show listen_addresses") == "*"
    assert _sql(name, "show port") == "5432"
    assert _sql(name, "show password_encryption") == "scram-sha-256"
    assert _sql(name, "select left(rolpassword, 14) from pg_authid where rolname = 'synapse'") == "SCRAM-SHA-256$"
    hba = (synapse_db["data"] / "pg_hba.conf").read_text()
    assert re.search(r"(?m)^host all all all scram-sha-256$", hba)

    ip = _lab.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()
    query = ["psql", "-X", "-At", "-h", ip, "-U", "synapse", "-d", "synapse", "-c", "select 'in'"]
    ok = _lab.docker("run", "--rm", "-e", f"PGPASSWORD={synapse_db['password']}",
                     "--entrypoint", "", postgres_image, *query, check=False)
    assert ok.returncode == 0 and ok.stdout.strip() == "in", ok.stdout + ok.stderr
    wrong = _lab.docker("run", "--rm", "-e", "PGPASSWORD=wrong", "--entrypoint", "", postgres_image,
                        *query, check=False)
    assert wrong.returncode != 0 and 'password authentication failed for user "synapse"' in wrong.stderr


def test_docker_stop_is_clean_and_a_second_start_reuses_the_data(synapse_db, postgres_image):
    """`docker stop` (SIGINT: fast shutdown) ends even with a client connected, without
    recovery at the next start; that start, with other settings and an explicit `postgres`
    command, skips initialization and the settings have no effect, as in the real image."""
    name, data = synapse_db["name"], synapse_db["data"]
    _lab.docker("exec", "-d", name, "psql", "-U", "synapse", "-d", "synapse", "-c", "select pg_sleep(60)")
    time.sleep(1)
    t = time.monotonic()
    _lab.docker("stop", name, timeout=60)
    took = time.monotonic() - t
    logs = _logs(name)
    assert took < 8, f"docker stop took {took:.1f} s:\n{logs}"
    assert "received fast shutdown request" in logs and "database system is shut down" in logs
    assert _lab.docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    _remove(name)

    again = _start(postgres_image, data, {
        "POSTGRES_USER": "other", "POSTGRES_PASSWORD": "other-password", "POSTGRES_DB": "otherdb",
        "POSTGRES_INITDB_ARGS": "--encoding=SQL_ASCII --locale=en_US.utf8",
    }, "postgres")
    synapse_db["name"] = again
    _wait_serving(again)
    logs = _logs(again)
    assert "Skipping initialization" in logs and "init process complete" not in logs
    assert "not properly shut down" not in logs and "automatic recovery" not in logs
    assert _sql(again, "select pg_encoding_to_char(encoding), datcollate from pg_database "
                       "where datname = 'synapse'") == "UTF8|C"
    assert _sql(again, "select count(*) from pg_database where datname = 'otherdb'") == "0"
    assert _sql(again, "select count(*) from pg_roles where rolname = 'other'") == "0"


# --- the Synapse stand-in's Postgres and Redis parts -------------------------------------------

def test_synapse_stand_in_has_psycopg2_redis_and_synapse_port_db(synapse_image):
    """Differs: psycopg2 comes from the psycopg2-binary wheel (the real image compiles psycopg2)."""
    p = _lab.docker("run", "--rm", "--entrypoint", "python3", synapse_image, "-c",
                    "import psycopg2, txredisapi, hiredis; print(psycopg2.__version__)")
    assert p.stdout.startswith("2."), p.stdout + p.stderr
    p = _lab.docker("run", "--rm", "--entrypoint", "synapse_port_db", synapse_image, "--help", check=False)
    assert p.returncode == 0 and "--postgres-config" in p.stdout, p.stdout + p.stderr
    # As in the real image, /start.py runs only its modes: other tools need --entrypoint.
    p = _lab.docker("run", "--rm", synapse_image, "synapse_port_db", check=False)
    assert p.returncode == 2 and "Unknown execution mode 'synapse_port_db'" in p.stderr


# --- both under compose in a lab host, as the installer will run them ----------------------------

COMPOSE = """\
services:
  postgres:
    image: postgres:17-alpine
    restart: unless-stopped
    env_file: [postgres.env]
    environment:
      POSTGRES_USER: synapse
      POSTGRES_DB: synapse
      POSTGRES_INITDB_ARGS: "--encoding=UTF8 --lc-collate=C --lc-ctype=C"
    volumes: ["./postgres:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "synapse", "-d", "synapse"]
      interval: 2s
      timeout: 5s
      retries: 30
  synapse:
    image: matrixdotorg/synapse:latest
    restart: unless-stopped
    env_file: [synapse-db.env]
    volumes: ["./data:/data"]
    ports: ["127.0.0.1:8008:8008"]
    depends_on:
      postgres:
        condition: service_healthy
"""


def _sh(host: _lab.LabHost, script: str, *, timeout: float = 600, input: str | None = None) -> str:
    p = host.exec(textwrap.dedent(script), timeout=timeout, input=input)
    assert p.returncode == 0, f"{script}\n{p.stdout}{p.stderr}"
    return p.stdout


def _wait_health(host: _lab.LabHost, timeout: float = 180) -> None:
    _sh(host, f"""\
        for i in $(seq {int(timeout)}); do
            [ "$(curl -fsS http://127.0.0.1:8008/health 2>/dev/null)" = OK ] && exit 0; sleep 1
        done
        docker compose -f /opt/matrix/compose.yaml logs --tail 40; exit 1""", timeout=timeout + 30)


def _client(host: _lab.LabHost, method: str, path: str, body: dict | None = None, token: str = "") -> dict:
    auth = f"-H 'Authorization: Bearer {token}'" if token else ""
    data = f"--data-binary {shlex.quote(json.dumps(body))}" if body is not None else ""
    out = _sh(host, f"curl -fsS -X {method} {auth} -H 'Content-Type: application/json' {data} "
                    f"http://127.0.0.1:8008{path}")
    return json.loads(out)


@pytest.fixture(scope="module")
def pg_host(lab_host_image, lab_session_key, synapse_image, postgres_image):
    """A lab host with Docker, `matrixdotorg/synapse:latest` and `postgres:17-alpine` loaded
    (the stand-ins: no registry here), and the compose project above, Synapse still on SQLite."""
    with ready_host(lab_host_image, lab_session_key, synapse_image, postgres_image=postgres_image) as host:
        password = secrets.token_urlsafe(18)
        # The password only in root-only env files, never in homeserver.yaml.
        _sh(host, f"""\
            set -e
            mkdir -p /opt/matrix/data && cd /opt/matrix
            cat > compose.yaml
            umask 077
            printf 'POSTGRES_PASSWORD=%s\\n' '{password}' > postgres.env
            printf 'PGPASSWORD=%s\\n' '{password}' > synapse-db.env
            docker run --rm -e SYNAPSE_SERVER_NAME=example.test -e SYNAPSE_REPORT_STATS=no \\
                -v /opt/matrix/data:/data matrixdotorg/synapse:latest generate
            # Test speed only: Synapse's background updates (which synapse_port_db needs
            # finished, and runs again on Postgres) without their pauses: ~1 s instead of ~60 s.
            printf 'background_updates:\\n  sleep_enabled: false\\n  sleep_duration_ms: 5\\n' \\
                >> data/homeserver.yaml
            docker compose up -d --wait postgres""", input=COMPOSE, timeout=300)
        yield {"host": host, "password": password}


@pytest.fixture(scope="module")
def sqlite_server(pg_host):
    """Synapse on SQLite first, with a user, a room and a message, then stopped."""
    host = pg_host["host"]
    _sh(host, "cd /opt/matrix && docker compose up -d synapse")
    _wait_health(host)
    _sh(host, "cd /opt/matrix && docker compose exec -T synapse register_new_matrix_user "
              "-c /data/homeserver.yaml -u alice -p wonderland --admin http://localhost:8008")
    token = _client(host, "POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "wonderland"})["access_token"]
    room = _client(host, "POST", "/_matrix/client/v3/createRoom", {"name": "before the move"}, token)["room_id"]
    _client(host, "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/txn1",
            {"msgtype": "m.text", "body": "written on sqlite"}, token)
    # synapse_port_db refuses a database with background updates still pending (a new one has
    # some for a while): wait for Synapse to finish them, as whoever ports must.
    _sh(host, """\
        cd /opt/matrix
        for i in $(seq 120); do
            n=$(docker compose exec -T synapse python3 -c 'import sqlite3; print(sqlite3.connect("/data/homeserver.db").execute("select count(*) from background_updates").fetchone()[0])')
            [ "$n" = 0 ] && exit 0; sleep 1
        done
        echo "background updates still pending: $n"; exit 1""", timeout=200)
    _sh(host, "cd /opt/matrix && docker compose stop synapse")
    return {"room": room}


def test_postgres_runs_healthy_under_compose_in_a_lab_host(pg_host):
    host = pg_host["host"]
    state = _sh(host, "docker inspect -f '{{.State.Health.Status}} {{.Config.Image}}' "
                      "$(docker compose -f /opt/matrix/compose.yaml ps -q postgres)").split()
    assert state == ["healthy", "postgres:17-alpine"]
    row = _sh(host, "cd /opt/matrix && docker compose exec -T postgres psql -X -At -U synapse -d synapse "
                    "-c \"select pg_encoding_to_char(encoding), datcollate, datctype from pg_database "
                    "where datname = 'synapse'\"").strip()
    assert row == "UTF8|C|C"
    owner = _sh(host, "stat -c '%u:%g' /opt/matrix/postgres/PG_VERSION").strip()
    assert owner == "70:70"
    # Not published on the host: only the compose network reaches it.
    assert host.exec("curl -s --max-time 2 telnet://127.0.0.1:5432").returncode != 0


def test_synapse_port_db_moves_sqlite_into_postgres_and_synapse_runs_on_it(pg_host, sqlite_server):
    host = pg_host["host"]
    cfg = yaml.safe_load(_sh(host, "cat /opt/matrix/data/homeserver.yaml"))
    assert cfg["database"]["name"] == "sqlite3"
    # Synapse's database block for Postgres: no password (libpq reads PGPASSWORD).
    cfg["database"] = {"name": "psycopg2", "args": {
        "user": "synapse", "dbname": "synapse", "host": "postgres", "port": 5432,
        "cp_min": 5, "cp_max": 10}}
    _sh(host, "cat > /opt/matrix/data/homeserver-postgres.yaml", input=yaml.safe_dump(cfg))

    # Synapse's own tool, in the Synapse image (its /start.py runs no other commands).
    ported = _sh(host, "cd /opt/matrix && docker compose run --rm -T --no-deps "
                       "--entrypoint synapse_port_db synapse --sqlite-database /data/homeserver.db "
                       "--postgres-config /data/homeserver-postgres.yaml 2>&1", timeout=900)
    assert "Copying to postgres..." in ported and "users: 100% (1/1)" in ported, ported[-3000:]

    _sh(host, "cd /opt/matrix/data && cp homeserver.yaml homeserver-sqlite.yaml && "
              "cp homeserver-postgres.yaml homeserver.yaml && chown 991:991 homeserver.yaml && "
              "cd /opt/matrix && docker compose up -d synapse")
    _wait_health(host)
    assert pg_host["password"] not in _sh(host, "cat /opt/matrix/data/homeserver.yaml")
    assert _sh(host, "test -s /opt/matrix/data/homeserver.db && echo kept").strip() == "kept"
    # Seen from inside the Postgres container: the admin's row, on a C-collated database.
    users = _sh(host, "cd /opt/matrix && docker compose exec -T postgres psql -X -At -U synapse "
                      "-d synapse -c 'select name, admin from users order by name'").split()
    assert users == ["@alice:example.test|1"]
    # Synapse serves the ported data: alice logs in and reads the message written on SQLite.
    token = _client(host, "POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "wonderland"})["access_token"]
    room = sqlite_server["room"]
    messages = _client(host, "GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20", token=token)
    bodies = [e["content"].get("body") for e in messages["chunk"] if e["type"] == "m.room.message"]
    assert bodies == ["written on sqlite"]
    # Synapse is connected over the compose network, so with the password from PGPASSWORD.
    clients = _sh(host, "cd /opt/matrix && docker compose exec -T postgres psql -X -At -U synapse "
                        "-d synapse -c \"select count(*) from pg_stat_activity where usename = 'synapse' "
                        "and client_addr is not null\"").strip()
    assert int(clients) >= 1
