"""A deployment sized for a small box, on the lab: one lab host the size of a 2 GiB, 2-core server
(as its /proc/meminfo and CPUs say), installed by the real command, shared by the module.

- what the sizing gave it: Synapse's container limited to 1 GiB, jemalloc preloaded and
  PYTHONMALLOC=malloc in the running Synapse, the sized keys in homeserver.yaml with their comments,
  Postgres's settings;
- Synapse survives the benchmark's load (bench/server.py's) within that limit, never killed;
- joining an over-complex remote room is refused with the config's message, seen by a real
  client (matrix-nio), before anything of the room is fetched;
- the nightly state compression runs (the timer's service, started now), and `--check`'s server
  health section reads the host over SSH from this machine's state.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import nio
import pytest

from installer.sizing import complexity_error, sizing_for
from installer.host.connect import HostSize
from tests.lab import load as L
from tests.lab import lab as _lab
from tests.lab.scenarios import ROOT, ready_host

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
SIZING = sizing_for(HostSize(L.BOX_MIB, 2))


@pytest.fixture(scope="module")
def small_box(lab_host_image, lab_session_key, synapse_image, postgres_image, tmp_path_factory):
    with ready_host(lab_host_image, lab_session_key, synapse_image, postgres_image=postgres_image,
                    memory_mib=L.BOX_MIB, cores=2, compressor_image=_lab.build_compressor_image()) as host:
        yield L.deploy(host, tmp_path_factory.mktemp("tuned"))


def test_the_box_is_sized_for_2_gib(small_box):
    host = small_box.host
    stages = {s["name"]: s for s in small_box.report["stages"]}
    assert stages["host.ssh"]["status"] == "done"
    assert L.container_memory(host, "synapse")["max"] == str(1024 * 1024 * 1024)  # the container's cgroup says 1 GiB
    config = host.exec("cat /opt/matrix/synapse/data/homeserver.yaml", check=True).stdout
    for line in ("global_factor: 0.5", "sync_response_cache_duration: 30s",
                 "max_cache_memory_usage: 256M", "target_cache_memory_usage: 128M", "min_cache_ttl: 30s",
                 "complexity: 3.0", "remote_media_lifetime: 90d"):
        assert line in config, line
    assert "presence:\n  enabled: false" in config
    assert "# matrix-installer: caches sized for this box (2 GiB, 2 cores)" in config
    args = host.exec("docker inspect -f '{{json .Config.Cmd}}' postgres", check=True).stdout
    assert "shared_buffers=128MB" in args and "max_connections=40" in args
    assert host.exec("docker exec postgres psql -U synapse -d synapse -Atc 'show shared_buffers'", check=True).stdout.strip() == "128MB"


def test_synapse_runs_with_jemalloc_and_pythonmalloc(small_box):
    """As the real image does it (its start.py preloads Debian's libjemalloc2), and the deployment
    adds PYTHONMALLOC=malloc: read from the running process, as Synapse's own user."""
    read = ("grep -m1 -o '/[^ ]*libjemalloc[^ ]*' /proc/1/maps; "
            "tr '\\0' '\\n' < /proc/1/environ | grep -E '^(LD_PRELOAD|PYTHONMALLOC)='")
    out = small_box.host.exec(["docker", "exec", "-u", "991:991", "synapse", "sh", "-c", read], check=True).stdout.split()
    assert "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2" in out
    assert "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2" in out and "PYTHONMALLOC=malloc" in out


def test_synapse_limited_to_1_gib_survives_the_benchmarks_load(small_box):
    before = L.container_memory(small_box.host, "synapse")
    result = asyncio.run(L.run_load(small_box, L.LOAD))
    after = L.container_memory(small_box.host, "synapse")
    assert result.error_count == 0, (result.errors, result.first_errors)
    assert result.delivered == result.expected == result.sent * (len(L.LOAD.members(0)) - 1)
    assert after["status"] == "running" and not after["oom_killed"]
    assert after["restarts"] == before["restarts"] and after["oom_kill"] == 0
    peak, steady = result.rss("synapse")
    assert 0 < steady <= peak < 1024 * 1024 * 1024
    print(f"\nload: {L.LOAD.describe()}: p50 {result.percentile(50):.0f} ms, p95 {result.percentile(95):.0f} ms, "
          f"p99 {result.percentile(99):.0f} ms; Synapse RSS peak {peak / 2**20:.0f} MiB, steady {steady / 2**20:.0f} MiB "
          f"(limit 1024 MiB); cgroup peak {after['peak'] / 2**20 if after['peak'] else 0:.0f} MiB")


def test_state_compression_runs_from_the_nightly_timer_and_check_reports_the_servers_health(small_box):
    host = small_box.host
    assert host.exec("systemctl is-enabled matrix-compress-state.timer").stdout.strip() == "enabled"
    assert "04:00" in host.exec("systemctl cat matrix-compress-state.timer").stdout
    started = host.exec("systemctl start matrix-compress-state.service", timeout=600)
    log = host.exec("journalctl -u matrix-compress-state --no-pager -o cat").stdout
    assert started.returncode == 0, log
    stamp = host.exec("cat /opt/matrix/synapse/compress-state.last", check=True).stdout.split()
    assert stamp[1] == "ok" and int(stamp[2]) > 0 and int(stamp[3]) > 0, log
    assert "state compression ok: database" in log
    # --check: the federation test cannot pass here (no DNS for example.test), the health section reads the host.
    report = small_box.work / "check-report.json"
    done = subprocess.run([sys.executable, "-m", "installer", "--check", L.SERVER_NAME, "--state-dir",
                           str(small_box.work / "state"), "--report", str(report)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL)
    out = done.stdout
    assert "Synapse memory:" in out and "of its 1.0 GiB limit" in out, out[-3000:]
    assert "disk:" in out and "database (postgres):" in out and "deleted after 90d unseen" in out, out[-3000:]
    assert "state compression: last run 0.0 days ago, ok" in out, out[-3000:]
    assert "ACTION: Synapse" not in out and "ACTION: state compression" not in out  # the disk is the runner's
    assert "federation.check" in out and "not run: host.health" not in out
    # The report's check "host-health" holds the same, read over the one connection --check makes.
    health = next(c for c in json.loads(report.read_text())["checks"] if c["name"] == "host-health")
    assert "Synapse memory:" in health["detail"] and "state compression: last run" in health["detail"]
    assert health["ok"] == ("ACTION:" not in out), (health, out[-3000:])


# --- an over-complex room --------------------------------------------------------------------------

def _self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab-remote")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def start_fake_remote(host, complexity: float) -> str:
    """The fake remote server (fake_remote.py) on the deployment's compose network; returns its
    server name (IP:8448). Lab-only settings let Synapse reach it: a private address allowed, and
    its self-signed certificate accepted (no public CA in the lab), as trusted_key_servers: [] is.
    Only on this box, as the module's last test."""
    cert, key = _self_signed()
    host.exec("install -d -m 0755 /opt/lab-remote", check=True)
    for name, data in (("cert.pem", cert), ("key.pem", key), ("fake_remote.py", (HERE / "fake_remote.py").read_bytes())):
        host.exec(f"cat > /opt/lab-remote/{name} && chmod 0644 /opt/lab-remote/{name}", input=data, text=False, check=True)
    network = host.exec("docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' synapse",
                        check=True).stdout.strip()
    host.exec(f"docker rm -f lab-remote >/dev/null 2>&1; docker run -d --name lab-remote --network {shlex.quote(network)} "
              "-v /opt/lab-remote:/remote:ro --entrypoint /opt/venv/bin/python3 matrixdotorg/synapse:latest "
              f"/remote/fake_remote.py /remote/cert.pem /remote/key.pem {complexity}", check=True)
    ip = host.exec("docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' lab-remote",
                   check=True).stdout.strip()
    # Synapse blocks private addresses given as IP literals whatever ip_range_whitelist says, so
    # the lab empties the blocklist instead (0.0.0.0 and :: stay blocked: Synapse adds them).
    lab_only = ("\n# lab only: the fake remote server (tests/lab/fake_remote.py)\nfederation_verify_certificates: false\n"
                "ip_range_blacklist: []\n")
    host.exec("cat >> /opt/matrix/synapse/data/homeserver.yaml", input=lab_only, check=True)
    host.exec("docker restart synapse >/dev/null", check=True, timeout=120)
    deadline = time.monotonic() + 120
    while host.exec("curl -fsS -m 2 http://127.0.0.1:8008/health >/dev/null").returncode != 0:
        assert time.monotonic() < deadline, host.exec("docker logs --tail 40 synapse").stdout
        time.sleep(1)
    return f"{ip}:8448"


def test_joining_an_over_complex_room_is_refused_with_a_clear_error(small_box):
    remote = start_fake_remote(small_box.host, complexity=50.0)  # a room of 25,000 state events

    async def join() -> nio.JoinError:
        admin = await L.admin_token(small_box)
        user_id, token = L.make_user(small_box, admin, "joiner", unlimited=False)
        client = L.user_client(small_box, user_id, token)
        try:
            answer = await client.join(f"#big:{remote}")
        finally:
            await client.close()
        assert isinstance(answer, nio.JoinError), answer
        return answer

    refused = asyncio.run(join())
    assert refused.status_code == "M_RESOURCE_LIMIT_EXCEEDED"
    assert refused.message == complexity_error(SIZING)
    assert "does not join rooms this large" in refused.message and "2 GiB" in refused.message
    asked = small_box.host.exec("docker logs lab-remote", check=True).stdout
    assert "complexity asked for !big:" in asked
    # Refused before the join itself: no make_join ever reached the remote.
    assert "make_join" not in asked
