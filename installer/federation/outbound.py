"""The outbound check: our server reaches another one (`--peer`, default matrix.org) through its
own federation client, and when it cannot, a look from inside its container and from the host
names the likely cause (DNS inside the container, egress blocked, the remote's TLS).

How our server is made to reach out: a room alias look-up on the peer,
`GET /_matrix/client/v3/directory/room/%23matrix-installer-outbound-check:PEER`. It needs no
account (the client-server API serves it without one), and Synapse answers it by sending a
signed federation query to the peer (`/_matrix/federation/v1/query/directory`). A 404 that comes
back means the whole path worked: DNS and .well-known discovery, TLS (Synapse's own trust
store and its IP range blocklist), egress from the container, and the peer accepted our
signature (it fetched our keys to check it). A 502 ("Failed to fetch alias") means it did not.

Why not the notary API (`POST /_matrix/key/v2/query`)? Since Synapse 1.91 a notary answers
from the keys it already has and fetches only to refresh them: for a server it has never seen
it returns an empty list without contacting it, so it cannot prove a first contact (see
synapse/rest/key/v2/remote_key_resource.py, `query_keys`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from installer.federation.report import Check

PROBE_LOCALPART = "matrix-installer-outbound-check"
DEFAULT_PEER = "matrix.org"
NO_PEER = "none"


def probe_path(peer: str) -> str:
    """The client-server API path that makes our server ask `peer` over federation."""
    return "/_matrix/client/v3/directory/room/" + quote(f"#{PROBE_LOCALPART}:{peer}", safe="")


def not_tested(why: str) -> Check:
    return Check("outbound", True, f"not tested: {why}", None, warning=True)


def judge_answer(peer: str, status: int, body: str, seconds: float, via: str) -> Check | None:
    """The outbound check from our server's answer to the alias look-up; None when it failed
    (the caller then looks for the cause)."""
    try:
        data: Any = json.loads(body or "{}")
    except ValueError:
        data = {}
    errcode = data.get("errcode", "") if isinstance(data, dict) else ""
    if status == 404 and errcode == "M_NOT_FOUND" or status == 200 and isinstance(data, dict) and data.get("room_id"):
        return Check("outbound", True,
                     f"our server asked {peer} over federation and got its answer in {seconds:.2f} s ({via}): DNS, "
                     f"TLS and egress from the homeserver's container work, and {peer} accepted our signature")
    return None


def failed_words(peer: str, status: int | None, body: str, seconds: float) -> str:
    """What our server said when it could not ask `peer`."""
    if status is None:
        return f"our server did not answer the look-up on {peer} within {seconds:.0f} s (it kept trying to reach {peer})"
    try:
        data = json.loads(body or "{}")
        said = f"{data.get('errcode', '')} {data.get('error', '')}".strip() if isinstance(data, dict) else ""
    except ValueError:
        said = body[:80]
    return f"our server could not get an answer from {peer} over federation (HTTP {status}{': ' + said if said else ''})"


# --- looking for the cause ----------------------------------------------------------------------

PROBE_SCRIPT = r'''
import json, socket, ssl, sys

TIMEOUT = 6.0
peer = sys.argv[1]
steps = []


def add(**step):
    steps.append(step)
    return step["ok"]


def split(name):
    if name.startswith("["):
        host, _, rest = name[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif name.count(":") == 1:
        host, port = name.split(":")
    else:
        host, port = name, ""
    return host, (int(port) if port.isdigit() else None)


def is_ip(host):
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False


def shown(sockaddr):
    host, port = sockaddr[0], sockaddr[1]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def reach(host, port, path, purpose):
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        add(step="dns", ok=False, purpose=purpose, name=host, error=exc.strerror or str(exc), code=exc.errno)
        return None
    addresses = []
    for info in infos:
        if shown(info[4]) not in addresses:
            addresses.append(shown(info[4]))
    add(step="dns", ok=True, purpose=purpose, name=host, addresses=addresses)
    sock, errors = None, []
    for info in infos:
        try:
            sock = socket.socket(info[0], socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT)
            sock.connect(info[4])
            where = shown(info[4])
            break
        except OSError as exc:
            sock.close()
            sock = None
            errors.append("%s: %s" % (shown(info[4]), "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))))
    if sock is None:
        add(step="connect", ok=False, purpose=purpose, name=host, port=port, error="; ".join(errors))
        return None
    add(step="connect", ok=True, purpose=purpose, name=host, address=where)
    try:
        tls = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        add(step="tls", ok=False, purpose=purpose, name=host, address=where, error=exc.verify_message or str(exc), verify=True)
        return None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        add(step="tls", ok=False, purpose=purpose, name=host, address=where, error=str(exc), verify=False)
        return None
    add(step="tls", ok=True, purpose=purpose, name=host, address=where, version=tls.version())
    hostport = host if port == 443 else "%s:%d" % (host, port)
    data = b""
    try:
        tls.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: matrix-installer-outbound-probe\r\n\r\n" % (path, hostport)).encode())
        while len(data) < 65536:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        add(step="http", ok=False, purpose=purpose, url="https://%s%s" % (hostport, path), error=str(exc))
        return None
    finally:
        tls.close()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    add(step="http", ok=status == 200, purpose=purpose, url="https://%s%s" % (hostport, path), status=status)
    return status, body


host, port = split(peer)
target = None
if port is None and not is_ip(host):
    got = reach(host, 443, "/.well-known/matrix/server", "well-known")
    if got and got[0] == 200:
        try:
            target = split(json.loads(got[1].decode())["m.server"])
        except Exception:
            target = None
if target is None:
    target = (host, port)
reach(target[0], target[1] or 8448, "/_matrix/federation/v1/version", "federation")
print(json.dumps({"peer": peer, "steps": steps}))
'''
"""Run with `python3 - PEER` inside the homeserver's container and on the host: the spec's
discovery (.well-known, then the host on 8448; SRV records are not looked up: the standard
library has no SRV query), each step (dns, connect, tls, http) reported as one JSON line."""


@dataclass(frozen=True)
class Probe:
    """What one look (inside the container, or on the host) found: its steps in order."""

    steps: list[dict[str, Any]]

    @classmethod
    def parse(cls, text: str) -> Probe | None:
        for line in reversed(text.strip().splitlines()):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("steps"), list):
                return cls([s for s in data["steps"] if isinstance(s, dict)])
        return None

    def first_failure(self) -> dict[str, Any] | None:
        """The step that stopped the way to the peer's federation port, or None when it got
        through. When the .well-known fetch failed on the network too, that is named: it is what
        a server tries first (a server name without a web server is fine when the rest works)."""
        failed = next((s for s in self.steps if s.get("purpose") == "federation" and not s.get("ok")), None)
        if failed is None:
            return None
        well_known = next((s for s in self.steps if s.get("purpose") == "well-known" and not s.get("ok")), None)
        if well_known is not None and well_known.get("step") in ("dns", "connect", "tls"):
            return well_known
        return failed

    def step(self, kind: str, purpose: str = "federation") -> dict[str, Any] | None:
        return next((s for s in self.steps if s.get("step") == kind and s.get("purpose") == purpose), None)


def _where(step: dict[str, Any]) -> str:
    if step.get("address"):
        return str(step["address"])
    port = step.get("port")
    return f"{step.get('name', '?')}:{port}" if port else str(step.get("name", "?"))


def diagnose(peer: str, answer: str, container: Probe | None, host: Probe | None,
             rules: list[str] | None = None, *, service: str = "synapse", said: str = "") -> Check:
    """The failed outbound check with its likely cause, from the two looks. `answer`: what our
    server said (failed_words); `rules`: the host's own DOCKER-USER rules, if any; `said`: the
    homeserver's own log line about the failed look-up, if it wrote one."""
    if container is None:
        return Check("outbound", False, f"{answer}; the look from inside the {service} container gave no answer",
                     f"run `sudo docker exec {service} python3 -c 'import socket; print(socket.getaddrinfo(\"{peer}\", 443))'` "
                     f"on the host, and see `sudo docker logs --tail 50 {service}`")
    failure = container.first_failure()
    host_step = None
    if host is not None and failure is not None:
        host_step = host.step(failure["step"], failure.get("purpose", "federation")) or host.step(failure["step"])
    if failure is None:
        detail = (f"{answer}, though from inside the {service} container {peer} answers on its federation port"
                  + (f"; its log says: {said}" if said else ""))
        if "401" in said:
            return Check("outbound", False, detail,
                         f"{peer} refused our signed request: it could not fetch our server's keys to check it. See our "
                         "own federation test above; if it passes, run this again later: servers remember a failed "
                         ".well-known look-up for a while (Synapse: 2 minutes when the server was down, an hour when "
                         "the document was missing or invalid)")
        return Check("outbound", False, detail,
                     f"{peer} may have refused our request (it could not fetch our keys to check our signature: see our "
                     "own federation test above), or the homeserver's settings forbid it (federation_domain_whitelist, "
                     f"ip_range_blacklist): see `sudo docker logs --tail 50 {service}`")
    kind, name = failure["step"], failure.get("name", peer)
    error = failure.get("error", "")
    if kind == "dns":
        if host_step is not None and host_step.get("ok"):
            return Check("outbound", False,
                         f"{answer}: DNS inside the {service} container cannot resolve {name} ({error}), though the host "
                         f"resolves it ({', '.join(host_step.get('addresses', []))})",
                         "DNS inside the container is broken: Docker's embedded DNS forwards to the host's resolvers "
                         "(/etc/resolv.conf); fix those, or set \"dns\" in /etc/docker/daemon.json, then restart Docker "
                         "and Synapse")
        return Check("outbound", False,
                     f"{answer}: {name} does not resolve, neither inside the {service} container nor on the host ({error})",
                     f"check that {peer} is the right name, and the host's resolver (`resolvectl status` or /etc/resolv.conf)")
    if kind == "connect":
        if host_step is not None and host_step.get("ok"):
            found = f"; the host's DOCKER-USER chain has: {' | '.join(rules)}" if rules else ""
            return Check("outbound", False,
                         f"{answer}: egress from the {service} container is blocked: it cannot connect to {_where(failure)} "
                         f"({error}), while the host itself reaches {host_step.get('address', name)}{found}",
                         "a firewall rule drops the container's traffic, which the host forwards (FORWARD or DOCKER-USER, "
                         "not OUTPUT): `sudo iptables -S DOCKER-USER` and `sudo iptables -S FORWARD`; remove the rule "
                         "that matches, and keep Docker's own")
        return Check("outbound", False,
                     f"{answer}: neither the {service} container nor the host can connect to {_where(failure)} ({error})",
                     f"egress is blocked on the host (an OUTPUT rule, the cloud's egress rules: Oracle's security list "
                     f"egress) or {peer} is down on that port: try `curl -v https://{name}:{failure.get('port', 443)}` "
                     "on the host")
    if kind == "tls":
        what = "is not trusted" if failure.get("verify") else "failed"
        return Check("outbound", False,
                     f"{answer}: the TLS handshake with {name} at {_where(failure)} {what} inside the {service} container "
                     f"({error})",
                     f"the remote's TLS: {name} must present a certificate for {name} from a public CA (if the server is "
                     f"yours, run `matrix-installer --check {peer}`); a TLS-inspecting proxy on the way breaks it too")
    status = failure.get("status")
    return Check("outbound", False,
                 f"{answer}: {failure.get('url', peer)} answered {status or error} inside the {service} container",
                 f"{peer} does not serve federation there: run `matrix-installer --check {peer}` to see its side")


def docker_user_rules(text: str) -> list[str]:
    """The rules someone added to DOCKER-USER (`iptables -S DOCKER-USER`), Docker's own left out."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("-A DOCKER-USER") or line == "-A DOCKER-USER -j RETURN":
            continue
        found.append(line)
    return found


def homeserver_said(log_text: str, peer: str) -> str:
    """The homeserver's last log line about the look-up (Synapse: "Error retrieving alias ...")."""
    lines = [line.strip() for line in log_text.splitlines() if PROBE_LOCALPART in line and peer in line]
    if not lines:
        return ""
    line = lines[-1]
    cut = line.find("Error retrieving alias")
    return (line[cut:] if cut >= 0 else line)[-300:]
