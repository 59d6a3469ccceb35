"""Field validators: each takes a value and returns what is wrong with it, or None.

These guard every value that later reaches a shell command, a Caddyfile or YAML, so they are
strict allow-lists rather than deny-lists: a value passes only if it is made of characters that
are harmless in all three places.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

Check = Callable[[object], "str | None"]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_HOST_CHARS = re.compile(r"[A-Za-z0-9.-]")
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._:/?@+=&%]")
_NAMED = {"\n": "a newline", "\t": "a tab", " ": "a space", "\r": "a carriage return"}


def _bad_char(value: str, allowed: re.Pattern[str] = _HOST_CHARS) -> str | None:
    """Name the first character outside the allow-list, the way a person would read it."""
    for ch in value:
        if not allowed.fullmatch(ch):
            shown = _NAMED.get(ch, f'"{ch}"' if ch.isprintable() else repr(ch))
            return f"contains {shown}, which is not allowed here"
    return None


def hostname(value: object, *, fqdn: bool = True) -> str | None:
    """An RFC 1123 host name; with fqdn, at least two labels (a public domain)."""
    if not isinstance(value, str) or not value:
        return "is required"
    if not value.isascii():
        try:
            ascii_form = value.lower().encode("idna").decode()
        except UnicodeError:
            return _bad_char(value)
        return f'must be written in ASCII: write "{ascii_form}" (its IDNA form)'
    if ":" in value and value.rpartition(":")[2].isdigit():
        return "has a port: give the name alone (federation's port follows from the delegation)"
    if bad := _bad_char(value):
        return bad
    if value != value.lower():
        return f'must be lowercase: write "{value.lower()}"'
    if value.endswith("."):
        return f'drop the trailing dot: write "{value.rstrip(".")}"'
    if len(value) > 253:
        return "is longer than 253 characters"
    labels = value.split(".")
    for label in labels:
        if not _LABEL.match(label):
            if not label:
                return "has an empty label (two dots in a row?)"
            if len(label) > 63:
                return f'label "{label[:20]}..." is longer than 63 characters'
            return f'label "{label}" may hold only a-z, 0-9 and inner hyphens'
    if fqdn and len(labels) < 2:
        return 'must be a full domain name such as "example.org"'
    if labels[-1].isdigit():
        return "looks like an IP address; a domain name is needed"
    return None


def fqdn(value: object) -> str | None:
    return hostname(value, fqdn=True)


def host_or_ip(value: object) -> str | None:
    """A host name (a single label is fine) or an IPv4/IPv6 address."""
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            pass
    return hostname(value, fqdn=False)


def ssh_host(value: object) -> str | None:
    """Where to SSH to: a host name or IP, optional (required by provider "existing"); a user or a
    port written into it is pointed to its own key."""
    if value == "":
        return None
    if isinstance(value, str) and "@" in value:
        return "has a user name in it: give the address alone (the user goes in ssh.user)"
    if isinstance(value, str) and re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):\d+", value):
        return "has a port in it: give the address alone (the port goes in ssh.port)"
    return host_or_ip(value)


def email(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None  # optional
    local, at, domain = value.partition("@")
    if not at or not local:
        return 'must be an e-mail address such as "admin@example.org"'
    if not re.fullmatch(r"[A-Za-z0-9._%+-]{1,64}", local):
        return "the part before @ may hold only letters, digits and . _ % + -"
    if problem := hostname(domain):
        return f"the domain after @ {problem}"
    return None


def url(value: object) -> str | None:
    """An optional http(s) URL made only of characters safe in a Caddyfile and YAML."""
    if not isinstance(value, str) or not value:
        return None
    if bad := _bad_char(value, _URL_CHARS):
        return f"{bad} (allowed: letters, digits and - . _ : / ? @ + = & %)"
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http"):
        return 'must start with "https://" (or "http://")'
    host = parts.hostname or ""
    if problem := hostname(host):
        return f'host "{host}" {problem}'
    return None


def port(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return "must be a port number from 1 to 65535"
    return None


def int_range(low: int, high: int) -> Check:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number from {low} to {high}"
        return None

    return check


def one_of(*choices: str) -> Check:
    def check(value: object) -> str | None:
        if value not in choices:
            listed = ", ".join(f'"{c}"' for c in choices)
            return f"must be one of {listed}"
        return None

    return check


def pattern(regex: str, what: str, *, optional: bool = False) -> Check:
    """Compiled on first use: the answers model is imported on the way to the first frame."""

    def check(value: object) -> str | None:
        if optional and value == "":
            return None
        if not isinstance(value, str) or not re.fullmatch(regex, value):
            return f"must be {what}"
        return None

    return check


_IMAGE = re.compile(
    r"(?:[a-z0-9][a-z0-9.-]*(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)


def image_ref(value: object) -> str | None:
    """A container image reference ("matrixdotorg/synapse:latest", "registry:5000/x@sha256:..."):
    it starts with a letter or digit, so it can never be read as a command-line option."""
    if not isinstance(value, str) or not value:
        return "is required"
    if value.startswith("-"):
        return 'must not start with "-" (it would be read as an option): give an image reference such as "name:tag"'
    if not _IMAGE.fullmatch(value):
        return 'must be an image reference such as "matrixdotorg/synapse:latest" (lowercase name, optional :tag)'
    return None


def path(value: object) -> str | None:
    """A local file path: printable, no newline, no shell metacharacters."""
    if not isinstance(value, str) or not value:
        return "is required"
    for ch in value:
        if not ch.isprintable() or ch in "\"'`$;|&<>\\":
            return f'contains "{ch!s}", which is not allowed in a path here'
    return None


_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def ssh_public_key(value: object) -> str | None:
    """An optional OpenSSH public key line: TYPE BASE64 [comment]."""
    if not isinstance(value, str) or not value:
        return None
    parts = value.split(" ")
    if len(parts) not in (2, 3) or parts[0] not in _KEY_TYPES:
        return 'must look like "ssh-ed25519 AAAA..." (the line from the host\'s /etc/ssh/ssh_host_ed25519_key.pub)'
    if len(parts) == 3 and not re.fullmatch(r"[A-Za-z0-9@._-]+", parts[2]):
        return "has a comment with characters other than letters, digits and @ . _ -"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return "has a key that is not valid base64"
    name_len = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    if blob[4 : 4 + name_len].decode("ascii", "replace") != parts[0]:
        return f"the key data is not an {parts[0]} key"
    return None
