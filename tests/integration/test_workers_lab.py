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
from tests.lab.scenarios import Command, existing_server_answers, https_mappings, ready_host

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
        main = stack.enter_context(ready_host(lab_host_image, lab_session_key, images["old"], network=network,
                                              postgres_image=postgres_image, redis_image=redis_image))
        worker = stack.enter_context(ready_host(lab_host_image, lab_session_key, images["old"], network=network))
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
    assert {s for n, s in statuses(report).items() if n != "federation.check"} <= {"done", "unchanged"}, explain(done, report)
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
    # The main process served none of them.
    main_log = main.exec("docker logs synapse 2>&1", check=True).stdout
    assert "/_matrix/client/v3/sync" not in main_log and "/_matrix/media/v3/upload" not in main_log
