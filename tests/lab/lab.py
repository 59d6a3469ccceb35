"""The lab host: a real systemd Debian machine in Docker for the installer's SSH stages.

Everything here runs on the test runner as root, with plain `subprocess`:

- `ensure_docker_engine()` starts `dockerd` by hand when no engine answers (and
  `stop_docker_engine()` stops it again, only if this process started it);
- `build_host_image()` builds (or reuses) the lab host's image: Debian trixie minbase with
  systemd, sshd, sudo, an `ubuntu` user and Oracle's default Ubuntu iptables rules;
- `build_synapse_image()` builds (or reuses) the lab's stand-in for `matrixdotorg/synapse`;
- `LabHost.start()` boots a container from the host image, publishing 22/80/443/8448 on
  127.0.0.1 and authorizing a session key for `ubuntu`.

Builds are cached: root filesystem archives under CACHE_DIR (keyed by a hash of the build
scripts and their inputs), Docker images under tags carrying the same hash. See README.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("MATRIX_INSTALLER_LAB_CACHE", "/var/cache/matrix-installer-lab"))
MIRROR = os.environ.get("MATRIX_INSTALLER_LAB_MIRROR", "http://deb.debian.org/debian")
SUITE = "trixie"

HOST_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "iptables", "iproute2",
    "ca-certificates", "curl", "python3", "gnupg",
)
# Installed by build-host.sh after preseeding debconf (they ask a question).
HOST_PACKAGES_LATER = ("iptables-persistent", "netfilter-persistent")
HOST_REPO = "matrix-installer-lab/host"

SYNAPSE_VERSION = "1.163.2"
SYNAPSE_REPO = "matrix-installer-lab/synapse"
SYNAPSE_BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "curl")

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
_engine_lock = None  # shared flock on CACHE_DIR/engine.lock while this process uses the engine


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

    Returns True when this call started it. Holds a shared lock on CACHE_DIR/engine.lock until
    stop_docker_engine(), so that concurrent test sessions on this machine share one dockerd
    and only the last one leaving stops it. Raises LabError (never skips) when no engine can
    be had.
    """
    global _started_dockerd, _engine_lock
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if _engine_lock is None:
        _engine_lock = open(CACHE_DIR / "engine.lock", "w")
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
    with _build_lock():  # two sessions must not both start one
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

def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=30).returncode == 0


@contextlib.contextmanager
def _build_lock():
    """One build at a time on this machine (two test sessions may start together)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "build.lock", "w") as f:
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


def _prune(glob: str, keep: set[str]) -> None:
    """Remove cached archives/logs of older build inputs (same kind, other hash)."""
    for path in CACHE_DIR.glob(glob):
        if path.name not in keep:
            with contextlib.suppress(OSError):
                path.unlink()


def _prune_images(repo: str, keep_tag: str) -> None:
    p = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo, check=False, timeout=30)
    old = [t for t in p.stdout.split() if t != keep_tag]
    if old:
        docker("image", "rm", *old, check=False)  # fails harmlessly for images in use


def host_image_tag() -> str:
    script = (HERE / "build-host.sh").read_bytes()
    return f"{HOST_REPO}:{_hash(script, SUITE, ','.join(HOST_PACKAGES), ','.join(HOST_PACKAGES_LATER))}"


def build_host_image() -> str:
    """Build (or reuse) the lab host's image; returns its tag `matrix-installer-lab/host:<hash>`."""
    tag = host_image_tag()
    if image_exists(tag):
        return tag
    key = tag.split(":", 1)[1]
    with _build_lock():
        if image_exists(tag):
            return tag
        tar = CACHE_DIR / f"host-{key}.tar"
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
            _prune("host-*", {tar.name, f"host-{key}.log"})
            _prune_images(HOST_REPO, tag)
        docker(
            "import",
            "--change", 'CMD ["/sbin/init"]',
            "--change", "ENV container=docker",
            "--change", f"LABEL {LABEL}.image=host",
            str(tar), tag, timeout=600,
        )
    return tag


def synapse_image_tag(version: str = SYNAPSE_VERSION, broken: bool = False) -> str:
    return f"{SYNAPSE_REPO}:{version}{'-broken' if broken else ''}"


def _synapse_key(version: str) -> tuple[str, str]:
    script = (HERE / "build-synapse.sh").read_bytes()
    start_py = (HERE / "synapse-start.py").read_bytes()
    base_key = _hash(SUITE, ",".join(SYNAPSE_BASE_PACKAGES))
    return base_key, _hash(script, start_py, SUITE, version)


def build_synapse_image(
    tag: str | None = None, *, version: str = SYNAPSE_VERSION, broken: bool = False
) -> str:
    """Build (or reuse) the lab's stand-in for `matrixdotorg/synapse` with Synapse `version`.

    The image is `matrix-installer-lab/synapse:<version>` (`<version>-broken` for the variant
    whose start fails, for rollback tests); when `tag` is given (e.g.
    "matrixdotorg/synapse:latest") it is tagged that way too. Returns `tag` or the lab tag.
    """
    lab_tag = synapse_image_tag(version, broken)
    base_key, key = _synapse_key(version)
    built_label = f"{LABEL}.build={key}"
    if not (image_exists(lab_tag) and _label(lab_tag, f"{LABEL}.build") == key):
        with _build_lock():
            if not (image_exists(lab_tag) and _label(lab_tag, f"{LABEL}.build") == key):
                tar = CACHE_DIR / f"synapse-{version}-{key}.tar"
                if not tar.exists():
                    _run_build(
                        HERE / "build-synapse.sh",
                        {
                            "ROOTFS": str(CACHE_DIR / "work" / f"synapse-{key}"),
                            "OUT": str(tar),
                            "BASE": str(CACHE_DIR / f"synapse-base-{base_key}.tar"),
                            "BASE_PACKAGES": ",".join(SYNAPSE_BASE_PACKAGES),
                            "SUITE": SUITE, "MIRROR": MIRROR, "SYNAPSE_VERSION": version,
                            "START_PY": str(HERE / "synapse-start.py"),
                            "PIP_CACHE": str(CACHE_DIR / "pip"),
                        },
                        CACHE_DIR / f"synapse-{version}-{key}.log",
                    )
                    _prune(f"synapse-{version}-*", {tar.name, f"synapse-{version}-{key}.log"})
                    _prune("synapse-base-*", {f"synapse-base-{base_key}.tar"})
                changes = [
                    'ENTRYPOINT ["/start.py"]',
                    "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    'VOLUME ["/data"]',
                    "EXPOSE 8008/tcp 8009/tcp 8448/tcp",
                    f"LABEL {LABEL}.image=synapse {built_label} "
                    f"org.opencontainers.image.version={version}",
                ]
                if broken:
                    changes.append("ENV LAB_SYNAPSE_BROKEN=1")
                args = []
                for c in changes:
                    args += ["--change", c]
                docker("import", *args, str(tar), lab_tag, timeout=600)
    if tag and tag != lab_tag:
        docker("tag", lab_tag, tag)
        return tag
    return lab_tag


def _label(image: str, name: str) -> str | None:
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
        self._docker_ready = False

    @classmethod
    def start(cls, image: str, private_key_path: Path, *, name: str | None = None,
              ready_timeout: float = 120, rebootable: bool = False) -> "LabHost":
        """Boot a lab host from `image` (see build_host_image), authorize the key, wait for sshd.
        `rebootable`: fixed published ports and Docker's restart policy, so that a reboot inside
        (systemd ends the container) comes back on the same ports, as a VM keeps its address."""
        name = name or f"matrix-installer-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        publish = ["--restart=always"] if rebootable else []
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
