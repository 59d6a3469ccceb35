"""What each size of box gets (installer.sizing), and where it lands: Synapse's config (with a
comment saying why each key is there, kept and not repeated on a rerun), Synapse's and Postgres's
compose services, the host's size as host.ssh reads it, and the dry run's assumed size."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from installer.answers import Answers
from installer.components.synapse.config import COMMENT_MARK, edit_homeserver_config, read_setting
from installer.deployment import Deployment
from installer.host.connect import HostSize, assumed_size, parse_host_size
from installer.sizing import Sizing, complexity_error, sizing_for

ROOT = Path(__file__).resolve().parents[2]
NAMES = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")

MICRO = HostSize(1024, 1)       # VM.Standard.E2.1.Micro: 1 GB, 1 core (Always Free, x86)
FLEX = HostSize(12 * 1024, 2)   # VM.Standard.A1.Flex as the installer launches it: 12 GB, 2 OCPUs
FLEX_MAX = HostSize(24 * 1024, 4)  # the whole A1 allowance: 24 GB, 4 OCPUs
EXISTING = HostSize(3900, 2)    # an existing "4 GB" server: the kernel reports a little less


def pinned(s: Sizing) -> dict:
    return {k: v for k, v in dataclasses.asdict(s).items() if k not in ("memory_mib", "cores")}


def test_e2_micro_1gb_1core() -> None:
    assert pinned(sizing_for(MICRO)) == {
        "cache_max_mib": 128, "cache_target_mib": 64, "min_cache_ttl": "30s", "cache_factor": 0.5, "sync_cache": "30s",
        "synapse_limit_mib": 512, "presence": False, "complexity": 1.0, "remote_media_lifetime": "90d",
        "shared_buffers_mib": 64, "effective_cache_size_mib": 256, "maintenance_work_mem_mib": 32,
        "work_mem_mib": 4, "max_connections": 40, "swap_offer_mib": 2048,
    }


def test_a1_flex_12gb_2cores() -> None:
    assert pinned(sizing_for(FLEX)) == {
        "cache_max_mib": 1536, "cache_target_mib": 768, "min_cache_ttl": "30s", "cache_factor": 2.0, "sync_cache": None,
        "synapse_limit_mib": 9216, "presence": True, "complexity": None, "remote_media_lifetime": "90d",
        "shared_buffers_mib": 768, "effective_cache_size_mib": 3072, "maintenance_work_mem_mib": 256,
        "work_mem_mib": 8, "max_connections": 40, "swap_offer_mib": 0,
    }


def test_a1_flex_24gb_4cores_caps_the_caches_at_2_gib() -> None:
    assert pinned(sizing_for(FLEX_MAX)) == {
        "cache_max_mib": 2048, "cache_target_mib": 1024, "min_cache_ttl": "30s", "cache_factor": 2.0, "sync_cache": None,
        "synapse_limit_mib": 18432, "presence": True, "complexity": None, "remote_media_lifetime": "90d",
        "shared_buffers_mib": 1024, "effective_cache_size_mib": 6144, "maintenance_work_mem_mib": 256,
        "work_mem_mib": 8, "max_connections": 40, "swap_offer_mib": 0,
    }


def test_an_existing_4gb_2core_server() -> None:
    assert pinned(sizing_for(EXISTING)) == {
        "cache_max_mib": 487, "cache_target_mib": 243, "min_cache_ttl": "30s", "cache_factor": 1.0, "sync_cache": None,
        "synapse_limit_mib": 2925, "presence": True, "complexity": 10.0, "remote_media_lifetime": "90d",
        "shared_buffers_mib": 243, "effective_cache_size_mib": 975, "maintenance_work_mem_mib": 121,
        "work_mem_mib": 8, "max_connections": 40, "swap_offer_mib": 0,
    }


def test_the_lab_box_2gb_gives_synapse_1_gib_and_sqlite_leaves_postgres_room_to_synapse() -> None:
    lab = sizing_for(HostSize(2048, 2))
    assert (lab.synapse_limit_mib, lab.complexity, lab.presence, lab.swap_offer_mib) == (1024, 3.0, False, 1024)
    assert (lab.cache_factor, lab.sync_cache) == (0.5, "30s")
    # Without a database server on the box, Synapse may use what Postgres would have had.
    assert sizing_for(MICRO, postgres=False).synapse_limit_mib == 512  # still half of a small box
    assert sizing_for(EXISTING, postgres=False).synapse_limit_mib == 2925
    assert sizing_for(HostSize(300, 1)).synapse_limit_mib == 256  # never below a size Synapse starts in


def test_every_tuned_value_grows_with_the_box() -> None:
    sizes = [sizing_for(HostSize(m, 2)) for m in (512, 1024, 2048, 4096, 8192, 12288, 16384, 24576, 65536)]
    for field in ("cache_max_mib", "cache_target_mib", "synapse_limit_mib", "shared_buffers_mib", "cache_factor"):
        values = [getattr(s, field) for s in sizes]
        assert values == sorted(values), field
    limits = [s.complexity if s.complexity is not None else float("inf") for s in sizes]
    assert limits == sorted(limits)


def test_the_config_gets_each_sized_key_with_a_comment_and_a_rerun_changes_nothing() -> None:
    generated = ('# Configuration file for Synapse.\nserver_name: "example.org"\n'
                 "listeners: []\nreport_stats: false\n# vim:ft=yaml\n")
    sizing = sizing_for(MICRO)
    settings = Deployment.build(NAMES).homeserver_settings()
    edit = edit_homeserver_config(generated, NAMES, settings, new_secret=lambda: "s3cret", sizing=sizing)
    assert {"caches", "presence", "limit_remote_rooms", "media_retention"} <= set(edit.changed)
    assert read_setting(edit.text, "caches") == {
        "global_factor": 0.5, "sync_response_cache_duration": "30s",
        "cache_autotuning": {"max_cache_memory_usage": "128M", "target_cache_memory_usage": "64M", "min_cache_ttl": "30s"}}
    assert read_setting(edit.text, "presence") == {"enabled": False}
    assert read_setting(edit.text, "limit_remote_rooms") == {
        "enabled": True, "complexity": 1.0, "complexity_error": complexity_error(sizing), "admins_can_join": True}
    assert read_setting(edit.text, "media_retention") == {"remote_media_lifetime": "90d"}
    lines = edit.text.splitlines()
    for key in ("caches", "presence", "limit_remote_rooms", "media_retention"):
        at = lines.index(f"{key}:")
        assert lines[at - 1].startswith(COMMENT_MARK), key  # why it is there, right above it
    assert "min(RAM/8, 2 GiB)" in edit.text and "PYTHONMALLOC=malloc" in edit.text and "512M" in edit.text
    assert "presence off" in edit.text and "local media (your users' uploads) is kept" in edit.text
    assert "# Configuration file for Synapse." in edit.text and "# vim:ft=yaml" in edit.text  # theirs kept
    again = edit_homeserver_config(edit.text, NAMES, settings, new_secret=lambda: "other", sizing=sizing)
    assert again.changed == [] and again.text == edit.text
    # The box grew: the values and their comments follow, one comment per key.
    bigger = edit_homeserver_config(edit.text, NAMES, settings, new_secret=lambda: "other", sizing=sizing_for(FLEX))
    assert "caches" in bigger.changed and "limit_remote_rooms" in bigger.changed
    assert bigger.text.count(f"{COMMENT_MARK}caches sized") == 1 and "1536M" in bigger.text
    assert read_setting(bigger.text, "limit_remote_rooms") == {"enabled": False}
    assert read_setting(bigger.text, "presence") == {"enabled": True}
    # Without a size (the benchmark's seed, or the plan before the run), Synapse's defaults stay.
    untuned = edit_homeserver_config(generated, NAMES, settings, new_secret=lambda: "s3cret")
    assert "caches" not in untuned.text and COMMENT_MARK not in untuned.text


def test_the_services_are_sized_only_once_the_host_is_known() -> None:
    d = Deployment.build(NAMES)
    plain = {s.name: s.settings for s in d.services}
    assert "mem_limit" not in plain["synapse"] and "command" not in plain["postgres"]
    sized = d.sized(MICRO)
    assert sized is not d and sized.size == MICRO and d.sized(None) is d and sized.sized(MICRO) is sized
    services = {s.name: s.settings for s in sized.services}
    assert services["synapse"]["mem_limit"] == "512m" and services["synapse"]["environment"] == {"PYTHONMALLOC": "malloc"}
    assert services["synapse"]["oom_score_adj"] == 300
    assert services["postgres"]["command"] == [
        "postgres", "-c", "shared_buffers=64MB", "-c", "effective_cache_size=256MB", "-c", "maintenance_work_mem=32MB",
        "-c", "work_mem=4MB", "-c", "max_connections=40"]
    compose = sized.compose_file()
    assert "mem_limit: \"512m\"" in compose and "PYTHONMALLOC: \"malloc\"" in compose
    # SQLite: no database server shares the box.
    sqlite = Deployment.build(NAMES.replace("database", engine="sqlite")).sized(EXISTING)
    assert sqlite.sizing == sizing_for(EXISTING, postgres=False)
    # The benchmark's seed: sizing off, Synapse's generated defaults.
    seed = d.sized(dataclasses.replace(MICRO, tuned=False))
    assert seed.sizing is None and "mem_limit" not in seed.service("synapse").settings


def test_host_ssh_reads_the_size_from_meminfo_nproc_and_df() -> None:
    out = ("MemTotal:        1003520 kB\nSwapTotal:       2097148 kB\nCORES=2\n"
           "/dev/sda1        48254668  3623212  44614800       8% /\n")
    assert parse_host_size(out) == HostSize(980, 2, 2047, 47123, 43569)
    assert "1.0 GiB memory, 2 cores, 2.0 GiB swap, 43 of 46 GiB disk free" in parse_host_size(out).describe()
    assert parse_host_size("MemTotal: 2097152 kB\nSwapTotal: 0 kB\nCORES=1\n").describe() == "2.0 GiB memory, 1 core, no swap"
    with pytest.raises(ValueError):
        parse_host_size("no such file")


def test_the_dry_run_assumes_the_shape_or_an_existing_4gb_server_and_says_assumed() -> None:
    micro = Answers().replace("cloud", provider="oci", shape="VM.Standard.E2.1.Micro")
    assert (assumed_size(micro).memory_mib, assumed_size(micro).cores, assumed_size(micro).assumed) == (1024, 1, True)
    flex = Answers().replace("cloud", provider="oci", shape="VM.Standard.A1.Flex", ocpus=4, memory_gb=24)
    assert (assumed_size(flex).memory_mib, assumed_size(flex).cores) == (24 * 1024, 4)
    existing = Answers().replace("cloud", provider="existing")
    assert (assumed_size(existing).memory_mib, assumed_size(existing).cores) == (4096, 2)


def test_the_dry_run_prints_the_assumed_size_and_the_sized_files(tmp_path: Path) -> None:
    answers = tmp_path / "a.toml"
    answers.write_text("""version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
[cloud]
provider = "existing"
[ssh]
host = "203.0.113.7"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"
""")
    done = subprocess.run([sys.executable, "-m", "installer", "--answers", str(answers), "--dry-run",
                           "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "assumed (dry run): host size: 4.0 GiB memory, 2 cores" in out
    assert "mem_limit: \"3072m\"" in out  # 4 GiB exactly: 3/4 of it (below 4096 - 512 - 256 - 128)
    assert "shared_buffers=256MB" in out
