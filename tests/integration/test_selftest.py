"""The self-test script the timer runs on the host (installer/components/selftest/matrix_selftest.py),
run here against the real loopback stack (Synapse, Caddy with the installer's Caddyfile): a healthy
run records its result and posts nothing, a broken one posts its failure to the admin's "Server
notices" room (read back through the client API as the admin), and the recovery is posted too."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from installer.components import selftest
from tests.fixtures.matrix_stack import LOOPBACK, MATRIX_HOST, SERVER_NAME, free_port, lab_answers

SCRIPT = Path(selftest.__file__).with_name("matrix_selftest.py")


@pytest.fixture(scope="module")
def well_known_caddy(caddy_lab, synapse):
    """The installer's Caddyfile for well-known delegation: example.test -> matrix.example.test:443."""
    caddyfile, ports = caddy_lab.render(lab_answers(), synapse.upstream)
    return caddy_lab.start(caddyfile, ports, wait_for=(SERVER_NAME, MATRIX_HOST))


def _login(synapse, user: str, password: str) -> str:
    answer = httpx.post(f"{synapse.url}/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


@pytest.fixture(scope="module")
def notices(synapse, tmp_path_factory):
    """A bot and a "Server notices" room the admin joined, as selftest.notices makes them."""
    folder = tmp_path_factory.mktemp("selftest")
    synapse.register("matrix-selftest", "bot-password-123", admin=False)
    bot = _login(synapse, "matrix-selftest", "bot-password-123")
    admin_user, admin_password = synapse.admin
    admin = _login(synapse, admin_user, admin_password)
    room = httpx.post(f"{synapse.url}/_matrix/client/v3/createRoom", headers={"Authorization": f"Bearer {bot}"},
                      json={"name": "Server notices", "preset": "private_chat", "invite": [f"@admin:{SERVER_NAME}"]},
                      timeout=10).json()["room_id"]
    joined = httpx.post(f"{synapse.url}/_matrix/client/v3/join/{quote(room, safe='')}", json={},
                        headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert joined.status_code == 200, joined.text
    token_file = folder / "bot-token"
    token_file.write_text(bot + "\n")
    token_file.chmod(0o600)
    return folder, room, admin, token_file


def _config(folder: Path, synapse, caddy, caddy_lab, room: str, token_file: Path, *, matrix_port: int | None = None) -> Path:
    config = {
        "server_name": SERVER_NAME, "federation_host": MATRIX_HOST, "federation_port": 443,
        "well_known": f"{MATRIX_HOST}:443", "peer": None, "synapse_url": synapse.url, "room_id": room,
        "token_file": str(token_file), "state_dir": str(folder / "state"), "disks": ["/"],
        "connect_to": {f"{SERVER_NAME}:443": f"{LOOPBACK}:{caddy.https_port}",
                       f"{MATRIX_HOST}:443": f"{LOOPBACK}:{matrix_port or caddy.https_port}"},
        "ca_file": str(caddy_lab.ca_file),
    }
    path = folder / f"config-{matrix_port or 'healthy'}.json"
    path.write_text(json.dumps(config))
    return path


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), *args], capture_output=True, text=True,
                          timeout=120)
    print(done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done


def _notices(synapse, room: str, admin: str) -> list[str]:
    answer = httpx.get(f"{synapse.url}/_matrix/client/v3/rooms/{quote(room, safe='')}/messages",
                       params={"dir": "b", "limit": 50}, headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return [e["content"]["body"] for e in reversed(answer.json()["chunk"])
            if e["type"] == "m.room.message" and e["content"].get("msgtype") == "m.notice"]


def test_the_self_test_records_every_run_and_posts_failures_and_recovery(synapse, well_known_caddy, caddy_lab, notices):
    folder, room, admin, token_file = notices
    healthy = _config(folder, synapse, well_known_caddy, caddy_lab, room, token_file)
    done = _run(healthy)
    assert done.returncode == 0, done.stdout
    last = json.loads((folder / "state" / "last.json").read_text())
    names = [c["name"] for c in last["checks"]]
    at = f"{LOOPBACK}:{well_known_caddy.https_port}"
    assert names == ["well-known", f"well-known@{at}", f"tls@{at}", f"server-keys@{at}", f"federation-version@{at}",
                     "certificate-expiry", "server-health"], names
    assert last["ok"] is True and "the same keys and signatures as Synapse's own" in last["checks"][3]["detail"]
    assert _notices(synapse, room, admin) == []

    # Broken: nothing answers where the Matrix host's address points.
    broken = _config(folder, synapse, well_known_caddy, caddy_lab, room, token_file, matrix_port=free_port())
    done = _run(broken)
    assert done.returncode == 1 and "notice posted to the admin's room" in done.stdout
    (notice,) = _notices(synapse, room, admin)
    assert notice.startswith(f"Self-test of {SERVER_NAME} FAILED at ")
    assert "✗ tls@127.0.0.1:" in notice and "connection refused" in notice and "    fix: " in notice
    assert "History on the host: " in notice

    # Fixed again: the recovery is said once.
    done = _run(healthy)
    assert done.returncode == 0
    notices_now = _notices(synapse, room, admin)
    assert len(notices_now) == 2 and notices_now[1].startswith(f"Self-test of {SERVER_NAME} passes again at ")
    history = (folder / "state" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["ok"] for line in history] == [True, False, True]

    # --no-notify records and posts nothing.
    done = _run(broken, "--no-notify")
    assert done.returncode == 1 and len(_notices(synapse, room, admin)) == 2
    assert len((folder / "state" / "history.jsonl").read_text().splitlines()) == 4


def test_without_a_token_the_self_test_still_records(synapse, well_known_caddy, caddy_lab, notices, tmp_path):
    folder, room, _, _ = notices
    config = _config(tmp_path, synapse, well_known_caddy, caddy_lab, room, tmp_path / "missing-token",
                     matrix_port=free_port())
    done = _run(config)
    assert done.returncode == 1 and "notice not posted: the bot's token cannot be read" in done.stdout
    assert json.loads((tmp_path / "state" / "last.json").read_text())["ok"] is False


def test_the_self_test_config_follows_the_answers():
    from installer.components.selftest.stages import selftest_config
    from installer.engine import RunOptions, Session, Stage, StageContext
    from installer.state import RunState

    session = Session(lab_answers(), RunState(None), RunOptions(peer="other.test"))
    ctx = StageContext(session, Stage("selftest.timer", "", lambda ctx: None))
    config = selftest_config(ctx)
    assert config["federation_host"] == MATRIX_HOST and config["well_known"] == f"{MATRIX_HOST}:443"
    assert config["peer"] == "other.test" and "token" not in json.dumps({k: v for k, v in config.items() if k != "token_file"})
    session = Session(lab_answers(SERVER_NAME, SERVER_NAME, delegation="none"), RunState(None), RunOptions())
    config = selftest_config(StageContext(session, Stage("selftest.timer", "", lambda ctx: None)))
    assert config["federation_host"] == SERVER_NAME and config["federation_port"] == 8448
    assert config["well_known"] is None and config["peer"] is None


def test_a_failed_restore_test_reaches_the_admins_room_through_the_self_test(synapse, well_known_caddy, caddy_lab,
                                                                             notices, tmp_path):
    """The backups' weekly restore test fails (its result file says why): the self-test, which
    systemd starts on that failure (OnFailure), posts it to the same room as its own failures."""
    import time

    folder, room, admin, token_file = notices
    before = len(_notices(synapse, room, admin))
    now = int(time.time())
    (tmp_path / "status.json").write_text(json.dumps({"ok": True, "at": now - 600, "snapshot": "5e1f0c2a99",
                                                      "snapshot_time": now - 600, "period": 86400}))
    reason = "the restored signing key differs from the live one: other servers would not trust a server restored"
    (tmp_path / "restore-test.json").write_text(json.dumps({"ok": False, "at": now - 30, "snapshot": "5e1f0c2a99",
                                                            "reason": reason}))
    config = json.loads(_config(tmp_path, synapse, well_known_caddy, caddy_lab, room, token_file).read_text())
    config["backup"] = {"status_file": str(tmp_path / "status.json"), "restore_test_file": str(tmp_path / "restore-test.json")}
    path = tmp_path / "config-backup.json"
    path.write_text(json.dumps(config))
    done = _run(path)
    assert done.returncode == 1 and "notice posted to the admin's room" in done.stdout
    posted = _notices(synapse, room, admin)[before:]
    assert len(posted) == 1
    assert posted[0].startswith(f"Self-test of {SERVER_NAME} FAILED at ") and "(1 of " in posted[0]
    assert re.search(rf"^✗ restore-test: failed \d+ min ago: {re.escape(reason)}$", posted[0], re.M), posted[0]
    assert "fix: see `journalctl -u matrix-restore-test`" in posted[0]
    last = json.loads((tmp_path / "state" / "last.json").read_text())
    assert [(c["name"], c["ok"]) for c in last["checks"][-2:]] == [("backup-age", True), ("restore-test", False)]
