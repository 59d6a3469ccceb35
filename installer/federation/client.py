"""The client side as a stranger sees it: client .well-known, /versions, registration, admin login."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from installer.federation.diagnose import connection_problem, http_status_problem
from installer.federation.net import Fetched, Net, NetError, join_host_port
from installer.federation.report import Check

TOKEN_FLOW = "m.login.registration_token"


@dataclass
class ClientWellKnown:
    check: Check
    base_url: str


@dataclass(frozen=True)
class AdminLogin:
    """The admin account the check logs in with, and where: https://<matrix_host> from the
    answers, never the base URL a live .well-known names (anyone able to change that document
    would otherwise receive the password)."""

    user: str
    password: str
    matrix_host: str

    @property
    def base_url(self) -> str:
        return f"https://{self.matrix_host}"

    def __repr__(self) -> str:
        return f"AdminLogin(user={self.user!r}, password='********', matrix_host={self.matrix_host!r})"


def _failed(name: str, exc: NetError, url: str) -> Check:
    parts = urlsplit(url)
    port = parts.port or 443
    detail, fix = connection_problem(exc, where=join_host_port(parts.hostname or "", port), port=port)
    return Check(name, False, f"{url}: {detail}" if not detail.startswith(url) else detail, fix)


async def client_well_known(net: Net, server_name: str) -> ClientWellKnown:
    url = f"https://{server_name}/.well-known/matrix/client"
    fallback = f"https://{server_name}"
    example = '{"m.homeserver": {"base_url": "https://matrix.example.org"}}'
    try:
        answer = await net.fetch(url, max_bytes=50 * 1024)
    except NetError as exc:
        return ClientWellKnown(_failed("client-well-known", exc, url), fallback)
    if answer.status != 200 or not answer.body.strip():
        what = f"answered {answer.reason}" + (" with an empty body" if answer.status == 200 else "")
        return ClientWellKnown(Check("client-well-known", False, f"{url} {what}",
                                     f"serve {example} there, with Access-Control-Allow-Origin \"*\""), fallback)
    try:
        data = json.loads(answer.body)
        base_url = data["m.homeserver"]["base_url"]
        if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("https", "http"):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return ClientWellKnown(Check("client-well-known", False,
                                     f"{url} has no valid m.homeserver.base_url: {answer.body[:80].decode('utf-8', 'replace')!r}",
                                     f"serve {example} there"), fallback)
    base_url = base_url.rstrip("/")
    origin = answer.headers.get("access-control-allow-origin")
    if not origin:
        return ClientWellKnown(Check(
            "client-well-known", False,
            f"{url} has no Access-Control-Allow-Origin header: web clients such as Element cannot read it",
            f"add `header /.well-known/matrix/* Access-Control-Allow-Origin \"*\"` to the {server_name} site "
            "in the Caddyfile and reload Caddy"), base_url)
    detail = f"m.homeserver.base_url = {base_url} (CORS {origin})"
    content_type = answer.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        return ClientWellKnown(Check(
            "client-well-known", True, f"{detail}; but served as {content_type or 'no Content-Type'}, not application/json",
            "send it with Content-Type: application/json (some clients refuse anything else)", warning=True), base_url)
    return ClientWellKnown(Check("client-well-known", True, detail), base_url)


def _body_json(answer: Fetched) -> Any:
    try:
        return json.loads(answer.body)
    except ValueError:
        return None


LONGEST_RATE_LIMIT_WAIT = 30.0
"""Seconds a rate-limited request is worth waiting for (Synapse's login limit frees a slot in ~6 s)."""


def rate_limit_wait(status: int, body: str | bytes) -> float | None:
    """Seconds to wait before asking again, when a 429 answer says (`retry_after_ms`) a short
    enough wait; None otherwise. A rerun logs the admin in a few times within seconds (the TURN
    check, the self-test, the federation test), which Synapse's per-account login limit refuses."""
    if status != 429:
        return None
    try:
        data = json.loads(body or "{}")
    except ValueError:
        return None
    wait = data.get("retry_after_ms") if isinstance(data, dict) else None
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait / 1000 <= LONGEST_RATE_LIMIT_WAIT:
        return None
    return wait / 1000 + 0.1


async def client_versions(net: Net, base_url: str) -> Check:
    url = f"{base_url}/_matrix/client/versions"
    try:
        answer = await net.fetch(url)
    except NetError as exc:
        return _failed("client-versions", exc, url)
    data = _body_json(answer) if answer.status == 200 else None
    if not isinstance(data, dict) or not isinstance(data.get("versions"), list) or not data["versions"]:
        if answer.status == 200 and answer.body.strip():
            return Check("client-versions", False, f"{url} answered 200 but not a versions list",
                         "the Caddyfile must reverse_proxy /_matrix/* to Synapse unchanged")
        detail, fix = http_status_problem(answer.reason, answer.status, url, answer.body)
        return Check("client-versions", False, detail, fix)
    versions = [v for v in data["versions"] if isinstance(v, str)]
    return Check("client-versions", True, f"{base_url} speaks Matrix {versions[-1] if versions else '?'} ({len(versions)} versions)")


def _registration_state(answer: Fetched) -> tuple[str, str]:
    """("closed" | "token" | "open" | "unknown", words) from POST /register with an empty body."""
    data = _body_json(answer)
    if answer.status == 403 and isinstance(data, dict) and data.get("errcode") == "M_FORBIDDEN":
        return "closed", f"closed (POST /register refused: 403 M_FORBIDDEN \"{data.get('error', '')}\")"
    if answer.status == 401 and isinstance(data, dict) and isinstance(data.get("flows"), list):
        flows = [f.get("stages", []) for f in data["flows"] if isinstance(f, dict)]
        shown = " | ".join(", ".join(stages) or "(none)" for stages in flows)
        if flows and all(TOKEN_FLOW in stages for stages in flows):
            return "token", f"open with a registration token (flows: {shown})"
        return "open", f"open to anyone (flows: {shown})"
    return "unknown", f"POST /register answered {answer.reason}: {answer.body[:80].decode('utf-8', 'replace')!r}"


async def registration(net: Net, base_url: str, expect_policy: str | None) -> Check:
    url = f"{base_url}/_matrix/client/v3/register"
    try:
        answer = await net.fetch(url, method="POST", json={})
    except NetError as exc:
        return _failed("registration", exc, url)
    state, words = _registration_state(answer)
    if state == "unknown":
        detail, fix = http_status_problem(answer.reason, answer.status, url, answer.body)
        return Check("registration", False, detail if answer.status >= 500 else words, fix)
    if expect_policy is None:
        return Check("registration", True, words)
    wanted = {"closed": "closed", "open-until-admin": "closed", "token": "token"}.get(expect_policy, expect_policy)
    if state == wanted:
        return Check("registration", True, f"{words}, as the policy \"{expect_policy}\" wants")
    if wanted == "closed":
        fix = ("set enable_registration: false in homeserver.yaml and restart Synapse "
               "(`docker compose restart` in /opt/matrix/synapse); rerun to let the installer do it")
    else:
        fix = ("set enable_registration: true and registration_requires_token: true in homeserver.yaml, "
               "then restart Synapse")
    return Check("registration", False, f"registration is {words}, but the policy is \"{expect_policy}\"", fix)


async def admin_login(net: Net, admin: AdminLogin, server_name: str) -> Check:
    """Log in as the admin at https://<matrix_host>, then log that session out again. The password
    never leaves this function."""
    user, password, base_url = admin.user, admin.password, admin.base_url
    user_id = user if user.startswith("@") else f"@{user}:{server_name}"
    url = f"{base_url}/_matrix/client/v3/login"
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password,
            "initial_device_display_name": "matrix-installer check"}
    for _ in range(3):
        try:
            answer = await net.fetch(url, method="POST", json=body)
        except NetError as exc:
            return _failed("admin-login", exc, url)
        if (wait := rate_limit_wait(answer.status, answer.body)) is None:
            break
        await asyncio.sleep(wait)
    data = _body_json(answer)
    if answer.status == 200 and isinstance(data, dict) and data.get("access_token"):
        try:
            await net.fetch(f"{base_url}/_matrix/client/v3/logout", method="POST", json={},
                            headers={"Authorization": f"Bearer {data['access_token']}"})
        except NetError:
            pass  # the login worked; a lingering device is harmless
        return Check("admin-login", True, f"{data.get('user_id', user_id)} can log in")
    errcode = data.get("errcode", "") if isinstance(data, dict) else ""
    if answer.status == 403:
        return Check("admin-login", False, f"{user_id} cannot log in: {errcode or '403'} (wrong user or password)",
                     "reset the admin's password with the admin API, or create the account with "
                     "`register_new_matrix_user -c /data/homeserver.yaml -a` inside the Synapse container")
    if answer.status == 429:
        return Check("admin-login", False, f"{user_id}: login rate-limited (429), still after waiting as Synapse asked",
                     "wait a minute and run the check again")
    detail, fix = http_status_problem(answer.reason, answer.status, url, answer.body)
    return Check("admin-login", False, detail, fix)


async def client_checks(net: Net, server_name: str, *, expect_policy: str | None,
                        admin: AdminLogin | None) -> tuple[list[Check], str]:
    """All client-side checks; the client .well-known first (it names the base URL the public
    checks use), then the rest together. The admin logs in at its own matrix_host, whatever the
    .well-known says."""
    found = await client_well_known(net, server_name)
    jobs = [client_versions(net, found.base_url), registration(net, found.base_url, expect_policy)]
    if admin is not None:
        if not isinstance(admin, AdminLogin):
            raise TypeError("admin must be an AdminLogin: where to log in comes from the answers, never from .well-known")
        jobs.append(admin_login(net, admin, server_name))
    rest = await asyncio.gather(*jobs)
    return [found.check, *rest], found.base_url
