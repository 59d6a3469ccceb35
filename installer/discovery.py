"""What this machine already has: OCI profiles, SSH keys, previous runs' state folders.

The guided setup's Welcome and Keys screens show these; nothing here changes anything, and
nothing here imports Textual (the engine and the headless path may use it too).
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from installer.state import STATE_FILE, default_state_dir

if TYPE_CHECKING:
    from installer.answers import Answers

ANSWERS_FILE = "answers.toml"
"""Where a guided run keeps its answers inside its state folder, so it can be resumed or upgraded."""


@dataclass(frozen=True)
class OciProfile:
    """One profile (section) of an OCI SDK/CLI config file."""

    name: str
    region: str
    tenancy: str
    key_file: str
    key_present: bool
    config_path: Path

    @property
    def key_status(self) -> str:
        """One line about the API signing key this profile names."""
        if not self.key_file:
            return f'profile {self.name} names no key_file: add one (see "oci setup config")'
        if not self.key_present:
            return f"API key {self.key_file} is missing: create it with \"oci setup keys\" and upload the public half"
        return f"API key {self.key_file} found (region {self.region or 'not set'})"


@dataclass(frozen=True)
class SshKey:
    """An SSH key pair in ~/.ssh (a public half next to its private file)."""

    private_path: Path
    key_type: str
    fingerprint: str
    comment: str = ""


@dataclass(frozen=True)
class PreviousRun:
    """A state folder left by an earlier run, one per server name."""

    server_name: str
    folder: Path
    stages_ok: int
    stages_failed: tuple[str, ...]
    public_ip: str = ""
    answers_path: Path | None = None

    @property
    def complete(self) -> bool:
        """Whether the last run got through every stage it recorded without a failure."""
        return self.stages_ok > 0 and not self.stages_failed

    @property
    def summary(self) -> str:
        if self.stages_failed:
            return f"stopped at {self.stages_failed[0]} ({self.stages_ok} stages done)"
        if self.complete:
            return f"installed ({self.stages_ok} stages done)"
        return "started, no stage finished yet"


@dataclass(frozen=True)
class Found:
    """Everything discovered on this machine."""

    oci_config: Path
    oci_profiles: tuple[OciProfile, ...] = ()
    ssh_keys: tuple[SshKey, ...] = ()
    previous_runs: tuple[PreviousRun, ...] = ()


def expand(path: str | Path, home: Path | None = None) -> Path:
    """Expand a leading ~ against `home` (tests pass a fake one) or the real home."""
    text = str(path)
    if text == "~" or text.startswith("~/"):
        base = home if home is not None else Path.home()
        return base / text[2:] if len(text) > 2 else base
    return Path(text)


def home_relative(path: str | Path, home: Path | None = None) -> str:
    """The inverse of expand: a path under `home` (or the real home) written with ~."""
    text, base = str(path), str(home if home is not None else Path.home())
    return "~" + text[len(base):] if text.startswith(base + "/") else text


def oci_profiles(config_path: Path, home: Path | None = None) -> list[OciProfile]:
    """The profiles in an OCI config file ([DEFAULT] included); missing file: none."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return []
    names = (["DEFAULT"] if parser.defaults() else []) + parser.sections()
    found = []
    for name in names:
        section = parser[name] if name != "DEFAULT" else parser.defaults()
        key_file = section.get("key_file", "")
        key_path = expand(key_file, home) if key_file else None
        found.append(OciProfile(
            name=name,
            region=section.get("region", ""),
            tenancy=section.get("tenancy", ""),
            key_file=key_file,
            key_present=bool(key_path and key_path.is_file()),
            config_path=config_path,
        ))
    return found


def fingerprint(public_line: str) -> tuple[str, str, str] | None:
    """(type, "SHA256:..." fingerprint, comment) of an OpenSSH public key line, or None."""
    parts = public_line.strip().split(None, 2)
    if len(parts) < 2:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return parts[0], f"SHA256:{digest}", parts[2] if len(parts) > 2 else ""


def key_pair(private_path: Path) -> SshKey | None:
    """The key pair whose private half is `private_path`, if its .pub is readable."""
    try:
        line = private_path.with_name(private_path.name + ".pub").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    parsed = fingerprint(line)
    if parsed is None:
        return None
    key_type, print_, comment = parsed
    return SshKey(private_path, key_type, print_, comment)


def ssh_keys(ssh_dir: Path) -> list[SshKey]:
    """Key pairs in an ~/.ssh folder: every *.pub with its private file beside it."""
    try:
        publics = sorted(ssh_dir.glob("*.pub"))
    except OSError:
        return []
    found = []
    for public in publics:
        private = public.with_suffix("")
        if private.is_file() and (key := key_pair(private)):
            found.append(key)
    # ed25519 first: it is what the installer creates and prefers.
    found.sort(key=lambda k: (k.key_type != "ssh-ed25519", str(k.private_path)))
    return found


def previous_runs(state_dir: Path) -> list[PreviousRun]:
    """State folders under the state dir, newest activity first."""
    try:
        folders = [p for p in state_dir.iterdir() if (p / STATE_FILE).is_file()]
    except OSError:
        return []
    runs: list[tuple[int, PreviousRun]] = []
    for folder in folders:
        try:
            data = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        stages = data.get("stages", {}) if isinstance(data, dict) else {}
        if not isinstance(stages, dict):
            continue
        ok = sum(1 for s in stages.values() if isinstance(s, dict) and s.get("status") in ("done", "unchanged", "skipped"))
        failed = tuple(n for n, s in stages.items() if isinstance(s, dict) and s.get("status") == "failed")
        latest = max((s.get("at", 0) for s in stages.values() if isinstance(s, dict)), default=0)
        facts = data.get("facts", {}) if isinstance(data.get("facts"), dict) else {}
        answers = folder / ANSWERS_FILE
        runs.append((int(latest or 0), PreviousRun(
            server_name=folder.name,
            folder=folder,
            stages_ok=ok,
            stages_failed=failed,
            public_ip=str(facts.get("host.address", "")),
            answers_path=answers if answers.is_file() else None,
        )))
    runs.sort(key=lambda item: (-item[0], item[1].server_name))
    return [run for _, run in runs]


def run_answers(run: PreviousRun) -> Answers | None:
    """The answers a previous run saved, if they are still readable and valid."""
    from installer.answers import AnswersError, load_answers

    if run.answers_path is None:
        return None
    try:
        return load_answers(run.answers_path)
    except AnswersError:
        return None


def discover(home: Path | None = None, state_dir: Path | None = None, oci_config: str = "~/.oci/config") -> Found:
    """Look around this machine: OCI profiles, SSH key pairs, previous runs."""
    config_path = expand(oci_config, home)
    home_dir = home if home is not None else Path.home()
    return Found(
        oci_config=config_path,
        oci_profiles=tuple(oci_profiles(config_path, home)),
        ssh_keys=tuple(ssh_keys(home_dir / ".ssh")),
        previous_runs=tuple(previous_runs(state_dir if state_dir is not None else default_state_dir())),
    )
