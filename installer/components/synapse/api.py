"""HTTP to Synapse on the host's loopback, through curl over the SSH connection: requests are
logged, bodies never (responses carry access tokens and registration tokens)."""

from __future__ import annotations

import asyncio
import json

from installer.components.homeserver import Response
from installer.engine import StageContext, StageError
from installer.remote import CommandResult, RemoteCommandError

SYNAPSE_URL = "http://127.0.0.1:8008"


def _curl_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def curl_config(method: str, url: str, *, body: object | None = None, token: str | None = None) -> str:
    """A curl config (read from stdin with `curl -K -`): tokens and passwords stay off the command line."""
    lines = [f"url = {_curl_value(url)}", f"request = {_curl_value(method)}", "silent", "show-error",
             "max-time = 30", f"write-out = {_curl_value(chr(10) + '%{http_code}')}"]
    if token is not None:
        lines.append(f"header = {_curl_value('Authorization: Bearer ' + token)}")
    if body is not None:
        lines.append(f"header = {_curl_value('Content-Type: application/json')}")
        lines.append(f"data-binary = {_curl_value(json.dumps(body))}")
    return "\n".join(lines) + "\n"


async def request(ctx: StageContext, method: str, path: str, *, body: object | None = None, token: str | None = None,
                  dry_output: str = "{}\n200") -> Response:
    """One request to Synapse on the host's loopback. The request is logged; bodies never are
    (responses can carry access tokens and registration tokens)."""
    from installer.federation.client import rate_limit_wait

    for _ in range(3):
        answer = await _request_once(ctx, method, path, body=body, token=token, dry_output=dry_output)
        if (wait := rate_limit_wait(answer.status, answer.body)) is None:
            break
        ctx.log(f"Synapse asks to wait {wait:.0f} s (rate limit): waiting")
        await asyncio.sleep(wait)
    return answer


async def _request_once(ctx: StageContext, method: str, path: str, *, body: object | None, token: str | None,
                        dry_output: str) -> Response:
    ctx.log(f"{method} {SYNAPSE_URL}{path}" + (" (as the admin)" if token else ""), "command")

    def log(line: str, kind: str) -> None:
        if kind == "err":
            ctx.log(line, kind)

    try:
        result: CommandResult = await ctx.remote.run(
            "curl -K -", log=log, input=curl_config(method, SYNAPSE_URL + path, body=body, token=token),
            check=False, timeout=60, dry_output=dry_output,
        )
    except RemoteCommandError:  # a timeout: its output could hold a token, so it is not shown
        raise StageError(f"{method} {path} got no answer from Synapse on the host in time") from None
    text, _, code = result.stdout.rpartition("\n")
    if not result.ok or not code.strip().isdigit():
        raise StageError(f"{method} {path}: no HTTP answer from Synapse on the host (curl status {result.exit_status})",
                         "is the synapse container running? sudo docker ps")
    return Response(int(code), text)


def parse_server_version(text: str) -> str | None:
    """Synapse's version from the admin API (`{"server_version": "1.163.2"}`) or the federation
    API (`{"server": {"name": "Synapse", "version": "1.163.2"}}`)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    version = data.get("server_version")
    if version is None and isinstance(data.get("server"), dict):
        version = data["server"].get("version")
    return str(version).split(" ", 1)[0] if version else None
