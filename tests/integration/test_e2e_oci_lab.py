"""The whole product, headless, from nothing: the real `oci` SDK launches a VM in the OCI
emulator, the "VM" is the lab host (its SSH host key comes from the cloud-init user data the
installer sent, as on Oracle), then every host stage runs over SSH and the federation test
passes through Caddy to Synapse. A rerun launches nothing and changes nothing.

What cannot run here and is stood in for: Oracle's Ubuntu image (the lab's Debian trixie), the
image pull (the lab's Synapse image is loaded into the host's Docker, which is preinstalled for
that reason), public DNS (dnsmasq) and the public ports (--connect-to the lab's loopback ports),
Object Storage: the emulator makes the bucket and the Customer Secret Key, rclone's S3 server
(tests/lab/s3.py) answers the S3-compatible API with that key, and the host sends its backups there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from installer.files import write_private
from installer.components.backup.bucket import S3_ENDPOINT_ENV
from tests.lab import lab as _lab
from tests.lab.s3 import s3_server
from tests.lab.scenarios import NOT_APPLICABLE_ON_THE_LAB, WITHOUT_WEB_CLIENT_AND_CALLS, ready_host

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
SERVER_NAME = "example.test"
MATRIX_HOST = "matrix.example.test"


def become_the_launched_vm(host: _lab.LabHost, sent: list[str]):
    """What cloud-init does on the new VM with what the installer sent: the SSH host key pair from
    the user data, the user's key from the metadata. The user data is kept in `sent`."""

    def on_launch(instance: dict, user_data: str | None) -> None:
        sent.append(user_data or "")
        keys = yaml.safe_load(user_data or "")["ssh_keys"]
        host.exec("install -m 0600 /dev/stdin /etc/ssh/ssh_host_ed25519_key", input=keys["ed25519_private"], check=True)
        host.exec("install -m 0644 /dev/stdin /etc/ssh/ssh_host_ed25519_key.pub", input=keys["ed25519_public"], check=True)
        host.exec("systemctl restart ssh", check=True)
        host.authorize_key(instance["metadata"]["ssh_authorized_keys"])

    return on_launch


@pytest.fixture
def fresh_lab_host(lab_host_image, lab_session_key, synapse_image, postgres_image):
    with ready_host(lab_host_image, lab_session_key, synapse_image, postgres_image=postgres_image) as host:
        yield host


@pytest.fixture
def object_storage(oci_emulator, tmp_path):
    """The S3-compatible side of Object Storage: rclone, accepting the key the emulator hands out."""
    with s3_server(tmp_path / "s3", "matrix-backups") as server:
        oci_emulator.state.next_secret_keys.append((server.access, server.secret))
        yield server


def test_headless_install_through_the_oci_emulator_onto_the_lab_host(oci_emulator, object_storage, fresh_lab_host, lab_dns,
                                                                     tmp_path):
    host = fresh_lab_host
    oci_emulator.state.public_ip = "127.0.0.1"  # the lab's ports are published on loopback
    oci_emulator.state.provision_polls = 0
    sent_user_data: list[str] = []
    oci_emulator.state.on_launch = become_the_launched_vm(host, sent_user_data)
    answers = tmp_path / "answers.toml"
    answers.write_text(
        f"""version = 1
[domain]
server_name = "{SERVER_NAME}"
matrix_host = "{MATRIX_HOST}"
tls = "internal"
[cloud]
provider = "oci"
oci_config = "{oci_emulator.config_path}"
shape = "VM.Standard.E2.1.Micro"
[packages]
source = "distro"
[ssh]
port = {host.ssh_port}
private_key = "{tmp_path / 'ssh' / 'id_ed25519'}"
[registration]
admin_password_env = "MI_E2E_ADMIN_PASSWORD"
{WITHOUT_WEB_CLIENT_AND_CALLS}"""
    )
    state_dir = tmp_path / "state"
    password = "e2e-admin-password-not-to-be-seen"

    def run(report: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
        args = [sys.executable, "-m", "installer", "--answers", str(answers), "--state-dir", str(state_dir),
                "--report", str(report), "--dns-server", f"127.0.0.1:{lab_dns}", "--peer", "none"]
        for name in (SERVER_NAME, MATRIX_HOST):
            args += ["--connect-to", f"{name}:443:127.0.0.1:{host.https_port}"]
        if (ca := tmp_path / "caddy-root.crt").exists():
            args += ["--ca-file", str(ca)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT, stdin=subprocess.DEVNULL,
                              env={**os.environ, **oci_emulator.env, "MI_E2E_ADMIN_PASSWORD": password,
                                   S3_ENDPOINT_ENV: object_storage.endpoint})
        assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
        return done, json.loads(report.read_text())

    first, report = run(tmp_path / "first.json")
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    # Without the lab CA the federation test cannot trust Caddy's local certificate: it says so.
    assert statuses["cloud.instance"] == "done", first.stdout[-4000:]
    for name in ("cloud.network", "cloud.ingress", "host.firewall", "host.caddy", "synapse.config",
                 "postgres.config", "services.start", "caddy.config", "synapse.admin",
                 "backup.bucket", "backup.setup", "backup.first"):
        assert statuses[name] == "done", (name, report["stages"], first.stdout[-4000:])
    # Connecting changes nothing; Docker was preinstalled (no registry here); Synapse's config
    # already left registration closed, the policy asked for; the records resolved at once.
    for name in ("host.ssh", "host.docker", "registration.policy", "dns.records"):
        assert statuses[name] in ("done", "unchanged"), (name, report["stages"])
    assert statuses["federation.check"] == "failed"
    assert first.returncode == 1
    failed = {c["name"] for c in report["federation"]["checks"] if not c["ok"]}
    assert "tls" in failed, report["federation"]["checks"]

    # The host key sent in the user data (which any process on the VM can read from the metadata
    # service) was replaced by one made on the host, and that one is pinned.
    facts = json.loads((state_dir / SERVER_NAME / "state.json").read_text())["facts"]
    on_host = host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub", check=True).stdout.split()[:2]
    assert facts["host.host_key"].split()[:2] == on_host and facts["host.host_key_from"] == "host"
    assert on_host[1] not in sent_user_data[0] and "host.host_key_next" not in facts
    assert "is retired" in first.stdout
    # Backups on Oracle Cloud by default: the bucket and a Customer Secret Key made through the SDK,
    # a restic repository in the bucket, a first snapshot in it; the key's secret never shown.
    assert list(oci_emulator.state.store["buckets"]) == ["matrix-backups"]
    assert oci_emulator.state.s3_keys == [(object_storage.access, object_storage.secret)]
    assert (object_storage.bucket("matrix-backups") / "config").is_file()
    assert len(list((object_storage.bucket("matrix-backups") / "snapshots").iterdir())) == 1
    assert facts["backup.oci_secret"] == object_storage.secret

    # The user trusts the lab's CA (as they would pass their own) and reruns: it resumes.
    (tmp_path / "caddy-root.crt").write_bytes(host.caddy_root_ca())
    second, report = run(tmp_path / "second.json")
    assert second.returncode == 0, second.stdout[-4000:]
    assert report["ok"] is True and report["federation"]["ok"] is True
    statuses = {s["name"]: s["status"] for s in report["stages"] if s["name"] != "federation.check"}
    # What does not apply to the lab host is skipped again, as on the first run, not redone.
    assert {name: statuses.pop(name) for name in NOT_APPLICABLE_ON_THE_LAB} == dict.fromkeys(NOT_APPLICABLE_ON_THE_LAB, "skipped")
    assert set(statuses.values()) == {"unchanged"}, {k: v for k, v in statuses.items() if v != "unchanged"}
    assert len(oci_emulator.state.store["instances"]) == 1, "a rerun never launches a second VM"
    for text in (first.stdout, second.stdout, first.stderr, second.stderr, (tmp_path / "second.json").read_text(),
                 (state_dir / SERVER_NAME / "state.json").read_text(), (state_dir / SERVER_NAME / "last-run.log").read_text()):
        assert password not in text
        assert "BEGIN OPENSSH PRIVATE KEY" not in text
    for text in (first.stdout, second.stdout, first.stderr, second.stderr, (tmp_path / "second.json").read_text(),
                 (state_dir / SERVER_NAME / "last-run.log").read_text()):
        assert object_storage.secret not in text  # only the state (0600) and the host's root-only file hold it

    # A run that stopped after putting the host's new key in place but before pinning it: the next
    # run accepts that key (it was remembered first), pins it, and makes no other.
    host.exec("ssh-keygen -q -t ed25519 -N '' -C '' -f /tmp/next && install -m 0600 /tmp/next /etc/ssh/ssh_host_ed25519_key && "
              "install -m 0644 /tmp/next.pub /etc/ssh/ssh_host_ed25519_key.pub && systemctl reload ssh", check=True)
    new_key = host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub", check=True).stdout.split()[:2]
    state_file = state_dir / SERVER_NAME / "state.json"
    state = json.loads(state_file.read_text())
    state["facts"].update({"host.host_key_from": "cloud-init", "host.host_key_next": " ".join(new_key)})
    write_private(state_file, json.dumps(state).encode())
    third, report = run(tmp_path / "third.json")
    assert third.returncode == 0, third.stdout[-4000:]
    facts = json.loads(state_file.read_text())["facts"]
    assert facts["host.host_key"].split()[:2] == new_key and facts["host.host_key_from"] == "host"
    assert "host.host_key_next" not in facts and "ssh-keygen" not in third.stdout
    assert host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub", check=True).stdout.split()[:2] == new_key
