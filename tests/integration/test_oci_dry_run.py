"""The dry-run plan: every cloud call in order, nothing contacted, no config file needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from installer.events import Status
from tests.oci_emulator.harness import WITH_DNS, Runner, make_answers


async def test_dry_run_lists_the_cloud_calls_in_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MATRIX_INSTALLER_OCI_ENDPOINT", "http://127.0.0.1:9")  # would fail if contacted
    answers = make_answers(str(tmp_path / "no-such-oci-config"), tmp_path / "ssh" / "id_ed25519")
    run = await Runner(tmp_path / "state")(answers, names=WITH_DNS, dry_run=True)
    assert run.result.ok, run.all_text()
    assert all(run.status(s) is Status.PLANNED for s in WITH_DNS)
    calls = [line.split("(")[0] for line in run.logs(kind="cloud")]
    assert calls == [
        "network.list_vcns", "network.create_vcn", "network.list_internet_gateways", "network.create_internet_gateway",
        "network.get_route_table", "network.update_route_table", "network.list_subnets", "network.create_subnet",
        "network.get_security_list", "network.update_security_list",
        "identity.list_availability_domains", "compute.list_shapes", "compute.list_shapes", "compute.list_shapes",
        "compute.list_instances", "compute.list_images", "compute.launch_instance",
        "compute.get_instance", "compute.list_vnic_attachments", "network.get_vnic",
        "dns.list_zones", "dns.list_zones",
    ]
    launch = next(line for line in run.logs(kind="cloud") if line.startswith("compute.launch_instance"))
    assert "shape=VM.Standard.A1.Flex, ocpus=2, memory_gb=12" in launch
    assert "matrix.example.org. 300 IN A 203.0.113.10" in "\n".join(run.logs("dns.records"))
    assert "PRIVATE KEY" not in run.all_text()
    # Left out, and said so: the cloud-init user data holds the VM's host private key.
    assert any(line.startswith("cloud-init user data:") and "not shown: it holds the host's private key" in line
               for line in run.logs("cloud.instance", kind="file"))
    assert not (tmp_path / "state").exists()


def test_importing_the_stages_does_not_import_the_sdk() -> None:
    code = ("import sys, installer.cloud, installer.cloud.config, installer.providers.oci.stages, installer.components.dns.stages; "
            "sys.exit(1 if 'oci' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0
