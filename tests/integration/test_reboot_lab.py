"""Upgrade mode's reboot, for real: the OS asks for one, the answers say yes, the lab host reboots
(systemd ends the container; Docker's restart policy boots it again on the same ports, as a VM
keeps its address), the installer waits for SSH, finds Synapse healthy again and the federation
test passing: Caddy, Docker, Synapse and the firewall rules all came back by themselves.
"""

from __future__ import annotations

import pytest

from tests.lab import lab as _lab
from tests.lab.scenarios import Command, existing_server_answers, https_mappings, ready_host

pytestmark = pytest.mark.lab


@pytest.fixture
def rebootable_host(lab_host_image, lab_session_key, synapse_image, postgres_image):
    with ready_host(lab_host_image, lab_session_key, synapse_image, rebootable=True, postgres_image=postgres_image) as host:
        yield host


def started_at(host: _lab.LabHost) -> str:
    return _lab.docker("inspect", "-f", "{{.State.StartedAt}}", host.container).stdout.strip()


def test_upgrade_reboots_when_the_os_asks_and_everything_comes_back(rebootable_host, lab_dns, tmp_path):
    host = rebootable_host
    answers = tmp_path / "answers.toml"
    answers.write_text(existing_server_answers(host, registration='admin_password_env = "MI_REBOOT_ADMIN_PASSWORD"',
                                               extra='[upgrade]\nreboot = "yes"'))
    command = Command(answers, tmp_path / "state", lab_dns, https_mappings(host, "example.test", "matrix.example.test"),
                      {"MI_REBOOT_ADMIN_PASSWORD": "reboot-test-password"})

    def run(*extra: str):
        return command.run(tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json", *extra)

    install, report = run()
    assert {s["name"]: s["status"] for s in report["stages"]}["services.start"] == "done", install.stdout[-3000:]
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
