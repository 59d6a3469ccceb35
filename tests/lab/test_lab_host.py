"""The lab host itself: systemd, SSH as ubuntu with a pinned host key, sudo, Oracle's firewall;
the stand-in Synapse image; Docker, compose and Caddy inside a lab host."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid

import pytest

from . import lab as _lab

pytestmark = pytest.mark.lab


def _ssh(lab_host, known_hosts, command, **kw):
    return subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-i", str(lab_host.private_key_path),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "ConnectTimeout=10",
            "-p", str(lab_host.ssh_port), f"{lab_host.user}@127.0.0.1", command,
        ],
        capture_output=True, text=True, timeout=60, **kw,
    )


def test_systemd_is_pid_1_and_booted(lab_host):
    assert lab_host.exec("cat /proc/1/comm").stdout.strip() == "systemd"
    state = lab_host.exec("systemctl is-system-running").stdout.strip()
    assert state == "running", lab_host.exec("systemctl --failed --no-pager").stdout
    assert lab_host.exec("systemctl is-active ssh").stdout.strip() == "active"
    assert "trixie" in lab_host.exec("cat /etc/os-release").stdout


def test_ssh_as_ubuntu_with_pinned_host_key_and_sudo(lab_host, tmp_path):
    assert lab_host.user == "ubuntu"
    assert lab_host.host_key.startswith("ssh-ed25519 AAAA")
    assert oct(lab_host.private_key_path.stat().st_mode & 0o777) == "0o600"
    # The key sshd presents is the one the fixture read out of band.
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(lab_host.ssh_port), "127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )
    assert scan.stdout.split()[1:3] == lab_host.host_key.split(), scan
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(lab_host.known_hosts_line() + "\n")
    p = _ssh(lab_host, known_hosts, "id -un; sudo -n id -un")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["ubuntu", "root"]
    # A different pinned key is refused: the pin is real.
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "known_hosts_wrong"
    key = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    wrong.write_text(f"[127.0.0.1]:{lab_host.ssh_port} {key}\n")
    p = _ssh(lab_host, wrong, "true")
    assert p.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in p.stderr, p.stderr


def test_oracle_firewall_loaded_by_netfilter_persistent(lab_host):
    rules = lab_host.exec("iptables -S INPUT", check=True).stdout.splitlines()
    assert rules[-1] == "-A INPUT -j REJECT --reject-with icmp-host-prohibited"
    assert "-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT" in rules
    forward = lab_host.exec("iptables -S FORWARD", check=True).stdout.splitlines()
    assert forward[-1] == "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"
    status = lab_host.exec(
        "dpkg-query -W -f='${Package} ${Status}\\n' netfilter-persistent iptables-persistent"
    ).stdout
    assert status.count("install ok installed") == 2, status
    assert lab_host.exec("systemctl is-enabled netfilter-persistent").stdout.strip() == "enabled"
    assert lab_host.exec("systemctl is-active netfilter-persistent").stdout.strip() == "active"
    assert "icmp-host-prohibited" in lab_host.exec("cat /etc/iptables/rules.v4").stdout
    # Port 80 is published on the runner, but the lab host's firewall rejects it.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{lab_host.http_port}/", timeout=10)


def _wait_health(url, timeout=90):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except OSError as exc:
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer: {last}")


def test_synapse_stand_in_generates_and_serves_health(synapse_image, tmp_path):
    import yaml

    data = tmp_path / "data"
    data.mkdir()
    gen = _lab.docker(
        "run", "--rm", "-e", "SYNAPSE_SERVER_NAME=example.test", "-e", "SYNAPSE_REPORT_STATS=no",
        "-v", f"{data}:/data", synapse_image, "generate", check=False, timeout=120,
    )
    assert gen.returncode == 0, gen.stderr
    names = {p.name for p in data.iterdir()}
    assert {"homeserver.yaml", "example.test.log.config", "example.test.signing.key"} <= names
    cfg = yaml.safe_load((data / "homeserver.yaml").read_text())
    assert cfg["server_name"] == "example.test"
    assert cfg["trusted_key_servers"] == [] and cfg["suppress_key_server_warning"] is True
    assert cfg["database"]["args"]["database"] == "/data/homeserver.db"
    assert cfg["media_store_path"] == "/data/media_store"
    (listener,) = cfg["listeners"]
    assert listener["port"] == 8008 and listener["type"] == "http" and listener["x_forwarded"]
    assert set(listener["resources"][0]["names"]) == {"client", "federation"}
    log_cfg = yaml.safe_load((data / "example.test.log.config").read_text())
    assert log_cfg["root"]["handlers"] == ["console"]
    assert (data / "homeserver.yaml").stat().st_uid == 991

    name = f"lab-synapse-{uuid.uuid4().hex[:8]}"
    _lab.docker("run", "-d", "--name", name, "--label", f"{_lab.LABEL}.pid={_lab.os.getpid()}",
                "-p", "127.0.0.1::8008", "-v", f"{data}:/data", synapse_image)
    try:
        port = _lab.docker("port", name, "8008/tcp").stdout.split()[0].rsplit(":", 1)[1]
        assert _wait_health(f"http://127.0.0.1:{port}/health") == (200, "OK")
        _, body = _wait_health(f"http://127.0.0.1:{port}/_matrix/federation/v1/version")
        assert json.loads(body)["server"]["version"] == _lab.SYNAPSE_VERSION
        p = _lab.docker("exec", name, "register_new_matrix_user", "-c", "/data/homeserver.yaml",
                        "-u", "alice", "-p", "wonderland", "--no-admin",
                        "http://localhost:8008", check=False)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        _lab.docker("rm", "-f", "-v", name, check=False)


def test_broken_synapse_variant_fails_to_start(synapse_image, tmp_path):
    broken = _lab.build_synapse_image(broken=True)
    data = tmp_path / "data"
    data.mkdir()
    _lab.docker("run", "--rm", "-e", "SYNAPSE_SERVER_NAME=example.test",
                "-e", "SYNAPSE_REPORT_STATS=no", "-v", f"{data}:/data", broken, "generate")
    p = _lab.docker("run", "--rm", "-v", f"{data}:/data", broken, check=False, timeout=120)
    assert p.returncode == 1 and "deliberately broken" in p.stderr


COMPOSE = """\
services:
  synapse:
    image: matrixdotorg/synapse:latest
    restart: unless-stopped
    volumes: ["./data:/data"]
    ports: ["127.0.0.1:8008:8008"]
    healthcheck:
      test: ["CMD", "curl", "-fSs", "http://localhost:8008/health"]
      interval: 5s
"""

CADDYFILE = """\
{
\tlocal_certs
}
lab.example.test {
\treverse_proxy 127.0.0.1:8008
}
"""


def test_docker_compose_and_caddy_inside_a_lab_host(lab_host_image, lab_session_key, synapse_image):
    """What the installer does on the host, by hand: Debian's docker.io + docker-compose, the
    stand-in Synapse under compose, Debian's caddy with its local CA. A lab host of its own,
    so the session's lab_host stays a fresh machine."""
    host = _lab.LabHost.start(lab_host_image, lab_session_key)
    try:
        host.preinstall_docker()
        # Debian's docker-compose package is compose v2, also as the `docker compose` plugin.
        assert "Docker Compose version 2." in host.exec("docker compose version", check=True).stdout
        host.load_image(synapse_image, as_tag="matrixdotorg/synapse:latest")
        host.exec(
            "mkdir -p /opt/matrix/data && cd /opt/matrix && cat > compose.yaml && "
            "docker run --rm -e SYNAPSE_SERVER_NAME=lab.example.test -e SYNAPSE_REPORT_STATS=no "
            "-v /opt/matrix/data:/data matrixdotorg/synapse:latest generate && docker compose up -d",
            input=COMPOSE, check=True, timeout=300,
        )
        health = host.exec(
            "for i in $(seq 120); do curl -fsS http://127.0.0.1:8008/health && exit 0; sleep 0.5; done; "
            "docker compose -f /opt/matrix/compose.yaml logs --tail 30; exit 1", timeout=120,
        )
        assert health.returncode == 0 and health.stdout == "OK", health.stdout + health.stderr

        host.exec("DEBIAN_FRONTEND=noninteractive apt-get install -y -q caddy", check=True)
        host.exec("cat > /etc/caddy/Caddyfile && systemctl reload caddy", input=CADDYFILE, check=True)
        fetched = host.exec(
            "for i in $(seq 60); do test -s " + host.CADDY_ROOT_CA + " && "
            "curl -fsS --resolve lab.example.test:443:127.0.0.1 --cacert " + host.CADDY_ROOT_CA +
            " https://lab.example.test/health && exit 0; sleep 0.5; done; exit 1", timeout=60,
        )
        assert fetched.returncode == 0 and fetched.stdout == "OK", fetched.stderr
        ca = host.caddy_root_ca()
        assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    finally:
        host.stop()
