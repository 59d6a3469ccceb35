"""The lab's stand-in for `redis:7-alpine` keeps the official image's contract, the part the
installer uses: `redis-server` as CMD, a password given with --requirepass or a config file,
port 6379, `redis-cli ping` for a health check, the server as uid 999 (as in the real image). That
Synapse's processes replicate through it is tests/integration/test_workers_lab.py's part. In the
runner's Docker: no lab host needed (seconds)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from . import lab as _lab

pytestmark = pytest.mark.lab


def _config(image: str) -> dict:
    return json.loads(_lab.docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)


def _ping(name: str, password: str | None, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    env = ["-e", f"REDISCLI_AUTH={password}"] if password else []
    while True:
        out = _lab.docker("exec", *env, name, "redis-cli", "ping", check=False).stdout.strip()
        if out == "PONG" or time.monotonic() > deadline or "NOAUTH" in out:
            return out
        time.sleep(0.3)


@pytest.fixture
def running(redis_image):
    names = []

    def start(*args: str) -> str:
        name = f"matrix-installer-lab-redis-{uuid.uuid4().hex[:8]}"
        _lab.docker("run", "-d", "--name", name, "--label", f"{_lab.LABEL}.pid={__import__('os').getpid()}",
                    *args, check=True)
        names.append(name)
        return name

    yield start
    for name in names:
        _lab.docker("rm", "-f", "-v", name, check=False)


def test_redis_stand_in_has_the_official_image_settings(redis_image):
    cfg = _config(redis_image)
    assert cfg["Entrypoint"] == ["docker-entrypoint.sh"] and cfg["Cmd"] == ["redis-server"]
    assert list(cfg["ExposedPorts"]) == ["6379/tcp"] and list(cfg["Volumes"]) == ["/data"] and cfg["WorkingDir"] == "/data"
    assert cfg["Labels"]["org.opencontainers.image.version"]
    p = _lab.docker("run", "--rm", redis_image, "sh", "-c", "id redis; redis-cli --version; redis-server --version")
    assert p.stdout.startswith("uid=999(redis)"), p.stdout


def test_requirepass_on_the_command_line_and_a_health_check_with_redis_cli(running, redis_image):
    name = running(redis_image, "redis-server", "--requirepass", "lab-secret")
    assert _ping(name, "lab-secret") == "PONG"
    assert "NOAUTH" in _ping(name, None)
    # The server runs as the redis user, not root.
    status = _lab.docker("exec", name, "sh", "-c", "grep ^Uid: /proc/1/status").stdout.split()
    assert status[1] == "999"


def test_a_config_file_as_the_installer_writes_it(running, redis_image, tmp_path):
    conf = tmp_path / "redis.conf"
    conf.write_text("port 6379\nbind 0.0.0.0\nrequirepass from-a-file\nsave \"\"\nappendonly no\n")
    conf.chmod(0o600)
    import os

    os.chown(conf, 999, 0)
    name = running("-v", f"{conf}:/usr/local/etc/redis/redis.conf:ro", redis_image,
                   "redis-server", "/usr/local/etc/redis/redis.conf")
    assert _ping(name, "from-a-file") == "PONG"
