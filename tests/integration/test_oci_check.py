"""`matrix-installer --check SERVER_NAME` on an Oracle Cloud deployment: the instance's lifecycle
state beside the federation test, and never a failure of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from installer.answers import save_answers
from installer.discovery import ANSWERS_FILE
from installer.events import Status
from tests.oci_emulator.dns_server import DnsServer
from tests.oci_emulator.fixtures import EmulatorHandle
from tests.oci_emulator.harness import Runner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()  # knows no names: the federation test fails fast, as for a server that is down
    yield server
    server.stop()


def check(state_dir: Path, dns: DnsServer, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "installer", "--check", "example.org", "--state-dir", str(state_dir),
         "--dns-server", f"{dns.address[0]}:{dns.address[1]}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **env},
    )


@pytest.fixture
async def deployed(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> str:
    """An instance launched through the emulator, with its state and answers saved as a real run leaves them."""
    run = await stage_runner(oci_answers)
    assert run.status("cloud.instance") is Status.DONE, run.all_text()
    save_answers(oci_answers, stage_runner.state_dir / "example.org" / ANSWERS_FILE)
    return str(run.state.facts["cloud.instance_id"])


def oracle_lines(out: str) -> list[str]:
    return [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("federation.check") and "Oracle Cloud" in line]


async def test_check_reports_the_instances_lifecycle_state(oci_emulator: EmulatorHandle, stage_runner: Runner, deployed: str,
                                                           dns_server: DnsServer) -> None:
    result = check(stage_runner.state_dir, dns_server, oci_emulator.env)
    assert result.returncode == 1, result.stdout + result.stderr  # the federation test fails: nothing answers in DNS
    short = f"instance…{deployed[-8:]}"
    assert oracle_lines(result.stdout) == [f"Oracle Cloud instance matrix ({short}): RUNNING"]
    assert f"federation.check     cloud: compute.get_instance({deployed})" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


async def test_a_stopped_instance_is_explained(oci_emulator: EmulatorHandle, stage_runner: Runner, deployed: str,
                                               dns_server: DnsServer) -> None:
    oci_emulator.state.set_instance_state(deployed, "STOPPED")
    result = check(stage_runner.state_dir, dns_server, oci_emulator.env)
    assert f"Oracle Cloud instance matrix (instance…{deployed[-8:]}): STOPPED" in result.stdout
    assert ("it is not running: Oracle stops Always Free instances that stay idle for 7 days; start it "
            "(console: Compute > Instances > Start), then run the check again") in result.stdout


async def test_oracle_out_of_reach_is_a_note_not_a_failure(stage_runner: Runner, deployed: str, dns_server: DnsServer) -> None:
    result = check(stage_runner.state_dir, dns_server, {"MATRIX_INSTALLER_OCI_ENDPOINT": "http://127.0.0.1:9"})
    assert oracle_lines(result.stdout) == [
        f"Oracle Cloud could not be asked about instance instance…{deployed[-8:]} (connection refused); its state is not known"]
    assert "federation test for example.org: FAILED" in result.stdout  # the check itself still ran
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


async def test_check_works_without_any_oci_config(oci_emulator: EmulatorHandle, stage_runner: Runner, deployed: str,
                                                  dns_server: DnsServer) -> None:
    Path(oci_emulator.config_path).unlink()
    asked = oci_emulator.state.count(op="get_instance")
    result = check(stage_runner.state_dir, dns_server, oci_emulator.env)
    (line,) = oracle_lines(result.stdout)
    assert line.startswith(f"Oracle Cloud: the state of instance instance…{deployed[-8:]} is not known: {oci_emulator.config_path}: not found")
    assert "federation test for example.org: FAILED" in result.stdout and "Traceback" not in result.stderr
    assert oci_emulator.state.count(op="get_instance") == asked


async def test_a_dry_run_check_shows_the_call_and_makes_none(oci_emulator: EmulatorHandle, stage_runner: Runner, deployed: str,
                                                             dns_server: DnsServer) -> None:
    asked = oci_emulator.state.count(op="get_instance")
    result = subprocess.run([sys.executable, "-m", "installer", "--check", "example.org", "--dry-run", "--state-dir",
                             str(stage_runner.state_dir)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, **oci_emulator.env})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"cloud: compute.get_instance({deployed})" in result.stdout
    assert oci_emulator.state.count(op="get_instance") == asked


def test_check_without_a_deployment_says_nothing_of_oracle(tmp_path: Path, dns_server: DnsServer) -> None:
    result = check(tmp_path / "no-state", dns_server, {"MATRIX_INSTALLER_OCI_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode == 1 and oracle_lines(result.stdout) == []
    assert "✗ dns  example.org does not exist in DNS (NXDOMAIN)" in result.stdout


async def test_an_instance_oracle_does_not_know_is_named_as_such(oci_emulator: EmulatorHandle, stage_runner: Runner, deployed: str,
                                                                 dns_server: DnsServer) -> None:
    oci_emulator.state.store["instances"].clear()
    result = check(stage_runner.state_dir, dns_server, oci_emulator.env)
    assert oracle_lines(result.stdout) == [
        f"Oracle Cloud does not know instance instance…{deployed[-8:]}: it was terminated long ago, or profile [DEFAULT] "
        "points at another tenancy or region"]
