"""The command line as a user meets it: exit codes, messages, the dry-run plan, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.cli import EXAMPLE, existing_server_answers, run


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("matrix-installer ")
    help_text = run("--help").stdout
    for flag in ("--answers", "--upgrade", "--check", "--dry-run", "--state-dir", "--report", "--connect-to", "--dns-server", "--ca-file"):
        assert flag in help_text


def test_broken_answers_exit_2_naming_every_bad_key_and_change_nothing(tmp_path: Path) -> None:
    answers = tmp_path / "broken.toml"
    answers.write_text(
        EXAMPLE.read_text()
        .replace('server_name = "example.org"', 'server_name = "example.org; reboot"')
        .replace("port = 22", "port = 0")
        .replace('policy = "closed"', 'policy = "open"')
        .replace("keep_backups = 3", "keep_backups = 3\nkeep_backup = 4")
    )
    state_dir = tmp_path / "state"
    result = run("--answers", str(answers), "--state-dir", str(state_dir), "--report", str(tmp_path / "r.json"), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for key in ("domain.server_name", "ssh.port", "registration.policy", "upgrade.keep_backup"):
        assert f"{answers}:" in result.stderr and key in result.stderr
    assert 'did you mean "keep_backups"' in result.stderr
    assert not state_dir.exists() and not (tmp_path / "r.json").exists()
    assert not (tmp_path / ".ssh").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--connect-to", "example.org:443"], "--connect-to example.org:443: must be HOST1:PORT1:HOST2:PORT2"),
        (["--connect-to", "example.org:443:127.0.0.1:99999"], "port 99999"),
        (["--connect-to", "example.org:443::"], "says nowhere to connect to"),
        (["--dns-server", "dns.example.org"], "must be an IP address"),
        (["--ca-file", "/nonexistent/ca.pem"], "--ca-file /nonexistent/ca.pem: does not exist"),
        (["--check", "bad name!"], "--check: the server name"),
        (["--check", "example.org", "--upgrade"], "use it without --answers and --upgrade"),
        (["--check", "example.org", "--report", "/nonexistent/folder/r.json"], "the folder /nonexistent/folder does not exist"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_flag_exits_2() -> None:
    result = run("--frobnicate")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_guided_setup_without_a_terminal_says_what_to_do() -> None:
    result = run()
    assert result.returncode == 2
    assert "needs a terminal" in result.stderr and "--answers FILE" in result.stderr


def test_example_dry_run_shows_the_whole_install_plan_and_contacts_nothing(tmp_path: Path) -> None:
    """The README's promise, on a machine with no ~/.oci/config and no SSH key."""
    result = run("--answers", str(EXAMPLE), "--dry-run", "--report", str(tmp_path / "r.json"), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("Dry run: nothing will be contacted or changed.")
    stage_order = [
        "local.ssh_key", "backup.bucket", "cloud.network", "cloud.ingress", "cloud.instance", "dns.records", "host.ssh",
        "host.firewall", "host.caddy", "caddy.config", "host.docker", "element.files", "element.check", "turn.secret",
        "turn.server", "backup.setup", "backup.unfinished", "postgres.config", "synapse.config", "services.start",
        "synapse.admin", "registration.policy", "postgres.check", "turn.check", "backup.first", "federation.check",
    ]
    starts = [out.index(f"{name:<20} -- ") for name in stage_order]
    assert starts == sorted(starts), "stages are shown one after another in plan order"
    # Cloud calls, remote commands and rendered files all appear in the plan.
    assert "cloud: " in out
    assert "$ sudo " in out
    assert "write /etc/caddy/Caddyfile" in out
    assert '@proxy1 path "/_matrix/*" "/_synapse/client/*"' in out and 'reverse_proxy @proxy1 "127.0.0.1:8008"' in out
    assert "Dry run: 26 stages planned; nothing was contacted or changed." in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is True and report["dry_run"] is True and report["mode"] == "install"
    assert [s["name"] for s in report["stages"]] == stage_order
    assert {s["status"] for s in report["stages"]} == {"planned"}
    # Nothing was created: no state, no key pair.
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / ".ssh").exists()


def test_dry_run_of_an_existing_server_has_no_cloud_stages(tmp_path: Path) -> None:
    answers = existing_server_answers(tmp_path)
    result = run("--answers", str(answers), "--dry-run", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cloud." not in result.stdout.split("Summary")[1]


def test_upgrade_dry_run_lists_the_upgrade_stages(tmp_path: Path) -> None:
    result = run("--upgrade", "--answers", str(EXAMPLE), "--dry-run", "--report", str(tmp_path / "r.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mode"] == "upgrade"
    assert [s["name"] for s in report["stages"]][2:] == [
        "backup.bucket", "backup.setup", "backup.age", "upgrade.preflight", "upgrade.backup", "upgrade.packages", "upgrade.reboot", "database.migrate",
        "upgrade.images", "upgrade.prune", "federation.check",
    ]


def test_a_state_dir_that_cannot_be_written_exits_2(tmp_path: Path) -> None:
    answers = existing_server_answers(tmp_path)
    result = run("--answers", str(answers), "--state-dir", "/proc/no-state-here", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot write the run's state there" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / ".ssh").exists()


def test_connect_to_takes_curls_empty_parts() -> None:
    from installer.cli import parse_connect_to
    from installer.federation.net import Net

    assert parse_connect_to("::127.0.0.1:8443") == ("", 0, "127.0.0.1", 8443)
    assert parse_connect_to("example.org:443::8443") == ("example.org", 443, "", 8443)
    assert parse_connect_to("[::1]:443:[::1]:") == ("::1", 443, "::1", 0)
    net = Net(connect_to=[parse_connect_to("::127.0.0.1:8443"), parse_connect_to("example.org:8448::9448")])
    assert net.mapped("matrix.example.org", 443) == ("127.0.0.1", 8443)  # any host, any port
    assert net.mapped("example.org", 8448) == ("example.org", 9448)  # the same host, another port


def test_check_dry_run_describes_wildcard_mappings() -> None:
    result = run("--check", "example.org", "--dry-run", "--connect-to", "::127.0.0.1:8443", "--connect-to", "example.org:8448::9448")
    assert result.returncode == 0, result.stderr
    assert "--connect-to: *:* goes to 127.0.0.1:8443" in result.stdout
    assert "--connect-to: example.org:8448 goes to (the same host):9448" in result.stdout


def test_an_upgrade_with_no_server_to_find_stops_before_anything(tmp_path: Path) -> None:
    """Oracle Cloud answers, no ssh.host, and no earlier run in the state folder: nothing to upgrade."""
    state_dir = tmp_path / "state"
    result = run("--answers", str(EXAMPLE), "--upgrade", "--state-dir", str(state_dir), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no earlier run for example.org in {state_dir} knows the server's address" in result.stderr
    assert not state_dir.exists()
    dry = run("--answers", str(EXAMPLE), "--upgrade", "--dry-run", "--state-dir", str(state_dir), cwd=tmp_path)
    assert dry.returncode == 0 and "knows the server's address" in dry.stdout and "(a real run stops here)" in dry.stdout


def test_an_upgrade_never_plans_to_connect_with_a_new_key(tmp_path: Path) -> None:
    """The server accepts only the key that installed it: a missing one stops the upgrade before
    anything runs, instead of a new pair made and then refused."""
    answers = existing_server_answers(tmp_path)  # its key, ~/.ssh/id_ed25519 under HOME=tmp_path, is not there
    result = run("--answers", str(answers), "--upgrade", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ssh.private_key:" in result.stderr and "an upgrade logs in with the key the server already accepts" in result.stderr
    assert not (tmp_path / ".ssh").exists()
    dry = run("--answers", str(answers), "--upgrade", "--dry-run", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would create" not in dry.stdout and "a real run stops here" in dry.stdout


def test_a_new_key_for_a_server_of_yours_exits_with_the_way_to_add_it(tmp_path: Path) -> None:
    """Headless install on an existing server with no key pair yet: the pair is made, then the run
    stops (exit 1, nothing connected) with the exact ssh-copy-id command and authorized_keys line."""
    answers = existing_server_answers(tmp_path)
    result = run("--answers", str(answers), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    public = (tmp_path / ".ssh" / "id_ed25519.pub").read_text().strip()
    assert f"ssh-copy-id -i {tmp_path}/.ssh/id_ed25519.pub ubuntu@203.0.113.7" in result.stdout
    assert public in result.stdout
    assert "-- SSH to the host" not in result.stdout  # nothing tried to connect


def test_output_cut_short_by_its_reader_is_no_traceback(tmp_path: Path) -> None:
    """`matrix-installer --dry-run ... | head -3`: the reader leaves early; the command stops quietly."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "installer", "--answers", str(existing_server_answers(tmp_path)), "--dry-run",
               "--state-dir", str(tmp_path / "state")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                          env={**__import__("os").environ, "HOME": str(tmp_path)}) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        import fcntl

        fcntl.fcntl(proc.stdout.fileno(), 1031, 4096)  # F_SETPIPE_SZ: the plan no longer fits in the pipe
        proc.stdout.readline()
        proc.stdout.close()  # as head does after its lines
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-2000:]
