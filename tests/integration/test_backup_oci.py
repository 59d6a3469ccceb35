"""Stage backup.bucket on Oracle Cloud, through the real oci SDK against the OCI emulator: the
bucket and a Customer Secret Key made once, kept in the state (0600), never shown; reruns make
nothing; a key deleted in the console is replaced; the two-keys limit is said before a call fails;
the dry run names every call and no secret."""

from __future__ import annotations

import json
import os
import stat

from installer.components.backup import BackupAccess, OCI_KEY_FACT, OCI_SECRET_FACT
from installer.events import Status
from tests.oci_emulator.fixtures import USER, EmulatorHandle
from tests.oci_emulator.harness import Runner

STAGES = ("backup.bucket",)
WRITES = ("create_bucket", "create_customer_secret_key")


def writes(emulator: EmulatorHandle) -> list[str]:
    return [op for op in emulator.state.ops() if op in WRITES]


async def test_the_bucket_and_its_key_are_made_once_and_the_secret_only_kept(oci_emulator: EmulatorHandle,
                                                                               stage_runner: Runner, oci_answers) -> None:
    emu = oci_emulator.state
    emu.next_secret_keys.append(("a" * 40, "SECRETSECRETSECRETSECRETSECRETSECRET1234567="))
    run = await stage_runner(oci_answers, names=STAGES)
    assert run.result.ok, run.all_text()
    assert run.status("backup.bucket") is Status.DONE
    assert writes(oci_emulator) == ["create_bucket", "create_customer_secret_key"]
    bucket = emu.store["buckets"]["matrix-backups"]
    assert bucket["compartmentId"] == oci_emulator.tenancy and bucket["publicAccessType"] == "NoPublicAccess"
    (key,) = emu.store["customerSecretKeys"].values()
    assert key["userId"] == USER and key["displayName"] == "matrix-installer backups (example.org)"
    found = run.session.outputs[BackupAccess]
    assert found.endpoint == "https://emulatorns.compat.objectstorage.us-phoenix-1.oraclecloud.com"
    assert (found.bucket, found.region, found.access_key, found.fresh) == ("matrix-backups", "us-phoenix-1", "a" * 40, True)
    assert found.repository == f"s3:{found.endpoint}/matrix-backups"
    # The secret: in the state (0600) and nowhere the user or a log sees it.
    state_path = stage_runner.state_dir / "example.org" / "state.json"
    facts = json.loads(state_path.read_text())["facts"]
    assert facts[OCI_KEY_FACT] == "a" * 40 and facts[OCI_SECRET_FACT] == key["key"]
    assert stat.S_IMODE(os.stat(state_path).st_mode) == 0o600
    assert key["key"] not in run.all_text() and key["key"] not in repr(found)
    calls = run.logs("backup.bucket", "cloud")
    assert calls[:3] == ["object_storage.get_namespace()", "object_storage.get_bucket(namespace=emulatorns, bucket=matrix-backups)",
                         f"object_storage.create_bucket(namespace=emulatorns, name=matrix-backups, compartment={oci_emulator.tenancy}, "
                         "public_access=NoPublicAccess)"]

    rerun = await stage_runner(oci_answers, names=STAGES)
    assert rerun.result.ok, rerun.all_text()
    assert rerun.status("backup.bucket") is Status.UNCHANGED
    assert writes(oci_emulator) == ["create_bucket", "create_customer_secret_key"]  # nothing new
    again = rerun.session.outputs[BackupAccess]
    assert (again.access_key, again.secret_key, again.fresh) == (found.access_key, found.secret_key, False)


async def test_an_upgrade_uses_what_the_install_made_without_asking_oracle(oci_emulator: EmulatorHandle,
                                                                         stage_runner: Runner, oci_answers) -> None:
    first = await stage_runner(oci_answers, names=STAGES)
    assert first.result.ok, first.all_text()
    asked = len(oci_emulator.state.requests)
    from installer.plan import plan_for
    from installer.engine import Engine, Session
    from installer.options import RunOptions
    from installer.state import RunState

    state = RunState.load(stage_runner.state_dir, "example.org")
    session = Session(oci_answers, state, RunOptions(mode="upgrade"))
    stages = [s for s in plan_for("upgrade", oci_answers, {"homeserver.database": "postgres"}) if s.name in STAGES]
    result = await Engine(stages, session).run()
    assert result.ok
    assert len(oci_emulator.state.requests) == asked  # an upgrade needs SSH only
    found = session.outputs[BackupAccess]
    assert found.endpoint == "https://emulatorns.compat.objectstorage.us-phoenix-1.oraclecloud.com"
    assert found.secret_key == first.state.facts[OCI_SECRET_FACT]


async def test_a_key_deleted_in_the_console_is_replaced(oci_emulator: EmulatorHandle, stage_runner: Runner, oci_answers) -> None:
    first = await stage_runner(oci_answers, names=STAGES)
    assert first.result.ok, first.all_text()
    emu = oci_emulator.state
    emu.store["customerSecretKeys"].clear()
    run = await stage_runner(oci_answers, names=STAGES)
    assert run.result.ok, run.all_text()
    assert run.status("backup.bucket") is Status.DONE
    assert writes(oci_emulator) == ["create_bucket", "create_customer_secret_key", "create_customer_secret_key"]
    assert "the Customer Secret Key the state names is gone or inactive: making a new one" in run.logs("backup.bucket")
    assert run.state.facts[OCI_KEY_FACT] == emu.s3_keys[-1][0]


async def test_two_keys_already_is_said_before_any_key_is_asked_for(oci_emulator: EmulatorHandle, stage_runner: Runner,
                                                                     oci_answers) -> None:
    emu = oci_emulator.state
    for name in ("laptop", "ci"):
        emu.create_customer_secret_key(params={"user": USER}, body={"displayName": name})
    run = await stage_runner(oci_answers, names=STAGES)
    assert not run.result.ok
    finished = run.finished("backup.bucket")
    assert finished.error == "your Oracle Cloud user already has 2 Customer Secret Keys, the most Oracle allows"
    assert "console: your profile > Customer secret keys" in finished.hint
    assert "create_customer_secret_key" not in emu.ops()
    assert OCI_KEY_FACT not in run.state.facts


async def test_a_refused_key_limit_from_oracle_is_said_in_words(oci_emulator: EmulatorHandle, stage_runner: Runner,
                                                                 oci_answers) -> None:
    oci_emulator.inject("create_customer_secret_key", 400, "LimitExceeded", "limit of customer secret keys reached")
    run = await stage_runner(oci_answers, names=STAGES)
    finished = run.finished("backup.bucket")
    assert finished.error == "Oracle Cloud refused another Customer Secret Key: limit of customer secret keys reached"


async def test_the_dry_run_names_every_bucket_call_and_no_secret(oci_emulator: EmulatorHandle, stage_runner: Runner,
                                                                 oci_answers) -> None:
    run = await stage_runner(oci_answers, names=STAGES, dry_run=True)
    assert run.result.ok, run.all_text()
    assert run.logs("backup.bucket", "cloud") == [
        "object_storage.get_namespace()",
        "object_storage.get_bucket(namespace=DRYRUN-NAMESPACE, bucket=matrix-backups)",
        f"object_storage.create_bucket(namespace=DRYRUN-NAMESPACE, name=matrix-backups, compartment={oci_emulator.tenancy}, "
        "public_access=NoPublicAccess)",
        f"identity.list_customer_secret_keys(user={USER})",
        f"identity.create_customer_secret_key(user={USER}, display_name=matrix-installer backups (example.org))",
    ]
    assert oci_emulator.state.requests == []  # nothing contacted
    assert "DRY-RUN-SECRET" not in run.all_text()
