"""installer.discovery: what the Welcome and Keys screens show about this machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


from installer import discovery
from installer.answers import save_answers
from tests.tui.helpers import VALID


def test_oci_profiles_with_default_and_named_sections(tmp_path: Path) -> None:
    (tmp_path / ".oci").mkdir()
    (tmp_path / ".oci" / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    config = tmp_path / ".oci" / "config"
    config.write_text(
        "[DEFAULT]\nuser=ocid1.user.oc1..a\ntenancy=ocid1.tenancy.oc1..t\nregion=eu-frankfurt-1\nkey_file=~/.oci/key.pem\n"
        "[work]\nregion=us-ashburn-1\nkey_file=~/.oci/missing.pem\n"
    )
    profiles = {p.name: p for p in discovery.oci_profiles(config, home=tmp_path)}
    assert list(profiles) == ["DEFAULT", "work"]
    assert profiles["DEFAULT"].key_present and profiles["DEFAULT"].region == "eu-frankfurt-1"
    assert not profiles["work"].key_present and "missing" in profiles["work"].key_status
    assert profiles["work"].tenancy == "ocid1.tenancy.oc1..t"  # inherited from [DEFAULT], as the OCI SDK does


def test_no_or_broken_oci_config_means_no_profiles(tmp_path: Path) -> None:
    assert discovery.oci_profiles(tmp_path / "nope") == []
    bad = tmp_path / "config"
    bad.write_text("this is not = an ini [file\n")
    assert discovery.oci_profiles(bad) == []


def test_ssh_keys_and_fingerprints_match_ssh_keygen(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    for name, kind in (("id_rsa", "rsa"), ("id_ed25519", "ed25519")):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "ada@laptop", "-f", str(ssh / name)], check=True)
    (ssh / "known_hosts").write_text("")
    (ssh / "orphan.pub").write_text((ssh / "id_rsa.pub").read_text())  # no private half: not offered
    keys = discovery.ssh_keys(ssh)
    assert [k.private_path.name for k in keys] == ["id_ed25519", "id_rsa"]
    expected = subprocess.run(["ssh-keygen", "-l", "-f", str(ssh / "id_ed25519.pub")], capture_output=True, text=True, check=True).stdout.split()[1]
    assert keys[0].fingerprint == expected
    assert keys[0].key_type == "ssh-ed25519" and keys[0].comment == "ada@laptop"


def test_previous_runs_with_their_answers(tmp_path: Path) -> None:
    done = tmp_path / "example.org"
    done.mkdir()
    (done / "state.json").write_text(json.dumps({"facts": {"host.address": "203.0.113.10"}, "stages": {
        "local.ssh_key": {"status": "done", "at": 10}, "host.ssh": {"status": "unchanged", "at": 20}}}))
    save_answers(VALID, done / "answers.toml")
    stopped = tmp_path / "other.net"
    stopped.mkdir()
    (stopped / "state.json").write_text(json.dumps({"stages": {
        "local.ssh_key": {"status": "done", "at": 30}, "synapse.start": {"status": "failed", "at": 31}}}))
    (tmp_path / "junk").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("{not json")

    runs = discovery.previous_runs(tmp_path)
    assert [r.server_name for r in runs] == ["other.net", "example.org"]  # newest first
    other, example = runs
    assert other.stages_failed == ("synapse.start",) and "stopped at synapse.start" in other.summary
    assert example.complete and example.public_ip == "203.0.113.10"
    assert discovery.run_answers(example) == VALID
    assert discovery.run_answers(other) is None


def test_discover_on_an_empty_machine(tmp_path: Path) -> None:
    found = discovery.discover(home=tmp_path, state_dir=tmp_path / "state")
    assert found.oci_profiles == () and found.ssh_keys == () and found.previous_runs == ()
    assert found.oci_config == tmp_path / ".oci" / "config"
