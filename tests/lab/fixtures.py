"""pytest plugin for the lab host (tests/lab): the `lab` marker and session fixtures.

List it in the top-level conftest: `pytest_plugins = ["tests.lab.fixtures"]` (tests/lab/conftest.py
registers it by itself for runs of tests/lab alone). Lab tests are skipped only by choice
(`-m "not lab"`): when Docker or the build fails, the fixtures fail with the reason.

Fixtures (session scope):
  lab_docker     a Docker engine on the runner (started by hand when none answers, stopped at
                 the end if it was started here)
  lab_host       a running LabHost (tests/lab/lab.py): ssh_port, http_port, https_port,
                 fed_port, user, private_key_path, host_key, exec(), load_image(), ...
  synapse_image  the tag of the lab's stand-in for matrixdotorg/synapse (Synapse 1.163.2)
  postgres_image the tag of the lab's stand-in for postgres:17-alpine
  redis_image    the tag of the lab's stand-in for redis:7-alpine
"""

from __future__ import annotations

import subprocess

import pytest

from . import lab as _lab


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: needs the lab host (a systemd Debian machine in Docker, built by tests/lab)"
    )


def _fail(exc: BaseException):
    pytest.fail(f"the lab could not be set up: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def lab_docker():
    """A Docker engine on the runner; yields True when this session started dockerd."""
    try:
        started = _lab.ensure_docker_engine()
        _lab.remove_stale_containers()
    except _lab.LabError as exc:
        _fail(exc)
    try:
        yield started
    finally:
        _lab.stop_docker_engine()


@pytest.fixture(scope="session")
def lab_host_image(lab_docker):
    """Tag of the lab host's image (built or reused); start more hosts with
    `tests.lab.lab.LabHost.start(lab_host_image, lab_session_key)` (and `.stop()` them)."""
    try:
        return _lab.build_host_image()
    except _lab.LabError as exc:
        _fail(exc)


@pytest.fixture(scope="session")
def lab_session_key(tmp_path_factory):
    """The session's SSH key (ed25519, mode 0600): returns the private key's path."""
    return _lab.session_key(tmp_path_factory.mktemp("lab-ssh"))


@pytest.fixture(scope="session")
def lab_host(lab_host_image, lab_session_key):
    """One lab host for the session, removed at the end (also when tests fail)."""
    try:
        host = _lab.LabHost.start(lab_host_image, lab_session_key)
    except _lab.LabError as exc:
        _fail(exc)
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session")
def synapse_image(lab_docker):
    """Tag of the stand-in Synapse image (`matrix-installer-lab/synapse:1.163.2-<hash>`) in the
    runner's Docker. Load it into the lab host with `lab_host.load_image(tag, as_tag=...)`;
    build other versions with `tests.lab.lab.build_synapse_image(version=..., broken=...)`."""
    try:
        return _lab.build_synapse_image()
    except _lab.LabError as exc:
        _fail(exc)


@pytest.fixture(scope="session")
def postgres_image(lab_docker):
    """Tag of the stand-in `postgres:17-alpine` (`matrix-installer-lab/postgres:17-<hash>`) in the
    runner's Docker. Load it into a lab host under the real name with
    `host.load_image(postgres_image, as_tag=tests.lab.lab.POSTGRES_IMAGE)` (or
    `scenarios.ready_host(..., postgres_image=postgres_image)`); in the runner's shared engine
    use the lab tag itself."""
    try:
        return _lab.build_postgres_image()
    except _lab.LabError as exc:
        _fail(exc)


@pytest.fixture(scope="session")
def redis_image(lab_docker):
    """Tag of the stand-in `redis:7-alpine` (`matrix-installer-lab/redis:<hash>`) in the runner's
    Docker; load it into a lab host as `tests.lab.lab.REDIS_IMAGE` (or `scenarios.ready_host(...,
    redis_image=redis_image)`)."""
    try:
        return _lab.build_redis_image()
    except _lab.LabError as exc:
        _fail(exc)


@pytest.fixture
def lab_dns():
    """dnsmasq answering every name under example.test with 127.0.0.1 (where the lab's ports are
    published); yields its port."""
    import shutil
    import socket
    import time

    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([dnsmasq, "--no-daemon", "--no-resolv", "--no-hosts", f"--port={port}",
                             "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=",
                             "--local=/example.test/", "--address=/example.test/127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
