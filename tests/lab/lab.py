"""The lab host: a real systemd Debian machine in Docker for the installer's SSH stages.

Everything here runs on the test runner as root, with plain `subprocess`:

- `ensure_docker_engine()` starts `dockerd` by hand when no engine answers (and
  `stop_docker_engine()` stops it again, only if this process started it);
- `build_host_image()` builds (or reuses) the lab host's image: Debian trixie minbase with
  systemd, sshd, sudo, an `ubuntu` user and Oracle's default Ubuntu iptables rules;
- `build_synapse_image()` builds (or reuses) the lab's stand-in for `matrixdotorg/synapse`;
- `build_postgres_image()` builds (or reuses) the lab's stand-in for `postgres:17-alpine`;
- `LabHost.start()` boots a container from the host image, publishing 22/80/443/8448 on
  127.0.0.1 and authorizing a session key for `ubuntu`.

Builds are cached: root filesystem archives under CACHE_DIR (keyed by a hash of the build
scripts and their inputs), Docker images under tags carrying the same hash, so that checkouts
with different build scripts share one engine without replacing each other's images. What no
session used for KEEP_DAYS is pruned. See README.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE_DIR = Path("/var/cache/matrix-installer-lab")
CACHE_DIR = Path(os.environ.get("MATRIX_INSTALLER_LAB_CACHE", DEFAULT_CACHE_DIR))
# The engine is one per machine (dockerd's pidfile, DOCKERD_PIDFILE): so are the locks its users
# hold, whatever cache they build into (a session with another MATRIX_INSTALLER_LAB_CACHE must
# not think it is alone and stop the engine under the others).
ENGINE_LOCK_DIR = DEFAULT_CACHE_DIR
MIRROR = os.environ.get("MATRIX_INSTALLER_LAB_MIRROR", "http://deb.debian.org/debian")
SUITE = "trixie"

HOST_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "iptables", "iproute2",
    "ca-certificates", "curl", "python3", "gnupg",
)
# Installed by build-host.sh after preseeding debconf (they ask a question).
HOST_PACKAGES_LATER = ("iptables-persistent", "netfilter-persistent")
HOST_REPO = "matrix-installer-lab/host"

# The root filesystem the stand-in images start from (build-base.sh), made once and unpacked.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "curl")

SYNAPSE_VERSION = "1.163.2"
SYNAPSE_REPO = "matrix-installer-lab/synapse"
SYNAPSE_BASE_PACKAGES = BASE_PACKAGES  # the former name
# The real image's psycopg2 is compiled against libpq; the lab's is this wheel (same module).
PSYCOPG2_VERSION = "2.9.13"

POSTGRES_MAJOR = "17"
POSTGRES_REPO = "matrix-installer-lab/postgres"
# The image the installer deploys; the lab loads its stand-in into lab hosts under this name.
POSTGRES_IMAGE = f"postgres:{POSTGRES_MAJOR}-alpine"

REDIS_REPO = "matrix-installer-lab/redis"
# The image the installer deploys for Synapse's workers; the lab loads its stand-in under this name.
REDIS_IMAGE = "redis:7-alpine"

# Lab images and cache archives no test session used for this many days are pruned after the
# next build (0: never).
KEEP_DAYS = float(os.environ.get("MATRIX_INSTALLER_LAB_KEEP_DAYS", "7"))

LABEL = "matrix-installer-lab"
DOCKERD_PIDFILE = Path("/run/matrix-installer-lab/dockerd.pid")
DOCKERD_LOG = CACHE_DIR / "dockerd.log"

# The `docker run` flags that boot systemd as PID 1 on these machines (`--privileged` fails:
# one capability is not available here).
SYSTEMD_RUN_FLAGS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
    # systemd's clean shutdown signal (`docker import` cannot set STOPSIGNAL on the image).
    "--stop-signal", "SIGRTMIN+3",
)
LAB_PORTS = {"ssh_port": 22, "http_port": 80, "https_port": 443, "fed_port": 8448}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabError(RuntimeError):
    """The lab could not be set up: the message says what to do."""


def _run(args, *, check=True, timeout=None, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    proc = subprocess.run(list(args), timeout=timeout, **kw)
    if check and proc.returncode != 0:
        out = (proc.stdout or "") if isinstance(proc.stdout, str) else ""
        err = (proc.stderr or "") if isinstance(proc.stderr, str) else ""
        raise LabError(
            f"command failed ({proc.returncode}): {' '.join(map(str, args))}\n"
            f"{out[-3000:]}{err[-3000:]}"
        )
    return proc


def docker(*args, check=True, timeout=300, **kw) -> subprocess.CompletedProcess:
    return _run(("docker", *args), check=check, timeout=timeout, **kw)


# --------------------------------------------------------------------------- Docker engine

_started_dockerd: subprocess.Popen | None = None
_engine_lock = None  # shared flock on ENGINE_LOCK_DIR/engine.lock while this process uses the engine


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _lab_dockerd_pid() -> int | None:
    """The pid of a dockerd started by the lab (this or another test session), if it runs."""
    try:
        pid = int(DOCKERD_PIDFILE.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "dockerd" else None


def ensure_docker_engine(timeout: float = 90) -> bool:
    """Make sure a Docker engine answers; start `dockerd` by hand if none does.

    Returns True when this call started it. Holds a shared lock on ENGINE_LOCK_DIR/engine.lock until
    stop_docker_engine(), so that concurrent test sessions on this machine share one dockerd
    and only the last one leaving stops it. Raises LabError (never skips) when no engine can
    be had.
    """
    global _started_dockerd, _engine_lock
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    ENGINE_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    if _engine_lock is None:
        _engine_lock = open(ENGINE_LOCK_DIR / "engine.lock", "w")
        fcntl.flock(_engine_lock, fcntl.LOCK_SH)
    if _engine_answers():
        return False
    dockerd = shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.path.exists(p)), None
    )
    if dockerd is None or shutil.which("docker") is None:
        raise LabError(
            "No Docker engine answers and dockerd/docker is not installed: "
            "run tests/lab/setup-host.sh as root first (or deselect with -m 'not lab')."
        )
    if os.geteuid() != 0:
        raise LabError("No Docker engine answers and starting dockerd needs root.")
    DOCKERD_PIDFILE.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(ENGINE_LOCK_DIR):  # two sessions must not both start one
        if _engine_answers():
            return False
        log = open(DOCKERD_LOG, "ab")
        proc = subprocess.Popen(
            [dockerd, "--pidfile", str(DOCKERD_PIDFILE)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(
                    f"dockerd exited with {proc.returncode} at start; see {DOCKERD_LOG}:\n"
                    + _tail(DOCKERD_LOG)
                )
            if _engine_answers():
                _started_dockerd = proc
                return True
            time.sleep(0.5)
        proc.terminate()
    raise LabError(f"dockerd did not answer within {timeout:.0f} s; see {DOCKERD_LOG}:\n" + _tail(DOCKERD_LOG))


def stop_docker_engine(timeout: float = 30) -> None:
    """Stop the dockerd the lab started (never an engine started otherwise), unless another
    test session still uses it: the last session to leave stops it."""
    global _started_dockerd, _engine_lock
    if _engine_lock is None:
        return
    lock, _engine_lock = _engine_lock, None
    try:
        fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another session holds the engine
        pid = _lab_dockerd_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _lab_dockerd_pid() == pid and time.monotonic() < deadline:
            if _started_dockerd is not None:
                _started_dockerd.poll()  # reap our child
            time.sleep(0.2)
        if _lab_dockerd_pid() == pid:
            os.kill(pid, signal.SIGKILL)
        if _started_dockerd is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                _started_dockerd.wait(10)
    finally:
        _started_dockerd = None
        lock.close()


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- images
#
# Every image tag carries a hash of everything the image is made from (build scripts, entrypoint,
# package lists, image settings), so checkouts with different build scripts sharing this
# machine's Docker engine and cache never replace each other's images. Using an image records
# the use (a stamp under CACHE_DIR/used); what no checkout used for KEEP_DAYS is pruned after
# the next build. Archives and images made otherwise (older versions of this file) are left alone.

def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=30).returncode == 0


@contextlib.contextmanager
def _build_lock(directory: Path | None = None):
    """One build at a time on this machine (two test sessions may start together)."""
    directory = directory or CACHE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_build(script: Path, env: dict, log: Path, timeout: float = 1800) -> None:
    if shutil.which("debootstrap") is None and not os.path.exists("/usr/sbin/debootstrap"):
        raise LabError("debootstrap is not installed: run tests/lab/setup-host.sh as root first.")
    full_env = dict(os.environ)
    full_env["PATH"] = full_env.get("PATH", "") + ":/usr/sbin:/sbin"
    full_env.update(env)
    with open(log, "wb") as out:
        # nice: the runner is shared (2 cores) with other test sessions.
        proc = subprocess.run(
            ["nice", "-n", "10", "sh", str(script)], env=full_env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
        )
    if proc.returncode != 0:
        raise LabError(f"{script.name} failed ({proc.returncode}); see {log}:\n" + _tail(log, 40))


USED_DIR = CACHE_DIR / "used"


def _mark_used(tag: str, *files: str) -> None:
    """Record that `tag` (and the cache files it is made from) was used now."""
    USED_DIR.mkdir(parents=True, exist_ok=True)
    stamp = USED_DIR / (re.sub(r"[^A-Za-z0-9_.-]", "_", tag) + ".json")
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"tag": tag, "files": sorted(files)}))
    os.replace(tmp, stamp)
    for name in files:
        with contextlib.suppress(OSError):
            os.utime(CACHE_DIR / name)


def prune_unused(days: float | None = None) -> list[str]:
    """Remove the lab images, archives and logs no test session used for `days` (default
    KEEP_DAYS; 0 or less: never). An image a container still uses stays. Returns what went."""
    days = KEEP_DAYS if days is None else days
    if days <= 0 or not USED_DIR.is_dir():
        return []
    cutoff = time.time() - days * 86400
    stamps = []
    for path in USED_DIR.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            stamps.append((path, json.loads(path.read_text()), path.stat().st_mtime))
    fresh = {name for _, s, mtime in stamps if mtime >= cutoff for name in s.get("files", ())}
    gone = []
    for path, s, mtime in stamps:
        if mtime >= cutoff:
            continue
        tag = s.get("tag", "")
        if tag and image_exists(tag):
            if docker("image", "rm", tag, check=False, timeout=120).returncode != 0:
                continue  # in use: keep it and its record
            gone.append(tag)
        for name in s.get("files", ()):
            if name not in fresh and (CACHE_DIR / name).exists():
                with contextlib.suppress(OSError):
                    (CACHE_DIR / name).unlink()
                    gone.append(name)
        with contextlib.suppress(OSError):
            path.unlink()
    return gone


def _apply_import_changes(changes: list[str]) -> list[str]:
    args = []
    for c in changes:
        args += ["--change", c]
    return args


def _load_rootfs(tar: Path, tag: str, config: dict) -> None:
    """Make image `tag` from a root filesystem archive with an image configuration of our own
    (`docker load` of a one-layer image), for settings `docker import --change` refuses, such
    as STOPSIGNAL. `config` is the image's "config" object (Env, Entrypoint, Cmd, ...)."""
    import tarfile

    h = hashlib.sha256()
    with open(tar, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    diff_id = h.hexdigest()
    arch = docker("version", "--format", "{{.Server.Arch}}", timeout=30).stdout.strip() or "amd64"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tar.stat().st_mtime))
    image_config = json.dumps({
        "architecture": arch, "os": "linux", "created": created, "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": created, "created_by": f"matrix-installer lab: {tar.name}"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(image_config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()

    def member(name: str, data: bytes):
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), int(time.time())
        return info, io.BytesIO(data)

    with tempfile.TemporaryFile() as output:
        load = subprocess.Popen(["docker", "load"], stdin=subprocess.PIPE,
                                stdout=output, stderr=subprocess.STDOUT)
        try:
            with tarfile.open(fileobj=load.stdin, mode="w|") as out:
                out.addfile(*member(config_name, image_config))
                out.add(str(tar), arcname=f"{diff_id}/layer.tar")
                out.addfile(*member("manifest.json", manifest))
        except BrokenPipeError:
            pass  # docker load gave up: its output says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                load.stdin.close()
        rc = load.wait(600)
        output.seek(0)
        said = output.read().decode(errors="replace")
    if rc != 0:
        raise LabError(f"docker load of {tar.name} as {tag} failed ({rc}): {said}")


# -- the lab host

def host_image_tag() -> str:
    script = (HERE / "build-host.sh").read_bytes()
    return f"{HOST_REPO}:{_hash(script, SUITE, ','.join(HOST_PACKAGES), ','.join(HOST_PACKAGES_LATER))}"


def build_host_image() -> str:
    """Build (or reuse) the lab host's image; returns its tag `matrix-installer-lab/host:<hash>`."""
    tag = host_image_tag()
    key = tag.split(":", 1)[1]
    tar = CACHE_DIR / f"host-{key}.tar"
    _mark_used(tag, tar.name, f"host-{key}.log")
    if image_exists(tag):
        return tag
    built = False
    with _build_lock():
        if image_exists(tag):
            return tag
        if not tar.exists():
            _run_build(
                HERE / "build-host.sh",
                {
                    "ROOTFS": str(CACHE_DIR / "work" / f"host-{key}"),
                    "OUT": str(tar), "SUITE": SUITE, "MIRROR": MIRROR,
                    "PACKAGES": ",".join(HOST_PACKAGES),
                },
                CACHE_DIR / f"host-{key}.log",
            )
            built = True
        docker(
            "import",
            "--change", 'CMD ["/sbin/init"]',
            "--change", "ENV container=docker",
            "--change", f"LABEL {LABEL}.image=host",
            str(tar), tag, timeout=600,
        )
        if built:
            prune_unused()
    return tag


# -- the base of the stand-in images (Synapse, Postgres)

def _base_key() -> str:
    return _hash((HERE / "build-base.sh").read_bytes(), SUITE, ",".join(BASE_PACKAGES))


def _ensure_base() -> Path:
    """The base root filesystem archive, made by build-base.sh when missing (call under
    _build_lock)."""
    key = _base_key()
    base = CACHE_DIR / f"base-{key}.tar"
    if not base.exists():
        _run_build(
            HERE / "build-base.sh",
            {
                "ROOTFS": str(CACHE_DIR / "work" / f"base-{key}"), "OUT": str(base),
                "SUITE": SUITE, "MIRROR": MIRROR, "BASE_PACKAGES": ",".join(BASE_PACKAGES),
            },
            CACHE_DIR / f"base-{key}.log",
        )
    return base


# -- Synapse

def _synapse_changes() -> list[str]:
    return [
        'ENTRYPOINT ["/start.py"]',
        "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'VOLUME ["/data"]',
        "EXPOSE 8008/tcp 8009/tcp 8448/tcp",
    ]


def _synapse_key(version: str) -> str:
    return _hash(
        (HERE / "build-synapse.sh").read_bytes(), (HERE / "synapse-start.py").read_bytes(),
        _base_key(), version, PSYCOPG2_VERSION, *_synapse_changes(),
    )


def synapse_image_tag(version: str = SYNAPSE_VERSION, broken: bool = False) -> str:
    """`matrix-installer-lab/synapse:<version>-<hash>` (`...-broken` for the variant that fails
    to start); the hash covers what the image is built from."""
    return f"{SYNAPSE_REPO}:{version}-{_synapse_key(version)}{'-broken' if broken else ''}"


def build_synapse_image(
    tag: str | None = None, *, version: str = SYNAPSE_VERSION, broken: bool = False
) -> str:
    """Build (or reuse) the lab's stand-in for `matrixdotorg/synapse` with Synapse `version`.

    The image is `synapse_image_tag(version, broken)`; `broken` is the variant whose start
    fails, for rollback tests. When `tag` is given (e.g. "matrixdotorg/synapse:latest") it is
    tagged that way too. Returns `tag` or the lab tag.
    """
    lab_tag = synapse_image_tag(version, broken)
    key = _synapse_key(version)
    tar = CACHE_DIR / f"synapse-{version}-{key}.tar"
    _mark_used(lab_tag, tar.name, f"synapse-{version}-{key}.log", f"base-{_base_key()}.tar",
               f"base-{_base_key()}.log")
    if not image_exists(lab_tag):
        built = False
        with _build_lock():
            if not image_exists(lab_tag):
                if not tar.exists():
                    base = _ensure_base()
                    _run_build(
                        HERE / "build-synapse.sh",
                        {
                            "ROOTFS": str(CACHE_DIR / "work" / f"synapse-{key}"),
                            "OUT": str(tar), "BASE": str(base),
                            "SYNAPSE_VERSION": version, "PSYCOPG2_VERSION": PSYCOPG2_VERSION,
                            "START_PY": str(HERE / "synapse-start.py"),
                            "PIP_CACHE": str(CACHE_DIR / "pip"),
                            "SUITE": SUITE, "MIRROR": MIRROR,
                        },
                        CACHE_DIR / f"synapse-{version}-{key}.log",
                    )
                    built = True
                changes = _synapse_changes() + [
                    f"LABEL {LABEL}.image=synapse {LABEL}.build={key} "
                    f"org.opencontainers.image.version={version}",
                ]
                if broken:
                    changes.append("ENV LAB_SYNAPSE_BROKEN=1")
                docker("import", *_apply_import_changes(changes), str(tar), lab_tag, timeout=600)
                if built:
                    prune_unused()
    if tag and tag != lab_tag:
        docker("tag", lab_tag, tag)
        return tag
    return lab_tag


# -- Postgres

def _postgres_config() -> dict:
    """The image settings of the official postgres:17-alpine that matter here (its version
    variables and labels are added when the installed version is known)."""
    bin_dir = f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin"
    return {
        "Env": [
            f"PATH={bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=en_US.utf8",
            f"PG_MAJOR={POSTGRES_MAJOR}",
            "PGDATA=/var/lib/postgresql/data",
        ],
        "Entrypoint": ["docker-entrypoint.sh"],
        "Cmd": ["postgres"],
        "ExposedPorts": {"5432/tcp": {}},
        "Volumes": {"/var/lib/postgresql/data": {}},
        # Fast shutdown on `docker stop`, as the official image (docker import cannot set it).
        "StopSignal": "SIGINT",
        "WorkingDir": "/",
    }


def _postgres_key() -> str:
    return _hash(
        (HERE / "build-postgres.sh").read_bytes(), (HERE / "postgres-entrypoint.sh").read_bytes(),
        _base_key(), SUITE, POSTGRES_MAJOR, json.dumps(_postgres_config(), sort_keys=True),
    )


def postgres_image_tag() -> str:
    """`matrix-installer-lab/postgres:17-<hash>`; the hash covers what the image is built from."""
    return f"{POSTGRES_REPO}:{POSTGRES_MAJOR}-{_postgres_key()}"


# -- the state compressor

COMPRESSOR_REPO = "matrix-installer-lab/compress-state"
COMPRESSOR_VERSION = "0.1.2"
"""synapse-auto-compressor on the package index: 0.1.2 is the last wheel with the compressor in
it (0.1.4's x86_64 wheel holds an empty library); there is no aarch64 wheel."""


def _compressor_key() -> str:
    return _hash((HERE / "build-compressor.sh").read_bytes(), (HERE / "compressor-cli.py").read_bytes(),
                 _base_key(), COMPRESSOR_VERSION)


def build_compressor_image() -> str:
    """Build (or reuse) the lab's stand-in for the state compressor's image (COMPRESSOR_IMAGE in
    installer.components.tuning): `synapse_auto_compressor` with the real binary's flags. Load it
    into a lab host under the real name (`scenarios.ready_host(..., compressor_image=...)`)."""
    key = _compressor_key()
    lab_tag = f"{COMPRESSOR_REPO}:{COMPRESSOR_VERSION}-{key}"
    tar = CACHE_DIR / f"compress-state-{key}.tar"
    _mark_used(lab_tag, tar.name, f"compress-state-{key}.log", f"base-{_base_key()}.tar", f"base-{_base_key()}.log")
    if not image_exists(lab_tag):
        built = False
        with _build_lock():
            if not image_exists(lab_tag):
                if not tar.exists():
                    _run_build(HERE / "build-compressor.sh", {
                        "ROOTFS": str(CACHE_DIR / "work" / f"compress-state-{key}"), "OUT": str(tar),
                        "BASE": str(_ensure_base()), "COMPRESSOR_VERSION": COMPRESSOR_VERSION,
                        "CLI": str(HERE / "compressor-cli.py"), "PIP_CACHE": str(CACHE_DIR / "pip"),
                    }, CACHE_DIR / f"compress-state-{key}.log")
                    built = True
                changes = ["ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           "ENV LANG=C.UTF-8", 'CMD ["synapse_auto_compressor", "--help"]',
                           f"LABEL {LABEL}.image=compress-state {LABEL}.build={key}"]
                docker("import", *_apply_import_changes(changes), str(tar), lab_tag, timeout=600)
                if built:
                    prune_unused()
    return lab_tag


def build_postgres_image(tag: str | None = None) -> str:
    """Build (or reuse) the lab's stand-in for `postgres:17-alpine` (POSTGRES_IMAGE): Debian's
    postgresql-17 with an entrypoint that keeps the official image's contract (see README.md).

    The image is `postgres_image_tag()`; when `tag` is given it is tagged that way too (in the
    runner's shared engine prefer LabHost.load_image(..., as_tag=POSTGRES_IMAGE) over tagging
    it `postgres:17-alpine` here). Returns `tag` or the lab tag."""
    lab_tag = postgres_image_tag()
    key = _postgres_key()
    tar = CACHE_DIR / f"postgres-{POSTGRES_MAJOR}-{key}.tar"
    version_file = CACHE_DIR / f"postgres-{POSTGRES_MAJOR}-{key}.version"
    _mark_used(lab_tag, tar.name, version_file.name, f"postgres-{POSTGRES_MAJOR}-{key}.log",
               f"base-{_base_key()}.tar", f"base-{_base_key()}.log")
    if not image_exists(lab_tag):
        built = False
        with _build_lock():
            if not image_exists(lab_tag):
                if not (tar.exists() and version_file.exists()):
                    base = _ensure_base()
                    _run_build(
                        HERE / "build-postgres.sh",
                        {
                            "ROOTFS": str(CACHE_DIR / "work" / f"postgres-{key}"),
                            "OUT": str(tar), "OUT_VERSION": str(version_file), "BASE": str(base),
                            "SUITE": SUITE, "MIRROR": MIRROR, "PG_MAJOR": POSTGRES_MAJOR,
                            "ENTRYPOINT": str(HERE / "postgres-entrypoint.sh"),
                        },
                        CACHE_DIR / f"postgres-{POSTGRES_MAJOR}-{key}.log",
                    )
                    built = True
                version = version_file.read_text().strip()
                config = _postgres_config()
                config["Env"].append(f"PG_VERSION={version}")
                config["Labels"] = {
                    f"{LABEL}.image": "postgres", f"{LABEL}.build": key,
                    f"{LABEL}.stands-in-for": POSTGRES_IMAGE,
                    "org.opencontainers.image.version": version,
                }
                _load_rootfs(tar, lab_tag, config)
                if built:
                    prune_unused()
    if tag and tag != lab_tag:
        docker("tag", lab_tag, tag)
        return tag
    return lab_tag


# -- Redis

def _redis_config() -> dict:
    """The image settings of the official redis:7-alpine that matter here (its version label is
    added when the installed version is known)."""
    return {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Entrypoint": ["docker-entrypoint.sh"],
        "Cmd": ["redis-server"],
        "ExposedPorts": {"6379/tcp": {}},
        "Volumes": {"/data": {}},
        "WorkingDir": "/data",
    }


def _redis_key() -> str:
    return _hash(
        (HERE / "build-redis.sh").read_bytes(), (HERE / "redis-entrypoint.sh").read_bytes(),
        _base_key(), SUITE, json.dumps(_redis_config(), sort_keys=True),
    )


def redis_image_tag() -> str:
    """`matrix-installer-lab/redis:<hash>`; the hash covers what the image is built from."""
    return f"{REDIS_REPO}:{_redis_key()}"


def build_redis_image() -> str:
    """Build (or reuse) the lab's stand-in for `redis:7-alpine` (REDIS_IMAGE): Debian's
    redis-server with an entrypoint that keeps the official image's contract (README.md).
    Returns its lab tag; load it into a lab host with `load_image(tag, as_tag=REDIS_IMAGE)`."""
    lab_tag = redis_image_tag()
    key = _redis_key()
    tar = CACHE_DIR / f"redis-{key}.tar"
    version_file = CACHE_DIR / f"redis-{key}.version"
    _mark_used(lab_tag, tar.name, version_file.name, f"redis-{key}.log", f"base-{_base_key()}.tar",
               f"base-{_base_key()}.log")
    if not image_exists(lab_tag):
        built = False
        with _build_lock():
            if not image_exists(lab_tag):
                if not (tar.exists() and version_file.exists()):
                    base = _ensure_base()
                    _run_build(
                        HERE / "build-redis.sh",
                        {
                            "ROOTFS": str(CACHE_DIR / "work" / f"redis-{key}"),
                            "OUT": str(tar), "OUT_VERSION": str(version_file), "BASE": str(base),
                            "SUITE": SUITE, "MIRROR": MIRROR, "ENTRYPOINT": str(HERE / "redis-entrypoint.sh"),
                        },
                        CACHE_DIR / f"redis-{key}.log",
                    )
                    built = True
                version = version_file.read_text().strip()
                config = _redis_config()
                config["Env"].append(f"REDIS_VERSION={version}")
                config["Labels"] = {
                    f"{LABEL}.image": "redis", f"{LABEL}.build": key, f"{LABEL}.stands-in-for": REDIS_IMAGE,
                    "org.opencontainers.image.version": version,
                }
                _load_rootfs(tar, lab_tag, config)
                if built:
                    prune_unused()
    return lab_tag


def label(image: str, name: str) -> str | None:
    """The value of label `name` on `image` (None when the image or the label is missing)."""
    p = docker("image", "inspect", "--format", "{{json .Config.Labels}}", image, check=False, timeout=30)
    if p.returncode != 0:
        return None
    return (json.loads(p.stdout or "null") or {}).get(name)


# --------------------------------------------------------------------------- sessions

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lab_containers() -> list[tuple[str, int]]:
    p = docker(
        "ps", "-a", "--filter", f"label={LABEL}.pid",
        "--format", '{{.ID}} {{.Label "' + LABEL + '.pid"}}', check=False, timeout=30,
    )
    out = []
    for line in p.stdout.splitlines():
        cid, _, pid = line.partition(" ")
        out.append((cid, int(pid) if pid.isdigit() else 0))
    return out


def remove_stale_containers() -> None:
    """Remove lab containers (and their networks) left by test sessions that died."""
    stale = [cid for cid, pid in _lab_containers() if not _pid_alive(pid)]
    if stale:
        docker("rm", "-f", "-v", *stale, check=False)
    nets = docker("network", "ls", "-q", "--filter", f"label={LABEL}.pid", check=False).stdout.split()
    for net in nets:
        p = docker("network", "inspect", "--format", '{{index .Labels "' + LABEL + '.pid"}}', net, check=False)
        pid = p.stdout.strip()
        if not (pid.isdigit() and _pid_alive(int(pid))):
            docker("network", "rm", net, check=False)


class LabNetwork:
    """A Docker network of the runner's that lab hosts join besides their own: their private
    network (a VCN's subnet), each host with an address on it. A 10.x subnet, which neither the
    runner's Docker nor the lab hosts' nested Docker hands out by default."""

    def __init__(self, name: str, subnet: str) -> None:
        self.name = name
        self.subnet = subnet

    @classmethod
    def create(cls, attempts: int = 20) -> "LabNetwork":
        import random

        name = f"matrix-installer-lab-net-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        for _ in range(attempts):
            subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"
            made = docker("network", "create", "--subnet", subnet, "--label", f"{LABEL}.pid={os.getpid()}", name,
                          check=False)
            if made.returncode == 0:
                return cls(name, subnet)
            if "overlap" not in (made.stderr + made.stdout).lower():
                raise LabError(f"docker network create failed: {made.stderr.strip()}")
        raise LabError("no free 10.x subnet for the lab's private network")

    def join(self, host: "LabHost") -> str:
        """Put `host` on this network; returns its address there (its private address)."""
        docker("network", "connect", self.name, host.container)
        out = docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", host.container).stdout
        return json.loads(out)[self.name]["IPAddress"]

    def remove(self) -> None:
        docker("network", "rm", self.name, check=False)


def session_key(directory: Path) -> Path:
    """An ed25519 key pair for this session (mode 0600), made once; returns the private key path."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    if not key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "matrix-installer-lab", "-f", str(key)])
    key.chmod(0o600)
    return key


class LabHost:
    """A running lab host: a systemd Debian container reachable over SSH on 127.0.0.1."""

    user = "ubuntu"

    def __init__(self, container: str, name: str, private_key_path: Path, ports: dict[str, int]):
        self.container = container
        self.name = name
        self.private_key_path = Path(private_key_path)
        self.ssh_port = ports["ssh_port"]
        self.http_port = ports["http_port"]
        self.https_port = ports["https_port"]
        self.fed_port = ports["fed_port"]
        self.host = "127.0.0.1"
        self.host_key = ""
        self.private_address = ""
        """Its address on a LabNetwork it joined (scenarios.ready_host(..., private_network=...))."""
        self._docker_ready = False

    @classmethod
    def start(cls, image: str, private_key_path: Path, *, name: str | None = None,
              ready_timeout: float = 120, rebootable: bool = False, memory_mib: int | None = None,
              cores: int | None = None, network: str | None = None, aliases: tuple[str, ...] = ()) -> "LabHost":
        """Boot a lab host from `image` (see build_host_image), authorize the key, wait for sshd.
        `rebootable`: fixed published ports and Docker's restart policy, so that a reboot inside
        (systemd ends the container) comes back on the same ports, as a VM keeps its address.
        `memory_mib`, `cores`: a box of that size as the host's tools see it (/proc/meminfo, as
        LXCFS gives a container, and the CPUs it may run on, which nproc counts); what limits the
        containers inside is their own compose limits (their cgroups are not below this one).
        `network`: a runner network to join instead of Docker's default bridge (lab hosts on it
        reach each other), where `aliases` resolve to this host (Docker's DNS, which the host's
        resolv.conf then names, and which its nested containers' DNS forwards to)."""
        name = name or f"matrix-installer-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        publish = ["--restart=always"] if rebootable else []
        if memory_mib:
            meminfo = CACHE_DIR / "work" / f"meminfo-{memory_mib}"
            meminfo.parent.mkdir(parents=True, exist_ok=True)
            kb = memory_mib * 1024
            meminfo.write_text(f"MemTotal:       {kb:>9} kB\nMemFree:        {kb * 3 // 4:>9} kB\n"
                               f"MemAvailable:   {kb * 7 // 8:>9} kB\nSwapTotal:              0 kB\n"
                               "SwapFree:               0 kB\n")
            publish += ["-v", f"{meminfo}:/proc/meminfo:ro"]
        if cores:
            publish += ["--cpuset-cpus", f"0-{cores - 1}" if cores > 1 else "0"]
        if network:
            publish += ["--network", network]
            for alias in aliases:
                publish += ["--network-alias", alias]
        for port in LAB_PORTS.values():
            publish += ["-p", f"127.0.0.1:{_free_port() if rebootable else ''}:{port}"]
        cid = docker(
            "run", "-d", "--name", name, "--hostname", "lab-host",
            "--label", f"{LABEL}.pid={os.getpid()}", "--label", f"{LABEL}.role=host",
            *SYSTEMD_RUN_FLAGS,
            # Docker's own storage on a real filesystem (a volume), not on the container's
            # overlay root, as on a real VM's disk: overlay2 works for the nested engine.
            "-v", "/var/lib/docker", "-v", "/var/lib/containerd",
            *publish, image, "/sbin/init",
        ).stdout.strip()
        try:
            ports = {}
            for attr, port in LAB_PORTS.items():
                out = docker("port", cid, f"{port}/tcp").stdout.split()
                ports[attr] = int(out[0].rsplit(":", 1)[1])
            lab = cls(cid, name, private_key_path, ports)
            lab.authorize_key(Path(str(private_key_path) + ".pub").read_text())
            lab.wait_ready(ready_timeout)
            lab.trust_runner_cas()  # after boot: systemd mounts a tmpfs on /tmp meanwhile
            lab.host_key = lab._read_host_key()
        except BaseException:
            docker("rm", "-f", "-v", cid, check=False)
            raise
        return lab

    # -- plumbing -------------------------------------------------------------------------

    def exec(self, cmd: str | list[str], *, check: bool = False, input: str | bytes | None = None,
             timeout: float = 600, text: bool = True, user: str = "root") -> subprocess.CompletedProcess:
        """Run `cmd` in the lab host as root (a string goes through `sh -c`), out of band."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        flags = ["-i"] if input is not None else []
        return _run(
            ["docker", "exec", *flags, "-u", user, self.container, *argv],
            check=check, timeout=timeout, input=input, text=text,
        )

    def authorize_key(self, public_key: str) -> None:
        """Put `public_key` in ubuntu's authorized_keys (as cloud-init does from the metadata)."""
        self.exec(
            "install -d -m 0700 -o ubuntu -g ubuntu /home/ubuntu/.ssh && "
            "cat >> /home/ubuntu/.ssh/authorized_keys && "
            "chown ubuntu:ubuntu /home/ubuntu/.ssh/authorized_keys && "
            "chmod 0600 /home/ubuntu/.ssh/authorized_keys",
            input=public_key.strip() + "\n", check=True,
        )

    def trust_runner_cas(self, bundle: str = "/etc/ssl/certs/ca-certificates.crt") -> int:
        """Make the lab host trust the CAs the runner trusts beyond Debian's own (the runner may
        reach the internet through a TLS-inspecting proxy); returns how many were added.
        They go to /usr/local/share/ca-certificates, so later package installs keep them."""
        def certs(pem: str) -> list[str]:
            return re.findall(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", pem, re.S)
        try:
            ours = certs(Path(bundle).read_text())
        except OSError:
            return 0
        theirs = set(certs(self.exec(["cat", bundle]).stdout))
        extra = [c for c in ours if c not in theirs]
        if not extra:
            return 0
        self.exec(
            "mkdir -p /usr/local/share/ca-certificates/lab-runner && "
            "cat > /usr/local/share/ca-certificates/lab-runner/all.pem && cd "
            "/usr/local/share/ca-certificates/lab-runner && "
            "csplit -s -z -f runner- -b '%02d.crt' all.pem '/-----BEGIN CERTIFICATE-----/' '{*}' && "
            "rm all.pem && update-ca-certificates >/dev/null",
            input="".join(extra), check=True,
        )
        return len(extra)

    def _read_host_key(self) -> str:
        out = self.exec("cat /etc/ssh/ssh_host_ed25519_key.pub", check=True).stdout.split()
        return f"{out[0]} {out[1]}"

    def known_hosts_line(self) -> str:
        """The known_hosts entry that pins this host's key at its published SSH port."""
        return f"[{self.host}]:{self.ssh_port} {self.host_key}"

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until systemd has booted and sshd answers on the published port."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            p = self.exec("systemctl is-system-running", timeout=30)
            state = p.stdout.strip()
            if state in ("running", "degraded"):
                break
            if docker("inspect", "--format", "{{.State.Running}}", self.container,
                      check=False).stdout.strip() != "true":
                raise LabError("the lab host stopped while booting:\n" + self.logs())
            time.sleep(0.5)
        else:
            raise LabError(f"systemd in the lab host did not finish booting ({state!r}):\n" + self.logs())
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.ssh_port), timeout=5) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise LabError("sshd in the lab host does not answer:\n"
                       + self.exec("systemctl status ssh --no-pager").stdout)

    def logs(self) -> str:
        p = docker("logs", "--tail", "60", self.container, check=False)
        failed = self.exec("systemctl --failed --no-pager", timeout=30).stdout if self.running() else ""
        return (p.stdout or "") + (p.stderr or "") + failed

    def running(self) -> bool:
        return docker("inspect", "--format", "{{.State.Running}}", self.container,
                      check=False).stdout.strip() == "true"

    # -- Docker inside the lab host --------------------------------------------------------

    def preinstall_docker(self, timeout: float = 600) -> None:
        """Install and start Debian's Docker in the lab host (what the installer would do),
        for tests that need it before the installer runs."""
        self.exec(
            "export DEBIAN_FRONTEND=noninteractive && apt-get update -q && "
            "apt-get install -y -q docker.io docker-compose && systemctl enable --now docker",
            check=True, timeout=timeout,
        )
        self.wait_docker()

    def wait_docker(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exec("docker info >/dev/null 2>&1", timeout=30).returncode == 0:
                self._docker_ready = True
                return
            time.sleep(0.5)
        raise LabError("Docker in the lab host does not answer:\n"
                       + self.exec("journalctl -u docker --no-pager -n 40").stdout)

    def load_image(self, tag: str, *, as_tag: str | None = None) -> None:
        """Copy image `tag` from the runner's Docker into the lab host's Docker
        (installed by the installer or by preinstall_docker()); tag it `as_tag` there too."""
        if self.exec("command -v docker >/dev/null", timeout=30).returncode != 0:
            raise LabError("Docker is not installed in the lab host yet (preinstall_docker()).")
        self.wait_docker()
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        try:
            load = subprocess.run(
                ["docker", "exec", "-i", self.container, "docker", "load"],
                stdin=save.stdout, capture_output=True, text=True, timeout=900,
            )
        finally:
            save.stdout.close()
            save_rc = save.wait(60)
        if save_rc != 0 or load.returncode != 0:
            raise LabError(f"loading {tag} into the lab host failed: {load.stdout}{load.stderr}")
        if as_tag:
            self.exec(["docker", "tag", tag, as_tag], check=True)

    # -- Caddy ------------------------------------------------------------------------------

    CADDY_ROOT_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"

    def caddy_root_ca(self) -> bytes:
        """The root certificate (PEM) of Caddy's local CA in the lab host, after Caddy ran
        with `local_certs` / `tls internal` (Debian's caddy runs as user caddy, HOME=/var/lib/caddy)."""
        p = self.exec(["cat", self.CADDY_ROOT_CA], text=False)
        if p.returncode != 0:
            raise LabError(f"no Caddy local CA in the lab host at {self.CADDY_ROOT_CA}")
        return p.stdout

    # -- teardown ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Remove the container (and its volumes: the nested Docker's storage)."""
        docker("rm", "-f", "-v", self.container, check=False, timeout=120)
