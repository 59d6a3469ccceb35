"""Hostile and broken inputs, as the real command meets them: each is refused before anything
runs, with exit 2, the field or flag named, a message under 2 KB, nothing raw, no traceback."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from tests.fixtures.cli import EXAMPLE, HOST_KEY, assert_refused_up_front, existing_server_answers, raw_controls, run

DIGITS = "9" * 5000


def answers_with(tmp_path: Path, old: str, new: str, *, source: Path = EXAMPLE) -> Path:
    text = source.read_text()
    assert old in text
    path = tmp_path / "answers.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def dry_run(answers: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    return run("--answers", str(answers), "--dry-run", "--state-dir", str(tmp_path / "state"), *extra, cwd=tmp_path, env=env)


# --- the answers file itself -------------------------------------------------------------------


@pytest.mark.parametrize("nesting", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 3000 + "1" + "}" * 3000],
                         ids=["arrays", "inline-tables"])
def test_nesting_thousands_deep_is_refused(tmp_path: Path, nesting: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("version = 1\n" + nesting + "\n")
    result = dry_run(path, tmp_path)
    assert_refused_up_front(result, f"{path}:2:", "nested too deeply")


@pytest.mark.parametrize("line", ["[" + ".".join(["a"] * 300_000) + "]", ".".join(["a"] * 300_000) + " = 1",
                                  "x = {" + ".".join(["a"] * 300_000) + " = 1}"], ids=["header", "key", "inline"])
def test_keys_dotted_thousands_deep_are_refused_fast(tmp_path: Path, line: str) -> None:
    """tomllib takes minutes over one key of 300,000 parts (its time grows with the square)."""
    path = tmp_path / "dotted.toml"
    path.write_text("version = 1\n" + line + "\n")
    result = run("--answers", str(path), "--dry-run", cwd=tmp_path, timeout=30)
    assert_refused_up_front(result, f"{path}:2:", "nested")


def test_a_saved_state_nested_thousands_deep_is_a_usage_error(tmp_path: Path) -> None:
    from installer.answers import load_answers
    from installer.options import RunOptions
    from installer.session import open_session
    from installer.state import StateError

    folder = tmp_path / "state" / "example.org"
    folder.mkdir(parents=True, mode=0o700)
    (folder / "state.json").write_text('{"facts": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(StateError, match="nested too deeply"):
        open_session(load_answers(existing_server_answers(tmp_path)), RunOptions(state_dir=tmp_path / "state"))


def _limit_memory() -> None:
    """Today's code reads /dev/zero until memory runs out: keep that from hurting the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_an_endless_device_as_answers_is_refused_without_reading_it(tmp_path: Path) -> None:
    result = run("--answers", "/dev/zero", "--dry-run", cwd=tmp_path, timeout=60, preexec_fn=_limit_memory)
    assert_refused_up_front(result, "/dev/zero", "not a regular file")


def test_a_fifo_as_answers_is_refused_without_waiting_on_it(tmp_path: Path) -> None:
    fifo = tmp_path / "answers.toml"
    os.mkfifo(fifo)
    result = run("--answers", str(fifo), "--dry-run", cwd=tmp_path, timeout=20)
    assert_refused_up_front(result, str(fifo), "not a regular file")


def test_an_answers_file_over_a_mebibyte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(EXAMPLE.read_text() + ("# padding\n" * 120_000))
    result = dry_run(path, tmp_path)
    assert_refused_up_front(result, str(path), "larger than")


@pytest.mark.parametrize("value", ["true", "1.0", "2"])
def test_version_must_be_the_number_1(tmp_path: Path, value: str) -> None:
    result = dry_run(answers_with(tmp_path, "version = 1", f"version = {value}"), tmp_path)
    assert_refused_up_front(result, ":6: version: must be 1")


def test_a_number_thousands_of_digits_long_in_the_answers(tmp_path: Path) -> None:
    result = dry_run(answers_with(tmp_path, "ocpus = 2", f"ocpus = {DIGITS}"), tmp_path)
    assert_refused_up_front(result, "cloud.ocpus", "thousands of digits")


@pytest.mark.parametrize("key", [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",  # the type's name, and no key after it
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsab",  # a key cut short
    "ssh-rsa AAAAB3NzaC1yc2E=",
])
def test_a_host_key_with_no_whole_key_body_is_refused(tmp_path: Path, key: str) -> None:
    answers = existing_server_answers(tmp_path).read_text().replace(HOST_KEY, key)
    path = tmp_path / "answers.toml"
    path.write_text(answers)
    result = dry_run(path, tmp_path)
    assert_refused_up_front(result, "ssh.host_key")


@pytest.mark.parametrize("url", ["https://www.example.org:99999/blog", "https://www.example.org:0/",
                                 "https://www.example.org:" + DIGITS], ids=["99999", "0", "5000-digits"])
def test_a_redirect_to_port_outside_1_to_65535_is_refused(tmp_path: Path, url: str) -> None:
    answers = answers_with(tmp_path, 'redirect_to = "https://www.example.org"', f'redirect_to = "{url}"')
    result = dry_run(answers, tmp_path)
    assert_refused_up_front(result, "domain.redirect_to", "port")


@pytest.mark.parametrize("host", ["fe80::1%$(id)", "fe80::1%eth0;reboot", "fe80::1%`id`", "fe80::1%a\\nb", "1.2.3.4%eth0"])
def test_an_ssh_host_zone_must_be_an_interface_name(tmp_path: Path, host: str) -> None:
    answers = existing_server_answers(tmp_path).read_text().replace('host = "203.0.113.7"', f'host = "{host}"')
    path = tmp_path / "answers.toml"
    path.write_text(answers)
    result = dry_run(path, tmp_path)
    assert_refused_up_front(result, "ssh.host")


def test_an_ssh_host_with_an_interface_zone_is_fine(tmp_path: Path) -> None:
    path = existing_server_answers(tmp_path, host="fe80::1%eth0")
    result = dry_run(path, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["PATH", "AWS_SECRET_ACCESS_KEY", "HOME"])
def test_a_password_variable_kept_for_something_else_is_refused(tmp_path: Path, name: str) -> None:
    """Its value would become the admin's password on the server the answers name."""
    answers = answers_with(tmp_path, 'admin_password_env = "MATRIX_ADMIN_PASSWORD"', f'admin_password_env = "{name}"')
    result = dry_run(answers, tmp_path)
    assert_refused_up_front(result, "registration.admin_password_env", "MATRIX or ADMIN")


def test_a_password_variable_that_says_what_it_is_for_is_fine(tmp_path: Path) -> None:
    answers = answers_with(tmp_path, 'admin_password_env = "MATRIX_ADMIN_PASSWORD"', 'admin_password_env = "MY_ADMIN_PW"')
    assert dry_run(answers, tmp_path).returncode == 0


def test_a_short_admin_password_is_found_before_anything_runs(tmp_path: Path) -> None:
    """Not at the admin's stage, after the VM, Docker and Synapse exist: exit 2, the variable named."""
    text = existing_server_answers(tmp_path).read_text().replace('"MATRIX_ADMIN_PASSWORD"', '"MY_ADMIN_PW"')
    path = tmp_path / "answers.toml"
    path.write_text(text)
    result = run("--answers", str(path), "--state-dir", str(tmp_path / "state"), cwd=tmp_path, env={"MY_ADMIN_PW": "s3cr"})
    assert_refused_up_front(result, "registration.admin_password_env", "$MY_ADMIN_PW", "shorter than 8 characters")
    assert "s3cr" not in result.stderr
    assert not (tmp_path / "state").exists()  # nothing ran: not even the state folder was made
    # A dry run says a real run stops there, and goes on.
    planned = dry_run(path, tmp_path, env={"MY_ADMIN_PW": "s3cr"})
    assert planned.returncode == 0, planned.stderr
    assert "warning: registration.admin_password_env: the admin password in $MY_ADMIN_PW is shorter" in planned.stdout


# --- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "named"), ids=["check", "connect-to-p1", "connect-to-p2", "dns-server", "minutes"], argvalues=[
    (["--check", f"example.org:{DIGITS}"], "--check"),
    (["--check", "example.org", "--connect-to", f"example.org:{DIGITS}:127.0.0.1:8443"], "--connect-to"),
    (["--check", "example.org", "--connect-to", f"example.org:443:127.0.0.1:{DIGITS}"], "--connect-to"),
    (["--check", "example.org", "--dns-server", f"127.0.0.1:{DIGITS}"], "--dns-server"),
    (["--check", "example.org", "--launch-retry-minutes", DIGITS], "--launch-retry-minutes"),
])
def test_numbers_thousands_of_digits_long_in_flags(args: list[str], named: str) -> None:
    assert_refused_up_front(run(*args, "--dry-run"), named)


@pytest.mark.parametrize("args", [
    ["--connect-to", "example.org:443:[fe80::1%$(id)]:8443"],
    ["--connect-to", "[fe80::1%`reboot`]:443:127.0.0.1:8443"],
    ["--connect-to", "example.org:443:[fe80::1%a\nb]:8443"],
    ["--dns-server", "fe80::1%$(id)"],
    ["--dns-server", "[fe80::1%x;y]:53"],
])
def test_zones_in_connect_to_and_dns_server_must_be_interface_names(args: list[str]) -> None:
    assert_refused_up_front(run("--check", "example.org", "--dry-run", *args), args[0])


def test_a_ca_file_that_is_a_folder_or_not_pem_is_refused_up_front(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    for ca_file in (tmp_path, not_pem):
        result = run("--check", "example.org", "--dry-run", "--ca-file", str(ca_file), cwd=tmp_path)
        assert_refused_up_front(result, "--ca-file")


def test_a_real_pem_ca_file_is_accepted(tmp_path: Path) -> None:
    import certifi

    result = run("--check", "example.org", "--dry-run", "--ca-file", certifi.where(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_empty_paths_are_said_plainly(tmp_path: Path) -> None:
    result = run("--answers", "", cwd=tmp_path)
    assert_refused_up_front(result, "--answers", "is empty")
    assert "Is a directory" not in result.stderr
    # An empty --state-dir once meant the current folder, silently.
    result = run("--answers", str(EXAMPLE), "--dry-run", "--state-dir", "", cwd=tmp_path)
    assert_refused_up_front(result, "--state-dir", "is empty")
    result = run("--check", "example.org", "--dry-run", "--report", "", cwd=tmp_path)
    assert_refused_up_front(result, "--report", "is empty")
    assert list(tmp_path.iterdir()) == []


def test_argparse_errors_are_escaped_and_short() -> None:
    result = run("--frobnicate\n\u202eforged", "x" * 10_000)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not raw_controls(result.stderr) and len(result.stderr.encode()) < 2048
