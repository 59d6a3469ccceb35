"""Upgrade mode's reboot, for real: the OS asks for one, the answers say yes, the lab host reboots
(systemd ends the container; Docker's restart policy boots it again on the same ports, as a VM
keeps its address), the installer waits for SSH, finds Synapse healthy again and the federation
test passing: Caddy, Docker, Synapse and the firewall rules all came back by themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import lab as _lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rebootable_host(lab_host_image, lab_session_key, synapse_image):
    host = _lab.LabHost.start(lab_host_image, lab_session_key, rebootable=True)
    try:
        host.preinstall_docker()
        host.load_image(synapse_image, as_tag="matrixdotorg/synapse:latest")
        yield host
    finally:
        host.stop()


def started_at(host: _lab.LabHost) -> str:
    return _lab.docker("inspect", "-f", "{{.State.StartedAt}}", host.container).stdout.strip()


def test_upgrade_reboots_when_the_os_asks_and_everything_comes_back(rebootable_host, lab_dns, tmp_path):
    host = rebootable_host
    answers = tmp_path / "answers.toml"
    answers.write_text(
        f"""version = 1
[domain]
server_name = "example.test"
matrix_host = "matrix.example.test"
tls = "internal"
[cloud]
provider = "existing"
[packages]
source = "distro"
[ssh]
host = "127.0.0.1"
port = {host.ssh_port}
private_key = "{host.private_key_path}"
host_key = "{host.host_key}"
[registration]
admin_password_env = "MI_REBOOT_ADMIN_PASSWORD"
[upgrade]
reboot = "yes"
"""
    )

    def run(*extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
        args = [sys.executable, "-m", "installer", "--answers", str(answers), "--state-dir", str(tmp_path / "state"),
                "--report", str(report), "--dns-server", f"127.0.0.1:{lab_dns}", *extra]
        for name in ("example.test", "matrix.example.test"):
            args += ["--connect-to", f"{name}:443:127.0.0.1:{host.https_port}"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT, stdin=subprocess.DEVNULL,
                              env={**os.environ, "MI_REBOOT_ADMIN_PASSWORD": "reboot-test-password"})
        assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
        return done, json.loads(report.read_text())

    install, report = run()
    assert {s["name"]: s["status"] for s in report["stages"]}["synapse.start"] == "done", install.stdout[-3000:]
    ca = tmp_path / "caddy-root.crt"
    ca.write_bytes(host.caddy_root_ca())

    host.exec("touch /var/run/reboot-required && echo linux-image-lab > /var/run/reboot-required.pkgs", check=True)
    booted = started_at(host)
    upgrade, report = run("--upgrade", "--ca-file", str(ca))
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert statuses["upgrade.reboot"] == "done", (report["stages"], upgrade.stdout[-4000:])
    assert started_at(host) != booted, "the host really rebooted"
    assert "linux-image-lab" in upgrade.stdout
    assert upgrade.returncode == 0, upgrade.stdout[-4000:]
    assert report["federation"]["ok"] is True
    # After the reboot the firewall rules were restored from netfilter-persistent's file.
    rules = host.exec("iptables -S INPUT", check=True).stdout
    assert "--dport 443 -j ACCEPT" in rules and rules.index("--dport 443") < rules.index("REJECT")
