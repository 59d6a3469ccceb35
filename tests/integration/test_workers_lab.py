"""Synapse workers on the lab (issue 18), with the real command, a real client (matrix-nio) and
the installer's own federation test. Two lab hosts for the whole module, on a private network of
their own (a VCN's subnet): the main host, and a worker host that joins later.

In order (each test starts where the last one left the hosts):
1. `preset = "auto"` on the main host alone (2 cores here: 2 generic workers, a federation
   sender, a media repository and a background worker): federation passes, the workers' own
   request logs show /sync, federation and media requests; a rerun is all unchanged;
2. the worker host joins (`hosts`): it runs its own generic workers, Caddy balances over all of
   them, Postgres/Redis/replication on the main host answer the worker host and no one else;
3. the worker host's workers stopped: the server keeps serving once Caddy's health checks have
   left them out; started again, they are back in;
4. an upgrade with workers: a version mix is refused before anything changes; then the upgrade
   stops the workers, upgrades the main process, starts the workers on the new version on both
   hosts, and federation passes; a rerun is all unchanged;
5. `preset = "none"`: workers, Redis, routes and the worker host's project gone; one process
   serves; a rerun is all unchanged.

The stand-ins (tests/lab/README.md): Synapse 1.163.1 then 1.163.2, Postgres 17, Redis (Debian's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time

import pytest

from tests.lab import lab as _lab
from tests.lab.matrix_client import client, login
from tests.lab.scenarios import NOT_APPLICABLE_ON_THE_LAB, Command, existing_server_answers, https_mappings, ready_host

pytestmark = pytest.mark.lab

SERVER_NAME = "example.test"
MATRIX_HOST = "matrix.example.test"
ADMIN, PASSWORD = "@admin:example.test", "workers-lab-admin-password"
OLD, NEW = "1.163.1", _lab.SYNAPSE_VERSION
SYNAPSE_TAG = "matrixdotorg/synapse:latest"
PROJECT = "/opt/matrix/synapse"


@pytest.fixture(scope="module")
def images(lab_docker):
    try:
        return {"old": _lab.build_synapse_image(version=OLD), "new": _lab.build_synapse_image(version=NEW)}
    except _lab.LabError as exc:
        pytest.fail(f"the stand-in Synapse images could not be built: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def hosts(lab_host_image, lab_session_key, images, postgres_image, redis_image):
    """(main, worker): both on one private network; the main host with every image the install
    deploys, the worker host with Docker and Synapse's image (what a pull would bring)."""
    network = _lab.LabNetwork.create()
    with contextlib.ExitStack() as stack:
        stack.callback(network.remove)
        main = stack.enter_context(ready_host(lab_host_image, lab_session_key, images["old"], private_network=network,
                                              postgres_image=postgres_image, redis_image=redis_image))
        worker = stack.enter_context(ready_host(lab_host_image, lab_session_key, images["old"], private_network=network))
        yield main, worker


@pytest.fixture(scope="module")
def run(hosts, tmp_path_factory):
    """The command against the main host, its state kept across the module's tests."""
    import socket
    import subprocess
    import shutil

    main, _ = hosts
    folder = tmp_path_factory.mktemp("workers")
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dns = subprocess.Popen([dnsmasq, "--no-daemon", "--no-resolv", "--no-hosts", f"--port={port}",
                            "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=",
                            "--local=/example.test/", "--address=/example.test/127.0.0.1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    answers = folder / "answers.toml"
    command = Command(answers, folder / "state", port, https_mappings(main, SERVER_NAME, MATRIX_HOST),
                      {"MATRIX_ADMIN_PASSWORD": PASSWORD})
    counter = iter(range(1000))

    def go(workers: str, *extra: str) -> tuple[object, dict]:
        answers.write_text(existing_server_answers(main, server_name=SERVER_NAME, matrix_host=MATRIX_HOST,
                                                   extra=f"[workers]\n{workers}\n"))
        ca = folder / "caddy-root.crt"
        more = ("--ca-file", str(ca)) if ca.exists() else ()
        done, report = command.run(folder / f"report-{next(counter)}.json", *more, *extra)
        if not ca.exists():
            with contextlib.suppress(_lab.LabError):
                ca.write_bytes(main.caddy_root_ca())
        return done, report

    go.folder = folder  # type: ignore[attr-defined]
    try:
        yield go
    finally:
        dns.terminate()
        dns.wait(10)


def statuses(report: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["stages"]}


def explain(done, report) -> str:
    failed = [s for s in report["stages"] if s["status"] == "failed"]
    return json.dumps(failed, indent=1)[-3000:] + "\n" + done.stdout[-6000:]


def containers(host: _lab.LabHost) -> list[str]:
    return sorted(host.exec("docker ps --format '{{.Names}}'", check=True).stdout.split())


def worker_log(host: _lab.LabHost, name: str) -> str:
    return host.exec(f"docker logs synapse-{name} 2>&1", check=True).stdout


async def client_session(host: _lab.LabHost, ca, *, syncs: int = 2, upload: bool = False) -> None:
    """What a user's client does: log in, sync (initial, then incremental), maybe upload a file."""
    import nio

    made = client(MATRIX_HOST, host.https_port, ca, ADMIN)
    try:
        await login(made, PASSWORD)
        for _ in range(syncs):
            answer = await made.sync(timeout=0)
            assert isinstance(answer, nio.SyncResponse), answer
        if upload:
            import io

            answer, _ = await made.upload(io.BytesIO(b"lab file " * 100), content_type="text/plain", filename="lab.txt",
                                          filesize=900)
            assert isinstance(answer, nio.UploadResponse), answer
    finally:
        await made.close()


def curl_json(host: _lab.LabHost, method: str, url: str, token: str = "", body: dict | None = None) -> dict:
    """A request from inside the host: through Caddy (https://MATRIX_HOST) or to the main process's loopback."""
    words = ["curl", "-sS", "-k", "--resolve", f"{MATRIX_HOST}:443:127.0.0.1", "-X", method]
    if token:
        words += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        words += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = host.exec([*words, url], check=True).stdout
    return json.loads(out or "{}")


def syncs_on_every_generic_worker(host: _lab.LabHost, workers: tuple[str, ...], most_users: int = 16) -> int:
    """Users of their own (made through the admin API on the main process's loopback), each syncing
    once through Caddy, until each generic worker's own log shows a /sync (Caddy sends a token to
    one worker by hashing it); returns how many users it took."""
    admin = curl_json(host, "POST", f"https://{MATRIX_HOST}/_matrix/client/v3/login",
                      body={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "admin"},
                            "password": PASSWORD})["access_token"]
    for number in range(1, most_users + 1):
        user = f"@sync{number}:{SERVER_NAME}"
        curl_json(host, "PUT", f"http://127.0.0.1:8008/_synapse/admin/v2/users/{user}", admin,
                  {"password": f"sync-user-password-{number}"})
        token = curl_json(host, "POST", f"http://127.0.0.1:8008/_synapse/admin/v1/users/{user}/login", admin, {})["access_token"]
        assert "next_batch" in curl_json(host, "GET", f"https://{MATRIX_HOST}/_matrix/client/v3/sync?timeout=0", token)
        if all(re.search(r"GET /_matrix/client/v3/sync", worker_log(host, name)) for name in workers):
            return number
    raise AssertionError(f"{most_users} users' syncs never reached every one of {workers}")


def federation_requests(host: _lab.LabHost, count: int) -> list[int]:
    """`count` requests to the federation version endpoint through Caddy, from inside the main host."""
    codes = []
    for _ in range(count):
        out = host.exec(f"curl -s -o /dev/null -w '%{{http_code}}' --resolve {MATRIX_HOST}:443:127.0.0.1 -k "
                        f"https://{MATRIX_HOST}/_matrix/federation/v1/version").stdout
        codes.append(int(out or 0))
    return codes


# --- 1. auto on one host ------------------------------------------------------------------------

def test_auto_on_one_host_federates_and_the_workers_serve(hosts, run):
    main, _ = hosts
    # The first run: everything is made; its federation test cannot trust Caddy's new local CA yet.
    done, report = run('preset = "auto"')
    assert {s for n, s in statuses(report).items() if n not in ("federation.check", *NOT_APPLICABLE_ON_THE_LAB)} \
        <= {"done", "unchanged"}, explain(done, report)
    assert {statuses(report)[n] for n in ("workers.plan", "workers.config", "workers.check")} == {"done"}
    names = containers(main)
    assert names == sorted(["synapse", "postgres", "redis", "synapse-generic1", "synapse-generic2", "synapse-media1",
                            "synapse-federation-sender1", "synapse-background1"]), names
    config = main.exec(f"cat {PROJECT}/data/homeserver.yaml", check=True).stdout
    for key in ("instance_map:", "federation_sender_instances:", "media_instance_running_background_jobs: media1",
                "run_background_tasks_on: background1", "enable_media_repo: false", "password_path:"):
        assert key in config, key
    caddyfile = main.exec("cat /etc/caddy/Caddyfile", check=True).stdout
    assert "path_regexp" in caddyfile and "health_uri" in caddyfile and '"127.0.0.1:8102"' in caddyfile

    # The rerun, trusting the lab's CA: nothing changes, and the federation test passes.
    again, report = run('preset = "auto"')
    assert again.returncode == 0, explain(again, report)
    assert report["federation"]["ok"] is True, json.dumps(report["federation"])[-3000:]
    assert {s for n, s in statuses(report).items() if n != "federation.check"} <= {"unchanged", "skipped"}, report["stages"]

    # The secrets the processes share never show: not in the output, the reports, the state or the log.
    secrets = [main.exec(f"cat {PROJECT}/data/workers/{name}", check=True).stdout.strip()
               for name in ("redis.password", "replication.secret")]
    assert all(len(secret) >= 32 for secret in secrets)
    assert secrets[0] in main.exec(f"cat {PROJECT}/redis.conf", check=True).stdout
    written = [done.stdout, again.stdout, *(p.read_text() for p in run.folder.rglob("*") if p.is_file()
                                            and p.suffix in (".json", ".log"))]
    assert not [secret for secret in secrets for text in written if secret in text]
    assert main.exec(f"stat -c '%a %u' {PROJECT}/redis.conf {PROJECT}/data/workers/redis.password", check=True
                     ).stdout.split() == ["600", "999", "600", "991"]

    # A client: its syncs go to a generic worker, its upload to the media worker.
    ca = run.folder / "caddy-root.crt"
    asyncio.run(client_session(main, ca, syncs=3, upload=True))
    assert federation_requests(main, 4) == [200] * 4
    logs = {name: worker_log(main, name) for name in ("generic1", "generic2", "media1")}
    generic = logs["generic1"] + logs["generic2"]
    assert re.search(r"GET /_matrix/client/v3/sync", generic), generic[-2000:]
    assert "/_matrix/federation/v1/version" in generic
    assert re.search(r"POST /_matrix/media/v3/upload", logs["media1"]), logs["media1"][-2000:]
    # Round robin: both generic workers answered federation requests.
    assert all("/_matrix/federation/v1/version" in logs[n] for n in ("generic1", "generic2"))
    # Each generic worker's own log shows /sync: users' tokens spread over them.
    syncs_on_every_generic_worker(main, ("generic1", "generic2"))
    # The main process served none of them.
    main_log = main.exec("docker logs synapse 2>&1", check=True).stdout
    assert "/_matrix/client/v3/sync" not in main_log and "/_matrix/media/v3/upload" not in main_log


# --- 2. a worker host joins ------------------------------------------------------------------------

def hosts_line(worker: _lab.LabHost) -> str:
    return f'preset = "auto"\nhosts = ["{worker.private_address} {worker.host_key}"]'


def reaches(host: _lab.LabHost | None, address: str, port: int) -> bool:
    """Whether a TCP connection to address:port opens from `host` (None: from the runner)."""
    probe = f"timeout 5 bash -c 'echo > /dev/tcp/{address}/{port}'"
    if host is None:
        import subprocess

        return subprocess.run(["bash", "-c", probe], capture_output=True).returncode == 0
    return host.exec(probe).returncode == 0


def test_a_worker_host_joins_and_caddy_balances_over_both_hosts(hosts, run):
    main, worker = hosts
    done, report = run(hosts_line(worker))
    assert done.returncode == 0, explain(done, report)
    assert report["federation"]["ok"] is True
    assert statuses(report)["workers.hosts"] == "done" and statuses(report)["workers.firewall"] == "done"
    assert containers(worker) == ["synapse-h1-generic1", "synapse-h1-generic2"]
    # Postgres, Redis and replication on the main host's private address: the worker host gets in,
    # the runner (on the same network, not a worker host) does not; the workers' ports likewise.
    for port in (5432, 6379, 9093):
        assert reaches(worker, main.private_address, port), port
        assert not reaches(None, main.private_address, port), port
    assert reaches(main, worker.private_address, 8101) and not reaches(None, worker.private_address, 8101)
    assert "--comment matrix-installer-workers" in main.exec("cat /etc/iptables/rules.v4", check=True).stdout
    # Caddy balances over the workers of both hosts: the worker host's answer federation requests too.
    assert federation_requests(main, 12) == [200] * 12
    remote = worker.exec("docker logs synapse-h1-generic1 2>&1; docker logs synapse-h1-generic2 2>&1", check=True).stdout
    assert "/_matrix/federation/v1/version" in remote, remote[-2000:]

    again, report = run(hosts_line(worker))
    assert again.returncode == 0, explain(again, report)
    assert {s for n, s in statuses(report).items() if n != "federation.check"} <= {"unchanged", "skipped"}, statuses(report)


# --- 3. the worker host's workers stop ------------------------------------------------------------

def caddy_gave_up_on(main: _lab.LabHost, address: str, since: str, timeout: float = 30) -> bool:
    """Whether every one of Caddy's balanced routes has seen its active health check fail for each
    upstream at `address` since `since`: each reverse_proxy checks its upstreams on its own clock,
    so one route's failure says nothing of another's."""
    caddyfile = main.exec("cat /etc/caddy/Caddyfile", check=True).stdout
    routes = {port: sum(1 for line in caddyfile.splitlines()
                        if line.strip().startswith("reverse_proxy") and f'"{address}:{port}"' in line)
              for port in ("8101", "8102")}
    assert all(routes.values()), routes
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = main.exec(f"journalctl -u caddy --since '{since}' --no-pager -o cat", check=True).stdout
        failed = [m for line in log.splitlines() if "health_checker" in line and "host is up" not in line
                  for m in re.findall(rf'"host":"{re.escape(address)}:(\d+)"', line)]
        if all(failed.count(port) >= count for port, count in routes.items()):
            return True
        time.sleep(1)
    return False


def test_stopping_the_worker_hosts_workers_leaves_the_server_serving(hosts, run):
    main, worker = hosts
    ca = run.folder / "caddy-root.crt"
    since = main.exec("date '+%Y-%m-%d %H:%M:%S'", check=True).stdout.strip()
    worker.exec(f"docker compose -f {PROJECT}/docker-compose.yml stop", check=True)
    assert caddy_gave_up_on(main, worker.private_address, since)
    # Served by the main host's workers alone: a client's login and syncs, federation requests.
    try:
        asyncio.run(client_session(main, ca, syncs=3))
        assert federation_requests(main, 12) == [200] * 12
    except AssertionError as exc:
        log = main.exec(f"journalctl -u caddy --since '{since}' --no-pager -o cat", check=True).stdout
        raise AssertionError(f"{exc}\nCaddy's log since the worker host's workers stopped:\n{log[-8000:]}") from None
    # Started again, the health checks take them back in.
    worker.exec(f"docker compose -f {PROJECT}/docker-compose.yml start", check=True)
    before = worker.exec("docker logs synapse-h1-generic1 2>&1 | grep -c federation/v1/version").stdout.strip()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        federation_requests(main, 4)
        now = worker.exec("docker logs synapse-h1-generic1 2>&1 | grep -c federation/v1/version").stdout.strip()
        if now != before:
            break
        time.sleep(2)
    else:
        raise AssertionError("the worker host's workers never got requests again")


# --- 4. an upgrade with workers ---------------------------------------------------------------------

def put_image(host: _lab.LabHost, runner_tag: str) -> None:
    """What a pull that found `runner_tag`'s version leaves on the host: the deployment's tag on it."""
    host.load_image(runner_tag, as_tag=SYNAPSE_TAG)


def test_an_upgrade_refuses_a_version_mix_then_upgrades_every_host_in_order(hosts, run, images):
    main, worker = hosts
    # A mix: the worker host's workers on the new version, the main process on the old one.
    put_image(worker, images["new"])
    worker.exec(f"docker compose -f {PROJECT}/docker-compose.yml up -d", check=True)
    refused, report = run(hosts_line(worker), "--upgrade")
    assert refused.returncode == 1
    preflight = next(s for s in report["stages"] if s["name"] == "workers.preflight")
    assert preflight["status"] == "failed" and f"runs {NEW}" in preflight["error"], preflight
    assert statuses(report)["upgrade.backup"] == "skipped" and statuses(report)["upgrade.images"] == "skipped"

    # Back to one version; then both hosts get the new image, as a pull would bring it.
    worker.exec(f"docker tag {images['old']} {SYNAPSE_TAG} && docker compose -f {PROJECT}/docker-compose.yml up -d",
                check=True)
    put_image(main, images["new"])
    worker.exec(f"docker tag {images['new']} {SYNAPSE_TAG}", check=True)
    done, report = run(hosts_line(worker), "--upgrade")
    assert done.returncode == 0, explain(done, report)
    assert report["federation"]["ok"] is True
    order = [s["name"] for s in report["stages"]]
    assert order.index("upgrade.backup") < order.index("workers.stop") < order.index("upgrade.images") \
        < order.index("workers.start")
    assert {statuses(report)[n] for n in ("upgrade.backup", "workers.stop", "upgrade.images", "workers.start")} == {"done"}
    assert f"all 7 workers run Synapse {NEW}, as the main process does" in done.stdout
    for host, names in ((main, ("generic1", "media1", "background1")), (worker, ("h1-generic1", "h1-generic2"))):
        for name in names:
            version = host.exec(f"docker exec synapse-{name} python3 -c 'import synapse; print(synapse.__version__)'",
                                check=True).stdout.strip()
            assert version == NEW, (name, version)
    # The workers started after the main process had migrated: none of them restarted.
    restarts = main.exec("docker inspect --format '{{.RestartCount}}' synapse-generic1 synapse-media1", check=True)
    assert restarts.stdout.split() == ["0", "0"]

    again, report = run(hosts_line(worker), "--upgrade")
    assert again.returncode == 0, explain(again, report)
    assert {s["status"] for s in report["stages"]} <= {"unchanged", "skipped"}, statuses(report)


# --- 5. back to one process ---------------------------------------------------------------------

def test_preset_none_takes_the_workers_away_cleanly(hosts, run):
    main, worker = hosts
    done, report = run('preset = "none"')
    assert done.returncode == 0, explain(done, report)
    assert report["federation"]["ok"] is True
    assert statuses(report)["workers.remove"] == "done"
    assert containers(main) == ["postgres", "synapse"]
    assert containers(worker) == [] and worker.exec(f"test -e {PROJECT}").returncode != 0
    config = main.exec(f"cat {PROJECT}/data/homeserver.yaml", check=True).stdout
    for key in ("redis:", "instance_map:", "enable_media_repo", "worker_replication_secret_path", "replication"):
        assert key not in config, key
    assert "path_regexp" not in main.exec("cat /etc/caddy/Caddyfile", check=True).stdout
    assert main.exec(f"test -e {PROJECT}/data/workers || test -e {PROJECT}/redis.conf").returncode != 0
    for host in (main, worker):
        assert "matrix-installer-workers" not in host.exec("iptables -S DOCKER-USER", check=True).stdout
    assert "5432" not in main.exec("docker port postgres").stdout
    # The one process serves what the workers served, media included (the files stayed on its disk).
    asyncio.run(client_session(main, run.folder / "caddy-root.crt", syncs=2, upload=True))

    again, report = run('preset = "none"')
    assert again.returncode == 0, explain(again, report)
    assert not any(n.startswith("workers.") for n in statuses(report))
    assert {s for n, s in statuses(report).items() if n != "federation.check"} <= {"unchanged", "skipped"}, statuses(report)
