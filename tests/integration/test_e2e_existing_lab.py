"""The real command on an existing server (the lab host) with answers no other test uses:
no delegation (server name = Matrix host, federation on the spec's port 8448, which the installer
must open in iptables and serve from Caddy), the "open-until-admin" policy, and the admin
password generated and shown once. Then the federation test passes over 8448.
"""

from __future__ import annotations

import json

import pytest

from tests.lab.scenarios import Command, existing_server_answers, ready_host

pytestmark = pytest.mark.lab

SERVER_NAME = "example.test"


@pytest.fixture
def existing_server(lab_host_image, lab_session_key, synapse_image, postgres_image):
    with ready_host(lab_host_image, lab_session_key, synapse_image, postgres_image=postgres_image) as host:
        yield host


def test_no_delegation_federates_on_8448_and_the_generated_password_is_shown_once(existing_server, lab_dns, tmp_path):
    host = existing_server
    answers = tmp_path / "answers.toml"
    answers.write_text(existing_server_answers(
        host, server_name=SERVER_NAME, matrix_host=SERVER_NAME, domain='delegation = "none"',
        registration='policy = "open-until-admin"\nadmin_user = "boss"\nadmin_password_env = "MI_E2E_UNSET_ADMIN_PASSWORD"',
    ))
    state_dir = tmp_path / "state"
    command = Command(answers, state_dir, lab_dns, (f"{SERVER_NAME}:443:127.0.0.1:{host.https_port}",
                                                    f"{SERVER_NAME}:8448:127.0.0.1:{host.fed_port}"), {})
    run = command.run

    first, report = run(tmp_path / "first.json")
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert {statuses[n] for n in ("host.firewall", "host.caddy", "synapse.config", "services.start", "caddy.config",
                                  "synapse.admin")} == {"done"}, (report["stages"], first.stdout[-4000:])
    # 8448 was opened above the REJECT rule, and Caddy serves it.
    rules = host.exec("iptables -S INPUT", check=True).stdout
    assert "--dport 8448 -j ACCEPT" in rules and rules.index("--dport 8448") < rules.index("REJECT")
    assert "example.test:8448 {" in host.exec("cat /etc/caddy/Caddyfile", check=True).stdout

    # The generated password is shown once, on the output, and nowhere else.
    shown = [line for line in first.stdout.splitlines() if line.startswith("  Admin password for @boss:example.test: ")]
    assert len(shown) == 1, first.stdout[-3000:]
    password = shown[0].rsplit(": ", 1)[1].strip()
    assert len(password) >= 16
    for text in (report and json.dumps(report), (state_dir / SERVER_NAME / "state.json").read_text(),
                 (state_dir / SERVER_NAME / "last-run.log").read_text(), first.stderr):
        assert password not in text

    # Trusting the lab's CA, the rerun changes nothing and the federation test passes over 8448.
    ca = tmp_path / "caddy-root.crt"
    ca.write_bytes(host.caddy_root_ca())
    second, report = run(tmp_path / "second.json", "--ca-file", str(ca))
    assert second.returncode == 0, second.stdout[-4000:]
    assert {s["status"] for s in report["stages"] if s["name"] != "federation.check"} <= {"unchanged", "skipped"}
    federation = report["federation"]
    assert federation["ok"] is True
    # Discovery found no delegation and went to the default port 8448 (reached through --connect-to).
    (address, connection), = federation["tester"]["ConnectionReports"].items()
    assert address == f"127.0.0.1:{host.fed_port}" and connection["Info"]["Step"] == "default port"
    # Registration ended closed, as "open-until-admin" promises.
    checks = {c["name"]: c for c in federation["checks"]}
    assert checks["registration"]["ok"] is True
    assert password not in second.stdout
    # Once more: a rerun after success changes nothing, and says so for every stage.
    again, report = run(tmp_path / "again.json", "--ca-file", str(ca))
    assert again.returncode == 0 and {s["status"] for s in report["stages"]} <= {"unchanged", "skipped"}, report["stages"]

    # Upgrade mode on the same deployment: found from the state, nothing new to pull (no
    # registry here: the pull fails and the image on the host is compared), and proven after.
    third, report = run(tmp_path / "upgrade.json", "--ca-file", str(ca), "--upgrade")
    assert third.returncode == 0, third.stdout[-4000:]
    assert report["mode"] == "upgrade" and report["federation"]["ok"] is True
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert statuses["upgrade.images"] == "unchanged"
    assert statuses["upgrade.reboot"] in ("skipped", "unchanged")
    assert all(status in ("done", "unchanged", "skipped") for status in statuses.values()), report["stages"]
