"""Where Element Web's releases come from and how one is checked, as plain functions (the stages
run the commands on the host; these build them and read what they print).

A release is `element-vX.Y.Z.tar.gz` beside its detached, ASCII-armoured OpenPGP signature
`element-vX.Y.Z.tar.gz.asc`, at `<releases>/download/vX.Y.Z/`; `<releases>/latest` redirects to
`<releases>/tag/vX.Y.Z` (GitHub's layout). The signature must be a good one made by Element's
release key, whose primary key fingerprint is pinned here: the key file itself is fetched, but a
key with another fingerprint proves nothing.

For a lab or a mirror, three environment variables replace the source (all three together):
MATRIX_INSTALLER_ELEMENT_RELEASES (the releases URL), MATRIX_INSTALLER_ELEMENT_KEY_URL and
MATRIX_INSTALLER_ELEMENT_KEY_FINGERPRINT (the key that signs that mirror's releases).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from installer import checks
from installer.components.element import TAG

RELEASES = "https://github.com/element-hq/element-web/releases"
KEY_URL = "https://packages.element.io/element-release-key.asc"
FINGERPRINT = "712BFBEE92DCA45252DB17D7C7BE97EFA179B100"
"""Element Releases <releases@riot.im>: the primary key that signs Element Web's release archives."""
RELEASES_ENV = "MATRIX_INSTALLER_ELEMENT_RELEASES"
KEY_URL_ENV = "MATRIX_INSTALLER_ELEMENT_KEY_URL"
FINGERPRINT_ENV = "MATRIX_INSTALLER_ELEMENT_KEY_FINGERPRINT"
DRY_TAG = "vLATEST"
"""What a dry run says for "latest" (it asks nobody)."""

_TAG = re.compile(TAG)
_FINGERPRINT = re.compile(r"[0-9A-F]{40}")


class SourceError(ValueError):
    """The environment names a release source that cannot be used."""


@dataclass(frozen=True)
class Source:
    releases: str
    key_url: str
    fingerprint: str
    overridden: bool = False

    @property
    def latest(self) -> str:
        return f"{self.releases}/latest"

    def archive(self, tag: str) -> str:
        return f"{self.releases}/download/{tag}/element-{tag}.tar.gz"

    def signature(self, tag: str) -> str:
        return self.archive(tag) + ".asc"


_URL_PATH = re.compile(r"(/[A-Za-z0-9._~-]*)*")


def _url(value: str, name: str) -> str:
    """An http(s) URL with a host name or IP address (a lab's runner), a port, a plain path: it
    reaches a shell (quoted) on the host."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise SourceError(f"{name}: {value!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query or parts.fragment:
        raise SourceError(f"{name}: must be an http(s) URL such as https://mirror.example.org/element/releases")
    if problem := checks.host_or_ip(parts.hostname):
        raise SourceError(f"{name}: host {parts.hostname!r} {problem}")
    if not _URL_PATH.fullmatch(parts.path) or (port is not None and not 1 <= port <= 65535):
        raise SourceError(f"{name}: its path may hold only letters, digits and . _ ~ - between slashes")
    return value.rstrip("/")


def source(environ: dict[str, str] | None = None) -> Source:
    """Element's own releases, or the lab's or mirror's the environment names."""
    env = os.environ if environ is None else environ
    given = {name: env.get(name, "").strip() for name in (RELEASES_ENV, KEY_URL_ENV, FINGERPRINT_ENV)}
    if not any(given.values()):
        return Source(RELEASES, KEY_URL, FINGERPRINT)
    if not all(given.values()):
        missing = ", ".join(name for name, value in given.items() if not value)
        raise SourceError(f"another source for Element Web's releases needs all three of {RELEASES_ENV}, {KEY_URL_ENV} "
                          f"and {FINGERPRINT_ENV}; missing: {missing}")
    fingerprint = given[FINGERPRINT_ENV].replace(" ", "").upper()
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise SourceError(f"{FINGERPRINT_ENV}: must be a key's 40 hexadecimal digit fingerprint")
    return Source(_url(given[RELEASES_ENV], RELEASES_ENV), _url(given[KEY_URL_ENV], KEY_URL_ENV), fingerprint, True)


def is_tag(text: str) -> bool:
    return bool(_TAG.fullmatch(text))


def tag_from_redirect(url: str) -> str | None:
    """The release tag `<releases>/latest` redirects to ("…/releases/tag/v1.11.90" -> "v1.11.90")."""
    path = urlsplit(url.strip()).path
    head, _, tag = path.rstrip("/").rpartition("/")
    return tag if head.endswith("/tag") and is_tag(tag) else None


def folder_name(tag: str) -> str:
    """The folder a release unpacks to, and the one it is kept in: element-v1.11.90."""
    return f"element-{tag}"


def good_signature(status: str, fingerprint: str) -> tuple[bool, str]:
    """Whether gpg's machine-readable status (--status-fd) says the signature is a good one by
    the key `fingerprint` (its primary key, or the subkey that signed); and what gpg said."""
    valid = [line.split() for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG ")]
    for words in valid:
        signer, primary = words[2], words[-1]
        if fingerprint in (signer.upper(), primary.upper()):
            return True, f"good signature by {primary.upper()}"
    for marker, words in (("BADSIG", "a bad signature: the archive is not what was signed"),
                          ("ERRSIG", "a signature by a key it does not have"),
                          ("EXPKEYSIG", "a signature by an expired key"),
                          ("REVKEYSIG", "a signature by a revoked key")):
        if f"[GNUPG:] {marker}" in status:
            return False, words
    if valid:
        return False, f"a good signature, but by {valid[0][-1]}, not the release key {fingerprint}"
    return False, "no valid signature"


def archive_problem(listing: str, tag: str) -> str | None:
    """What is wrong with a release archive's members (`tar -tvzf`), or None: everything must be a
    plain file or folder inside element-<tag>/ (no links, devices, absolute paths or ..)."""
    top = folder_name(tag)
    seen = False
    for line in listing.splitlines():
        if not line.strip():
            continue
        words = line.split(None, 5)
        kind, name = line[:1], (words[5] if len(words) == 6 else "")
        if kind not in ("-", "d"):
            return f"it holds a link or special file: {line.strip()[:120]}"
        parts = name.rstrip("/").split("/")
        if name.startswith("/") or ".." in parts or parts[0] != top:
            return f"it holds {name!r}, outside {top}/"
        seen = True
    return None if seen else "it is empty"


def client_config(*, matrix_host: str, server_name: str) -> str:
    """config.json: our server as the default (base URL and name), its room directory; another
    server can still be chosen (custom URLs left enabled); no guests."""
    config = {
        "default_server_config": {"m.homeserver": {"base_url": f"https://{matrix_host}", "server_name": server_name}},
        "disable_custom_urls": False,
        "disable_guests": True,
        "room_directory": {"servers": [server_name]},
    }
    return json.dumps(config, indent=2) + "\n"
