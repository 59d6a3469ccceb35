"""The checks run against each address discovery found: TLS, server keys, federation version."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from installer.federation.diagnose import connection_problem, http_status_problem
from installer.federation.discovery import Address
from installer.federation.net import CertInfo, Fetched, Net, NetError

KEYS_PATH = "/_matrix/key/v2/server"
VERSION_PATH = "/_matrix/federation/v1/version"


@dataclass
class Problem:
    detail: str
    fix: str | None


@dataclass
class AddressReport:
    """Everything learned from one address (tester: ConnectionReports[address])."""

    address: Address
    connection: Problem | None = None
    connection_kind: str = ""
    cert: CertInfo | None = None
    tls_version: str = ""
    cipher: str = ""
    keys: dict[str, Any] | None = None
    keys_problem: Problem | None = None
    keys_detail: str = ""
    version: dict[str, Any] | None = None
    version_problem: Problem | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    ed25519: dict[str, dict[str, bool]] = field(default_factory=dict)
    verify_keys: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    date: str = ""
    """The server's Date header on the key response, and this machine's clock when it arrived."""
    received_at: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.connection or self.keys_problem or self.version_problem)

    def to_tester(self) -> dict[str, Any]:
        return {
            "Certificates": [self.cert.to_tester()] if self.cert else [],
            "Cipher": {"Version": self.tls_version, "CipherSuite": self.cipher},
            "Checks": {**self.checks, "Ed25519Checks": self.ed25519},
            "Errors": self.errors,
            "Ed25519VerifyKeys": self.verify_keys,
            "Keys": self.keys,
            "Version": self.version or {},
            "Info": {"Host": self.address.target.host_header, "SNI": self.address.target.sni,
                     "Step": self.address.target.step},
        }


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def verify_key_response(keys: Any, server_name: str, report: AddressReport, how: str) -> None:
    """Judge a /_matrix/key/v2/server body: name, validity, ed25519 keys, every signature."""
    from signedjson.key import decode_verify_key_bytes
    from signedjson.sign import SignatureVerifyException, verify_signed_json
    from unpaddedbase64 import decode_base64

    checks = report.checks
    if not isinstance(keys, dict):
        report.keys_problem = Problem("the key response is not a JSON object", None)
        return
    got = keys.get("server_name")
    checks["MatchingServerName"] = got == server_name
    valid_until = keys.get("valid_until_ts")
    checks["FutureValidUntilTS"] = isinstance(valid_until, int) and valid_until > time.time() * 1000
    verify_keys = keys.get("verify_keys") if isinstance(keys.get("verify_keys"), dict) else {}
    decoded = {}
    for key_id, info in verify_keys.items():
        if not key_id.startswith("ed25519:") or not isinstance(info, dict):
            continue
        try:
            decoded[key_id] = decode_verify_key_bytes(key_id, decode_base64(info.get("key", "")))
            report.verify_keys[key_id] = info["key"]
        except Exception:
            report.ed25519[key_id] = {"ValidEd25519": False, "MatchingSignature": False}
    checks["HasEd25519Key"] = bool(decoded)
    signer = got if isinstance(got, str) else server_name
    signatures = keys.get("signatures", {}).get(signer, {}) if isinstance(keys.get("signatures"), dict) else {}
    bad: list[str] = []
    for key_id, verify_key in decoded.items():
        matching = False
        if key_id in signatures:
            try:
                verify_signed_json(keys, signer, verify_key)
                matching = True
            except SignatureVerifyException:
                matching = False
        report.ed25519[key_id] = {"ValidEd25519": True, "MatchingSignature": matching}
        if not matching:
            bad.append(key_id)
    unknown = [k for k in signatures if k.startswith("ed25519:") and k not in decoded]
    checks["AllEd25519ChecksOK"] = bool(decoded) and not bad and all(c["ValidEd25519"] for c in report.ed25519.values())

    if not checks["MatchingServerName"]:
        report.keys_problem = Problem(
            f"the keys are for {got}, not {server_name}: {report.address.target.host} runs another homeserver",
            f"point {how} at the Synapse whose server_name is {server_name}, or fix server_name in homeserver.yaml "
            "(changing it needs a fresh database)")
    elif not checks["HasEd25519Key"]:
        report.keys_problem = Problem("the key response has no ed25519 verify key",
                                      "Synapse's signing key is missing or unreadable: check signing_key_path in homeserver.yaml")
    elif bad:
        what = "has no signature" if all(k not in signatures for k in bad) else "signature does not verify"
        report.keys_problem = Problem(
            f"key {', '.join(bad)} {what}: the key response was altered on its way from Synapse",
            "let Caddy pass /_matrix/key/v2/server to Synapse unchanged (no `respond` or rewriting proxy in "
            "front of it), and keep the signing key that matches the published one")
    elif not checks["FutureValidUntilTS"]:
        report.keys_problem = Problem(
            f"the keys expired (valid_until_ts {valid_until!r}{' = ' + _utc(valid_until) if isinstance(valid_until, int) else ''})",
            "check the server's clock (`timedatectl`) and restart Synapse")
    else:
        report.keys_detail = (f"{', '.join(decoded)} verified, server_name {got}, valid until {_utc(valid_until)}"
                              + (f" (unverifiable signatures by unknown keys: {', '.join(unknown)})" if unknown else ""))


def _json_or_problem(answer: Fetched) -> tuple[Any, Problem | None]:
    if answer.status != 200 or not answer.body.strip():
        detail, fix = http_status_problem(answer.reason, answer.status, answer.url, answer.body)
        return None, Problem(detail, fix)
    try:
        return json.loads(answer.body), None
    except ValueError:
        return None, Problem(f"{answer.url} answered 200 but not JSON: {answer.body[:60]!r}",
                             "the Caddyfile must reverse_proxy /_matrix/* to Synapse unchanged")


async def check_address(net: Net, address: Address, server_name: str, how: str) -> AddressReport:
    """TLS, keys and version for one address; the two requests go out together."""
    report = AddressReport(address)
    report.checks = {"AllChecksOK": False, "MatchingServerName": False, "FutureValidUntilTS": False,
                     "HasEd25519Key": False, "AllEd25519ChecksOK": False, "ValidCertificates": False}
    target = address.target

    async def get(path: str) -> Fetched | NetError:
        try:
            return await net.request_at(address.ip, address.port, sni=target.sni, host_header=target.host_header,
                                        method="GET", path=path, max_bytes=512 * 1024)
        except NetError as exc:
            return exc

    keys_answer, version_answer = await asyncio.gather(get(KEYS_PATH), get(VERSION_PATH))
    for answer in (keys_answer, version_answer):
        if isinstance(answer, NetError):
            detail, fix = connection_problem(answer, where=address.label, port=target.port, srv_step=target.step.startswith("srv") and target.sni == server_name,
                                             server_name=server_name)
            report.connection = Problem(detail, fix)
            report.connection_kind = answer.kind
            report.cert = answer.cert
            report.errors.append(detail)
            return report
    assert isinstance(keys_answer, Fetched) and isinstance(version_answer, Fetched)
    report.cert, report.tls_version, report.cipher = keys_answer.cert, keys_answer.tls_version, keys_answer.cipher
    report.date, report.received_at = keys_answer.headers.get("date", ""), keys_answer.received_at
    report.checks["ValidCertificates"] = True

    keys, report.keys_problem = _json_or_problem(keys_answer)
    if keys is not None:
        report.keys = keys if isinstance(keys, dict) else None
        verify_key_response(keys, server_name, report, how)
    version, report.version_problem = _json_or_problem(version_answer)
    if version is not None:
        server = version.get("server") if isinstance(version, dict) else None
        if isinstance(server, dict) and server.get("name"):
            report.version = {"name": str(server.get("name")), "version": str(server.get("version", ""))}
        else:
            report.version_problem = Problem(f"{version_answer.url} has no server name and version: {version!r:.80}",
                                             "the Caddyfile must reverse_proxy /_matrix/* to Synapse unchanged")
    for problem in (report.keys_problem, report.version_problem):
        if problem:
            report.errors.append(problem.detail)
    report.checks["AllChecksOK"] = report.ok and all(
        report.checks[k] for k in ("MatchingServerName", "FutureValidUntilTS", "HasEd25519Key",
                                   "AllEd25519ChecksOK", "ValidCertificates"))
    return report
