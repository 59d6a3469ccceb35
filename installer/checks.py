"""Field validators: each takes a value and returns what is wrong with it, or None.

These guard every value that later reaches a shell command, a Caddyfile or YAML, so they are
strict allow-lists rather than deny-lists: a value passes only if it is made of characters that
are harmless in all three places.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from installer import shown

Check = Callable[[object], "str | None"]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_HOST_CHARS = re.compile(r"[A-Za-z0-9.-]")
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._:/?@+=&%]")
_NAMED = {"\n": "a newline", "\t": "a tab", " ": "a space", "\r": "a carriage return"}


def _bad_char(value: str, allowed: re.Pattern[str] = _HOST_CHARS) -> str | None:
    """Name the first character outside the allow-list, the way a person would read it."""
    for ch in value:
        if not allowed.fullmatch(ch):
            return f"contains {_char_words(ch)}, which is not allowed here"
    return None


def _char_words(ch: str) -> str:
    """A character as a person reads it: "a newline", "\"$\"", "\\u202e" (never raw when unprintable)."""
    return _NAMED.get(ch, f'"{ch}"' if ch.isprintable() else f'"{shown.escape(ch)}"')


def hostname(value: object, *, fqdn: bool = True) -> str | None:
    """An RFC 1123 host name; with fqdn, at least two labels (a public domain)."""
    if not isinstance(value, str) or not value:
        return "is required"
    if len(value) > 253:
        return f"is longer than 253 characters ({len(value):,})"
    if not value.isascii():
        try:
            ascii_form = value.lower().encode("idna").decode()
        except UnicodeError:
            return _bad_char(value)
        return f"must be written in ASCII: write {shown.quoted(ascii_form, 253)} (its IDNA form)"
    if "://" in value or value.lower().startswith(("http:", "https:", "www.")) and "/" in value:
        host = urlsplit(value if "://" in value else "//" + value).hostname or ""
        example = host if host and hostname(host, fqdn=fqdn) is None else "example.org"
        return f'is a web address: type just the domain, e.g. "{example}"'
    if ":" in value and value.rpartition(":")[2].isdigit():
        return "has a port: give the name alone (federation's port follows from the delegation)"
    if bad := _bad_char(value):
        return bad
    if not value.strip("."):
        return 'is only dots: give a domain name such as "example.org"'
    if value.startswith("."):
        without = value.lstrip(".").lower()
        return f'starts with a dot: write "{without}"' if hostname(without, fqdn=fqdn) is None else "starts with a dot"
    if value != value.lower():
        fixed = value.lower().rstrip(".")  # advise the whole fix at once when that is all
        return f'must be lowercase: write "{fixed if hostname(fixed, fqdn=fqdn) is None else value.lower()}"'
    if value.endswith("."):
        without = value.rstrip(".")
        if hostname(without, fqdn=fqdn) is None:
            return f'drop the trailing dot: write "{without}"'
        value = without  # say what else is wrong with it
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


_ZONE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
"""An IPv6 zone: a network interface's name (Linux allows 15 characters) or its index."""


def ip_address(value: object) -> str | None:
    """An IPv4 or IPv6 address; an IPv6 zone (fe80::1%eth0) must be an interface name.

    Python's ipaddress takes any text after the % as the zone, `;`, `$(...)` and newlines
    included: that text would reach ssh, DNS instructions and logs."""
    if not isinstance(value, str) or not value:
        return "is required"
    address, percent, zone = value.partition("%")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{shown.quoted(value)} is not an IP address"
    if percent:
        if ip.version != 6:
            return "has a zone (after %), which only IPv6 addresses have"
        if not _ZONE.fullmatch(zone):
            return f"has a zone {shown.quoted(zone)} that is not a network interface's name (letters, digits, _ . -, up to 15)"
    return None


def is_ip_address(value: object) -> bool:
    """Whether `value` is written as an IP address (its zone, if any, not judged)."""
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value.partition("%")[0])
        return True
    except ValueError:
        return False


def host_or_ip(value: object) -> str | None:
    """A host name (a single label is fine) or an IPv4/IPv6 address (a zone only as `ip_address` allows)."""
    if is_ip_address(value):
        return ip_address(value)
    return hostname(value, fqdn=False)


def port_text(text: str) -> int | None:
    """The port written in `text` (digits), or None when it is not one from 1 to 65535. Never
    int() of thousands of digits: Python refuses those with a ValueError of its own."""
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        return None
    number = int(text)
    return number if 1 <= number <= 65535 else None


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
        return f"host {shown.quoted(host)} {problem}"
    try:
        given = parts.port
    except ValueError:  # over 65535, or not a number
        given = 0
    if given == 0:
        return "has a port that is not a number from 1 to 65535"
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


def name(regex: str, what: str) -> Check:
    """A lowercase ASCII name (a user name): a letter outside ASCII is named as such, and a name
    that is right but for capitals is told its lowercase form."""

    def check(value: object) -> str | None:
        if not isinstance(value, str) or not value:
            return "is required"
        if re.fullmatch(regex, value):
            return None
        if not value.isascii():
            other = next(ch for ch in value if not ch.isascii())
            return f"must be ASCII: {_char_words(other)} is not ASCII; it must be {what}"
        if value != value.lower() and re.fullmatch(regex, value.lower()):
            return f'must be lowercase: write "{value.lower()}"'
        return f"must be {what}"

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
    """A local file path: printable, no newline, no shell metacharacters, and not starting with
    "-" (it is shown in commands to copy, such as ssh-copy-id's, where it would read as an option)."""
    if not isinstance(value, str) or not value:
        return "is required"
    if value.startswith("-"):
        return f'must not start with "-" (it would be read as an option): write "./{shown.value(value, 60)}" for a file of that name here'
    for ch in value:
        if not ch.isprintable() or ch in "\"'`$;|&<>\\":
            return f"contains {_char_words(ch)}, which is not allowed in a path here"
    return None


# What each key type's blob holds after its name: the fields, and a check of their sizes.
_KEY_BODIES: dict[str, Callable[[list[bytes]], bool]] = {
    "ssh-ed25519": lambda f: len(f) == 1 and len(f[0]) == 32,
    "ecdsa-sha2-nistp256": lambda f: len(f) == 2 and f[0] == b"nistp256" and len(f[1]) == 65,
    "ecdsa-sha2-nistp384": lambda f: len(f) == 2 and f[0] == b"nistp384" and len(f[1]) == 97,
    "ecdsa-sha2-nistp521": lambda f: len(f) == 2 and f[0] == b"nistp521" and len(f[1]) == 133,
    "ssh-rsa": lambda f: len(f) == 2 and 0 < len(f[0]) <= 8 and len(f[1].lstrip(b"\0")) >= 128,
}
_KEY_TYPES = tuple(_KEY_BODIES)


def _ssh_fields(blob: bytes) -> list[bytes] | None:
    """The length-prefixed fields of an SSH public key blob (RFC 4253), or None when it is cut short."""
    fields, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            return None
        size = int.from_bytes(blob[at : at + 4], "big")
        at += 4
        if at + size > len(blob):
            return None
        fields.append(blob[at : at + size])
        at += size
    return fields


def ssh_public_key(value: object) -> str | None:
    """An optional OpenSSH public key line: TYPE BASE64 [comment], whose base64 holds a whole key
    of that type (its name alone, or a key cut short, is not a key)."""
    if not isinstance(value, str) or not value:
        return None
    parts = value.split(" ")
    if len(parts) not in (2, 3) or parts[0] not in _KEY_TYPES or not parts[1]:
        return 'must look like "ssh-ed25519 AAAA..." (the line from the host\'s /etc/ssh/ssh_host_ed25519_key.pub)'
    if len(parts) == 3 and not re.fullmatch(r"[A-Za-z0-9@._-]+", parts[2]):
        return "has a comment with characters other than letters, digits and @ . _ -"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return "has a key that is not valid base64"
    fields = _ssh_fields(blob)
    if not fields or fields[0] != parts[0].encode():
        return f"the key data is not an {parts[0]} key"
    if not _KEY_BODIES[parts[0]](fields[1:]):
        return f"the key data holds no whole {parts[0]} key (cut short?): copy the whole line again"
    return None


def ca_bundle(value: object) -> str | None:
    """A CA bundle file: a regular file holding at least one PEM certificate that Python's ssl loads."""
    if not isinstance(value, str | Path) or not str(value):
        return "is empty: give the path of a PEM file of CA certificates"
    path = Path(value)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "does not exist: give the path of a PEM file of CA certificates"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder: give the path of a PEM file of CA certificates inside it"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file: give the path of a PEM file of CA certificates"
    if info.st_size > 10 * 1024 * 1024:
        return f"is {info.st_size:,} bytes: too large for a CA bundle"
    import ssl  # only when a CA file is given

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError):  # before OSError: SSLError is one
        return "holds no PEM certificate (-----BEGIN CERTIFICATE-----) that can be loaded"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or shown.error_words(exc)})"
    if not context.cert_store_stats()["x509"]:
        return "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    return None
