#!/usr/bin/env python3
"""matrix-selftest: the Matrix server tests itself from the host, daily (a systemd timer), and
tells its admin when something broke.

Written by matrix-installer (the selftest component); it runs on the host with Python 3's
standard library alone. What it checks, as other servers and the installer's own test do:
  well-known            https://SERVER_NAME/.well-known/matrix/server names the Matrix host
  tls@ADDR              each address (A and AAAA) of the federation host: a trusted TLS handshake
  server-keys@ADDR      /_matrix/key/v2/server there: this server's name, valid, the same keys
                        and signatures Synapse serves on the host's loopback
  federation-version@ADDR
  certificate-expiry    under 14 days left (or a fifth of a short certificate's lifetime) is said
  outbound              our server reaches the peer over federation (a room alias look-up)
  server-health         Synapse's /health, and free disk space
  backup-age, restore-test   with off-box backups: the last snapshot is younger than two schedule
                        periods, the weekly restore test passed (and ran within two weeks); a
                        failed restore test starts this script at once (systemd's OnFailure)
Each run appends one JSON line to history.jsonl and rewrites last.json (in the state directory,
/var/lib/matrix-selftest); a failure, or a certificate close to its end, is posted as a notice to
the "Server notices" room the admin is in (by the bot account whose token is in the token file),
and so is the recovery after a failure.

Usage: matrix-selftest [--config FILE] [--no-notify] [--quiet]; exit status 0 passed, 1 failed.
"""

import argparse
import json
import os
import shutil
import socket
import ssl
import sys
import time
import urllib.parse
from datetime import datetime, timezone

CONFIG = "/opt/matrix/synapse/selftest/config.json"
TIMEOUT = 10.0
EXPIRY_DAYS = 14
EXPIRY_SHARE = 0.2
HISTORY_KEEP = 1000
DISK_MIN_FREE = 0.10
DISK_MIN_BYTES = 1 << 30
RESTORE_TEST_MAX_AGE = 15 * 86400


def check(name, ok, detail, fix=None, warning=False):
    return {"name": name, "ok": bool(ok), "detail": detail, "fix": fix, "warning": bool(warning)}


def shown(host, port):
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


class Config:
    def __init__(self, data):
        self.server_name = data["server_name"]
        self.federation_host = data["federation_host"]
        self.federation_port = int(data["federation_port"])
        self.well_known = data.get("well_known")
        self.peer = data.get("peer")
        self.synapse_url = data.get("synapse_url", "http://127.0.0.1:8008").rstrip("/")
        self.room_id = data.get("room_id")
        self.token_file = data.get("token_file")
        self.state_dir = data.get("state_dir") or os.environ.get("STATE_DIRECTORY") or "/var/lib/matrix-selftest"
        self.disks = data.get("disks", ["/"])
        self.backup = data.get("backup") or None
        """{"status_file", "restore_test_file"}: where the off-box backups leave their results."""
        self.connect_to = data.get("connect_to", {})
        """Tests only: {"host:port": "ip:port"}, as curl's --connect-to."""
        self.ca_file = data.get("ca_file")


# --- the network -------------------------------------------------------------------------------

def tls_context(cfg):
    context = ssl.create_default_context()
    if cfg.ca_file:
        context.load_verify_locations(cfg.ca_file)
    return context


def addresses(cfg, host, port):
    """[(shown, ip, port)]: every address of host (A and AAAA), or the test's mapping."""
    mapped = cfg.connect_to.get("%s:%d" % (host, port))
    if mapped:
        ip, _, real = mapped.rpartition(":")
        return [(mapped, ip.strip("[]"), int(real))]
    found = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = info[4][0]
        if all(ip != f[1] for f in found):
            found.append((shown(ip, port), ip, port))
    return found


def https_get(cfg, ip, port, host, path, host_header=None):
    """One HTTPS GET at ip:port with SNI `host`: (status, headers, body, peer certificate dict)."""
    sock = socket.create_connection((ip, port), timeout=TIMEOUT)
    try:
        tls = tls_context(cfg).wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    try:
        cert = tls.getpeercert()
        request = "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: matrix-selftest\r\n\r\n" % (path, host_header or host)
        tls.sendall(request.encode())
        data = b""
        while len(data) < 1 << 20:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        tls.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body, cert


def local(cfg, method, path, body=None, token=None):
    """A request to Synapse on the host's loopback: (status, parsed JSON or None)."""
    import http.client

    url = urllib.parse.urlsplit(cfg.synapse_url + path)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=90)
    headers = {"User-Agent": "matrix-selftest"}
    if token:
        headers["Authorization"] = "Bearer " + token
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, url.path + ("?" + url.query if url.query else ""),
                     body=json.dumps(body) if body is not None else None, headers=headers)
        answer = conn.getresponse()
        raw = answer.read()
    finally:
        conn.close()
    try:
        return answer.status, json.loads(raw or b"null")
    except ValueError:
        return answer.status, raw.decode("utf-8", "replace")


def why(exc):
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate not trusted: %s" % (exc.verify_message or exc)
    if isinstance(exc, socket.timeout):
        return "no answer within %.0f s" % TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "DNS: %s" % (exc.strerror or exc)
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# --- the checks --------------------------------------------------------------------------------

def well_known(cfg):
    want = cfg.well_known
    url = "https://%s/.well-known/matrix/server" % cfg.server_name
    try:
        ip_port = addresses(cfg, cfg.server_name, 443)
    except socket.gaierror as exc:
        return [check("well-known", False, "%s: %s" % (url, why(exc)),
                      "the A record of %s is gone or DNS is broken: point it at this server" % cfg.server_name)], []
    checks, certs = [], []
    for at, ip, port in ip_port:
        try:
            status, headers, body, cert = https_get(cfg, ip, port, cfg.server_name, "/.well-known/matrix/server")
        except (OSError, ssl.SSLError, ValueError, IndexError) as exc:
            checks.append(check("well-known@" + at, False, "%s at %s: %s" % (url, at, why(exc)),
                                "check Caddy (`systemctl status caddy`) and the %s record of %s"
                                % ("AAAA" if at.startswith("[") else "A", cfg.server_name)))
            continue
        certs.append((cfg.server_name, cert))
        try:
            got = json.loads(body).get("m.server")
        except (ValueError, AttributeError):
            got = None
        if status == 200 and got == want:
            checks.append(check("well-known@" + at, True, "%s at %s: m.server = %s" % (url, at, got)))
        else:
            checks.append(check("well-known@" + at, False, "%s at %s answered %d with m.server = %s, not %s"
                                % (url, at, status, got, want),
                                "the Caddyfile's `respond /.well-known/matrix/server` line: rerun matrix-installer "
                                "with the same answers to put it back"))
    ok = all(c["ok"] for c in checks)
    summary = check("well-known", ok, ("m.server = %s" % want) if ok else next(c["detail"] for c in checks if not c["ok"]),
                    None if ok else next(c["fix"] for c in checks if not c["ok"]))
    return [summary] + checks, certs


def server_keys(cfg):
    """Every address of the federation host: TLS, the keys (compared with Synapse's own on the
    loopback: the same verify keys and signatures, so the proxy passes them unaltered), version."""
    host, port = cfg.federation_host, cfg.federation_port
    status, own = local(cfg, "GET", "/_matrix/key/v2/server")
    if status != 200 or not isinstance(own, dict):
        return [check("server-keys", False, "Synapse on the host's loopback did not answer /_matrix/key/v2/server (%s)"
                      % status, "is Synapse running? `sudo docker compose -f /opt/matrix/synapse/docker-compose.yml ps`")], []
    try:
        found = addresses(cfg, host, port)
    except socket.gaierror as exc:
        return [check("dns", False, "%s: %s" % (host, why(exc)), "the A record of %s is gone or DNS is broken" % host)], []
    checks, certs = [], []
    for at, ip, real_port in found:
        try:
            status, headers, body, cert = https_get(cfg, ip, real_port, host, "/_matrix/key/v2/server",
                                                    host if port == 443 else "%s:%d" % (host, port))
        except (OSError, ssl.SSLError, ValueError, IndexError) as exc:
            fix = ("the %s record of %s points at %s, where nothing answers on port %d: fix it or remove it"
                   % ("AAAA" if at.startswith("[") else "A", host, ip, port)
                   if not isinstance(exc, ssl.SSLError) and len(found) > 1 else
                   "check Caddy (`systemctl status caddy`, `journalctl -u caddy`)")
            checks.append(check("tls@" + at, False, "%s:%d at %s: %s" % (host, port, at, why(exc)), fix))
            continue
        certs.append((host, cert))
        checks.append(check("tls@" + at, True, "certificate for %s, valid until %s" % (host, cert.get("notAfter"))))
        try:
            keys = json.loads(body)
        except ValueError:
            keys = None
        if not isinstance(keys, dict) or status != 200:
            checks.append(check("server-keys@" + at, False, "/_matrix/key/v2/server at %s answered %d, not the keys"
                                % (at, status), "Caddy must pass /_matrix/* to Synapse (127.0.0.1:8008) unchanged"))
        elif keys.get("server_name") != cfg.server_name:
            checks.append(check("server-keys@" + at, False, "the keys at %s are for %s, not %s"
                                % (at, keys.get("server_name"), cfg.server_name),
                                "another homeserver answers there: point the records at this server"))
        elif not isinstance(keys.get("valid_until_ts"), int) or keys["valid_until_ts"] < time.time() * 1000:
            checks.append(check("server-keys@" + at, False, "the keys at %s expired" % at,
                                "check the server's clock (`timedatectl`) and restart Synapse"))
        elif (keys.get("verify_keys") != own.get("verify_keys")
              or keys.get("signatures", {}).get(cfg.server_name) != own.get("signatures", {}).get(cfg.server_name)):
            checks.append(check("server-keys@" + at, False, "the keys at %s differ from what Synapse serves on the host"
                                % at, "something between Caddy and Synapse changes them: the Caddyfile must "
                                "reverse_proxy /_matrix/* to 127.0.0.1:8008"))
        else:
            checks.append(check("server-keys@" + at, True, "%s, the same keys and signatures as Synapse's own"
                                % ", ".join(sorted(keys.get("verify_keys", {})))))
        try:
            status, _, body, _ = https_get(cfg, ip, real_port, host, "/_matrix/federation/v1/version",
                                           host if port == 443 else "%s:%d" % (host, port))
            server = json.loads(body).get("server", {})
            ok = status == 200 and bool(server.get("name"))
            checks.append(check("federation-version@" + at, ok, "%s %s" % (server.get("name"), server.get("version"))
                                if ok else "/_matrix/federation/v1/version at %s answered %d" % (at, status),
                                None if ok else "Caddy must pass /_matrix/* to Synapse unchanged"))
        except (OSError, ssl.SSLError, ValueError, AttributeError, IndexError) as exc:
            checks.append(check("federation-version@" + at, False, "%s: %s" % (at, why(exc)),
                                "check Caddy and Synapse"))
    return checks, certs


def cert_time(value):
    return datetime.strptime(value, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc).timestamp()


def left_words(seconds):
    if seconds < 2 * 86400:
        return "%.1f hours" % (seconds / 3600)
    return "%.0f days" % (seconds / 86400)


def certificate_expiry(certs, now):
    parts, short = [], []
    seen = set()
    for name, cert in certs:
        try:
            after, before = cert_time(cert["notAfter"]), cert_time(cert["notBefore"])
        except (KeyError, TypeError, ValueError):
            continue
        if (name, after) in seen:
            continue
        seen.add((name, after))
        left = after - now
        parts.append("%s: %s left (until %s)" % (name, left_words(left), cert["notAfter"]))
        if left < min(EXPIRY_DAYS * 86400, EXPIRY_SHARE * (after - before)):
            short.append(name)
    if not parts:
        return []
    if short:
        return [check("certificate-expiry", True, "; ".join(parts),
                      "the certificate for %s is close to its end and was not renewed: Caddy renews by itself when "
                      "Let's Encrypt can reach it (port 80 open, DNS right); see `journalctl -u caddy`"
                      % ", ".join(short), warning=True)]
    return [check("certificate-expiry", True, "; ".join(parts))]


def outbound(cfg):
    if not cfg.peer:
        return []
    alias = urllib.parse.quote("#matrix-installer-outbound-check:%s" % cfg.peer, safe="")
    started = time.monotonic()
    try:
        status, data = local(cfg, "GET", "/_matrix/client/v3/directory/room/" + alias)
    except OSError as exc:
        return [check("outbound", False, "Synapse on the host's loopback did not answer: %s" % why(exc),
                      "is Synapse running?")]
    seconds = time.monotonic() - started
    errcode = data.get("errcode") if isinstance(data, dict) else None
    if status == 404 and errcode == "M_NOT_FOUND" or status == 200:
        return [check("outbound", True, "our server asked %s over federation and got its answer in %.2f s"
                      % (cfg.peer, seconds))]
    return [check("outbound", False, "our server could not get an answer from %s over federation (HTTP %s %s)"
                  % (cfg.peer, status, errcode or ""),
                  "run `matrix-installer --check %s --peer %s` from the machine that installed it: it names the cause "
                  "(DNS inside the container, egress blocked, the remote's TLS)" % (cfg.server_name, cfg.peer))]


def server_health(cfg):
    problems = []
    try:
        status, _ = local(cfg, "GET", "/health")
        if status != 200:
            problems.append("Synapse's /health answered %d" % status)
    except OSError as exc:
        problems.append("Synapse's /health: %s" % why(exc))
    free_words = []
    for path in cfg.disks:
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        free_words.append("%s %.1f GB free" % (path, usage.free / 1e9))
        if usage.free < DISK_MIN_BYTES or usage.free < DISK_MIN_FREE * usage.total:
            problems.append("%s has only %.1f GB (%.0f%%) free" % (path, usage.free / 1e9, 100 * usage.free / usage.total))
    if problems:
        return [check("server-health", False, "; ".join(problems),
                      "free disk space (`sudo docker system prune`, old backups in /opt/matrix/backups) and check "
                      "Synapse (`sudo docker compose -f /opt/matrix/synapse/docker-compose.yml ps`)")]
    return [check("server-health", True, "Synapse answers /health; " + ", ".join(free_words))]


def read_json(path):
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def ago(seconds):
    seconds = max(seconds, 0)
    if seconds < 3600:
        return "%.0f min" % (seconds / 60)
    if seconds < 2 * 86400:
        return "%.0f h" % (seconds / 3600)
    return "%.0f days" % (seconds / 86400)


def backups(cfg, now):
    """The off-box backups as the installer judges them (backup-age, restore-test: its
    installer/components/backup/check.py; a unit test holds both to the same verdicts)."""
    if not cfg.backup:
        return []
    checks = []
    status = read_json(cfg.backup.get("status_file"))
    if status is None:
        checks.append(check("backup-age", False, "no off-box backup has finished on this server yet",
                            "see why with `journalctl -u matrix-backup`; `sudo systemctl start matrix-backup` backs up now"))
    else:
        period = number(status.get("period")) or 86400
        last_run = "the last run, %s ago, %s" % (ago(now - number(status.get("at"))), "succeeded" if status.get("ok")
                                                 else "failed: %s" % (status.get("error") or "no reason given"))
        taken = number(status.get("snapshot_time"))
        if not (taken > 0 and status.get("snapshot")):
            checks.append(check("backup-age", False, "no snapshot yet; " + last_run,
                                "see why with `journalctl -u matrix-backup`; `sudo systemctl start matrix-backup` backs up now"))
        else:
            age = max(0.0, now - taken)
            fresh = age <= 2 * period
            checks.append(check("backup-age", fresh, "last snapshot %s is %s old (backups every %s); %s"
                                % (str(status.get("snapshot"))[:8], ago(age), ago(period), last_run),
                                None if fresh else "older than two schedule periods: see why with "
                                "`journalctl -u matrix-backup`; `sudo systemctl start matrix-backup` backs up now"))
    restore = read_json(cfg.backup.get("restore_test_file"))
    if restore is None:
        checks.append(check("restore-test", True, "not run yet: the weekly restore test runs within a week of the setup"))
    else:
        ran = now - number(restore.get("at"))
        if not restore.get("ok"):
            checks.append(check("restore-test", False, "failed %s ago: %s" % (ago(ran), restore.get("reason")),
                                "see `journalctl -u matrix-restore-test`; after fixing it, "
                                "`sudo systemctl start matrix-restore-test` tests again"))
        elif ran > RESTORE_TEST_MAX_AGE:
            checks.append(check("restore-test", False, "last passed %s ago: the weekly test has not run since" % ago(ran),
                                "check its timer: systemctl status matrix-restore-test.timer"))
        else:
            checks.append(check("restore-test", True, "passed %s ago: snapshot %s restored into scratch space; %s"
                                % (ago(ran), str(restore.get("snapshot") or "")[:8], restore.get("details", ""))))
    return checks


def run_checks(cfg):
    now = time.time()
    checks, certs = [], []
    if cfg.well_known:
        found, seen = well_known(cfg)
        checks += found
        certs += seen
    found, seen = server_keys(cfg)
    checks += found
    certs += seen
    checks += certificate_expiry(certs, now)
    checks += outbound(cfg)
    checks += server_health(cfg)
    checks += backups(cfg, now)
    return checks


# --- history and notices -----------------------------------------------------------------------

def keep(cfg, result):
    os.makedirs(cfg.state_dir, mode=0o750, exist_ok=True)
    history = os.path.join(cfg.state_dir, "history.jsonl")
    line = json.dumps(result, sort_keys=True)
    try:
        with open(history) as f:
            lines = f.read().splitlines()[-(HISTORY_KEEP - 1):]
    except FileNotFoundError:
        lines = []
    previous = None
    if lines:
        try:
            previous = json.loads(lines[-1])
        except ValueError:
            previous = None
    for name, text in (("history.jsonl", "\n".join(lines + [line]) + "\n"), ("last.json", line + "\n")):
        path = os.path.join(cfg.state_dir, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return previous


def notice_text(cfg, result, previous):
    when = datetime.fromtimestamp(result["at"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    failed = [c for c in result["checks"] if not c["ok"]]
    warned = [c for c in result["checks"] if c["ok"] and c.get("warning")]
    if failed:
        lines = ["Self-test of %s FAILED at %s (%d of %d checks failed):" % (cfg.server_name, when, len(failed),
                                                                              len(result["checks"]))]
    elif warned:
        lines = ["Self-test of %s at %s passed, with a warning:" % (cfg.server_name, when)]
    elif previous is not None and not previous.get("ok"):
        return "Self-test of %s passes again at %s (all %d checks)." % (cfg.server_name, when, len(result["checks"]))
    else:
        return None
    for c in failed + warned:
        lines.append("%s %s: %s" % ("✗" if not c["ok"] else "!", c["name"], c["detail"]))
        if c.get("fix"):
            lines.append("    fix: %s" % c["fix"])
    lines.append("History on the host: %s" % os.path.join(cfg.state_dir, "history.jsonl"))
    return "\n".join(lines)


def notify(cfg, text):
    if not (cfg.room_id and cfg.token_file):
        return "no notices room set up (rerun matrix-installer with the admin's password to make one)"
    try:
        with open(cfg.token_file) as f:
            token = f.read().strip()
    except OSError as exc:
        return "the bot's token cannot be read: %s" % why(exc)
    txn = "selftest-%d-%d" % (int(time.time() * 1000), os.getpid())
    path = "/_matrix/client/v3/rooms/%s/send/m.room.message/%s" % (urllib.parse.quote(cfg.room_id, safe=""), txn)
    try:
        status, data = local(cfg, "PUT", path, {"msgtype": "m.notice", "body": text}, token=token)
    except OSError as exc:
        return "posting the notice failed: %s" % why(exc)
    if status != 200:
        return "posting the notice failed: HTTP %d %s" % (status, data.get("errcode", "") if isinstance(data, dict) else "")
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="matrix-selftest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--no-notify", action="store_true", help="record the result, post nothing")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        cfg = Config(json.load(f))
    started = time.time()
    checks = run_checks(cfg)
    result = {"at": int(started), "seconds": round(time.time() - started, 2), "server_name": cfg.server_name,
              "ok": all(c["ok"] for c in checks), "checks": checks}
    previous = keep(cfg, result)
    text = notice_text(cfg, result, previous)
    result_line = "self-test of %s: %s" % (cfg.server_name, "passed" if result["ok"] else "FAILED")
    if text and not args.no_notify:
        problem = notify(cfg, text)
        print(("notice not posted: " + problem) if problem else "notice posted to the admin's room")
    if not args.quiet:
        for c in checks:
            print("%s %s  %s" % ("✓" if c["ok"] and not c["warning"] else "!" if c["ok"] else "✗", c["name"], c["detail"]))
        print(result_line)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
