"""Templates rendered into the files the host runs on: Caddyfile, docker-compose.yml, cloud-init,
the backup and restore scripts.

Every value is validated by the answers model before it gets here; the filters below quote it
for its destination and refuse anything that would still break out (defence in depth).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import jinja2

from installer.answers import Answers
from installer.resources import data_dir

TEMPLATES = data_dir("templates")


class RenderError(ValueError):
    pass


def caddy_str(value: object) -> str:
    """A double-quoted Caddyfile token; braces would become placeholders, so they are refused."""
    text = str(value)
    if re.search(r'["\\{}\n\r`]', text):
        raise RenderError(f"unsafe value for a Caddyfile: {text!r}")
    return f'"{text}"'


def yaml_str(value: object) -> str:
    """A YAML scalar: JSON strings are valid YAML flow scalars, quotes and escapes included."""
    return json.dumps(str(value))


def shell_word(value: object) -> str:
    import shlex

    return shlex.quote(str(value))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(caddy_str=caddy_str, yaml_str=yaml_str, shell_word=shell_word, tojson=json.dumps)
    return env


def render(template: str, **values: Any) -> str:
    return _environment().get_template(template).render(**values)


def greater_than(limit: int) -> str:
    """A regular expression matching the decimal integers above `limit` (a Content-Length),
    written without {n} counts: braces are placeholders in a Caddyfile."""
    digits = str(limit)
    width = len(digits)
    options = ["[1-9]" + "[0-9]" * width + "[0-9]*"]  # more digits than the limit has
    for i, digit in enumerate(digits):
        if digit != "9":
            options.append(digits[:i] + f"[{int(digit) + 1}-9]" + "[0-9]" * (width - i - 1))
    return "^(" + "|".join(options) + ")$"


TOO_LARGE = json.dumps({"errcode": "M_TOO_LARGE", "error": "The request is larger than this server accepts"})
_SITE_ADDRESS = re.compile(r"[a-z0-9.-]+(:[0-9]{1,5})?")
_FILES_ROOT = re.compile(r"(/[A-Za-z0-9._-]+)+")


_UPSTREAM = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}")
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")


def _balance_view(route: Any) -> dict[str, Any]:
    """A Balance route's parts as the template draws them, each checked for its place."""
    from installer.components.base import LB_POLICIES

    if not route.patterns or not route.upstreams:
        raise RenderError(f"the {route.name} route has no paths or no upstreams")
    for pattern in route.patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RenderError(f"not a regular expression for a Caddyfile: {pattern!r} ({exc})") from None
    regexp = "|".join(route.patterns)
    caddy_str(regexp)  # refused here, with the value, rather than half-way through the template
    bad = [u for u in route.upstreams if not _UPSTREAM.fullmatch(u)]
    if bad or route.policy not in LB_POLICIES or set(route.methods) - _METHODS:
        raise RenderError(f"unsafe upstreams, policy or methods for a Caddyfile: {bad or route.policy or route.methods!r}")
    if route.policy == "header" and not _HEADER_NAME.fullmatch(route.policy_header):
        raise RenderError(f"unsafe header for a Caddyfile's lb_policy: {route.policy_header!r}")
    if not route.health_uri.startswith("/") or not 1 <= int(route.health_interval) <= 300 or not 0 <= int(route.try_seconds) <= 300 \
            or not 1 <= int(route.dial_seconds) <= 60:
        raise RenderError(f"unsafe health check for a Caddyfile: {route.health_uri!r} every {route.health_interval} s")
    policy = f"header {route.policy_header}" if route.policy == "header" else route.policy
    return {"regexp": regexp, "methods": route.methods, "upstreams": route.upstreams, "group": route.name,
            "lb_policy": policy, "health_uri": route.health_uri, "health_interval": int(route.health_interval),
            "try_seconds": int(route.try_seconds), "dial_seconds": int(route.dial_seconds)}


def _route_view(route: Any, number: int) -> dict[str, Any]:
    """One route as the template draws it (installer.components.base: Proxy, Balance, Respond, Redirect, Files)."""
    from installer.components.base import Balance, Files, Proxy, Redirect, Respond

    if isinstance(route, Proxy | Balance):
        view = {"kind": "proxy", "number": number, "max_body": route.max_body,
                "too_large": greater_than(route.max_body) if route.max_body else "", "too_large_body": TOO_LARGE,
                "paths": (), "regexp": "", "methods": (), "upstreams": (), "lb_policy": ""}
        if isinstance(route, Proxy):
            return {**view, "paths": route.paths, "upstreams": (route.upstream,)}
        return {**view, **_balance_view(route)}
    if isinstance(route, Respond):
        if "`" in route.body:
            raise RenderError(f"unsafe body for a Caddyfile respond: {route.body[:40]!r}")
        return {"kind": "respond", "path": route.path, "status": int(route.status), "body": route.body, "headers": route.headers}
    if isinstance(route, Redirect):
        return {"kind": "redirect", "target": route.target}
    if isinstance(route, Files):
        if not _FILES_ROOT.fullmatch(route.root):
            raise RenderError(f"unsafe folder for a Caddyfile file server: {route.root!r}")
        return {"kind": "files", "number": number, "root": route.root, "headers": route.headers,
                "no_cache": route.no_cache}
    raise RenderError(f"no way to write a {type(route).__name__} in a Caddyfile")


def _site_view(site: Any) -> dict[str, Any]:
    if not _SITE_ADDRESS.fullmatch(site.address):
        raise RenderError(f"unsafe site address for a Caddyfile: {site.address!r}")
    if "\n" in site.comment:
        raise RenderError("a site comment spans lines")
    routes, numbered = [], {"proxy": 0, "files": 0}
    for route in site.routes:
        # Numbered by what the template draws (a Balance is drawn as a proxy: @proxyN).
        kind = "proxy" if type(route).__name__ in ("Proxy", "Balance") else type(route).__name__.lower()
        view = _route_view(route, numbered.get(kind, 0) + 1)
        if view["kind"] in numbered:
            numbered[view["kind"]] += 1
        routes.append(view)
    return {"address": site.address, "comment": site.comment, "routes": routes}


def render_caddyfile(answers: Answers, sites: Sequence[Any], *, global_options: tuple[str, ...] = ()) -> str:
    """The whole Caddyfile: the global options the answers ask for, then every site (as
    installer.deployment merges them). `global_options` adds lines to the global block (a lab's
    ports and storage); they are the caller's own, not user input."""
    d = answers.domain
    return render(
        "Caddyfile.j2",
        acme_email=d.acme_email if d.tls == "acme" else "",
        local_certs=d.tls == "internal",
        global_options=global_options,
        sites=[_site_view(site) for site in sites],
    )


_COMPOSE_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def _yaml_lines(value: Any, indent: int) -> list[str]:
    """A mapping as block YAML; lists and scalars as JSON (a subset of YAML), so every string is
    quoted and nothing in a value can break out of it."""
    lines = []
    for key, item in value.items():
        if not _COMPOSE_KEY.fullmatch(str(key)):
            raise RenderError(f"unsafe key for docker-compose.yml: {key!r}")
        if isinstance(item, dict) and item:
            lines.append(f"{'  ' * indent}{key}:")
            lines += _yaml_lines(item, indent + 1)
        else:
            lines.append(f"{'  ' * indent}{key}: {json.dumps(item)}")
    return lines


def render_compose(services: Sequence[Any]) -> str:
    """docker-compose.yml for the deployment's services (installer.components.base.Service)."""
    document = {"services": {s.name: {"image": s.image, **s.settings} for s in services}}
    lines = ["# Managed by matrix-installer: edit the answers and rerun instead of editing this file.",
             *_yaml_lines(document, 0)]
    return "\n".join(lines) + "\n"


def render_backup_scripts(items: Sequence[Any], *, keep: int) -> tuple[str, str]:
    """The backup and restore scripts for the deployment's backup items
    (installer.components.base: BackupFiles, BackupSqlite, BackupDump, and a BackupTarget when the
    same items also go off the box): one list of what a backup holds, two destinations."""
    values = _backup_values(items, keep=keep)
    return render("backup.sh.j2", **values), render("restore.sh.j2", **values)


def _backup_values(items: Sequence[Any], *, keep: int) -> dict[str, Any]:
    from installer.components.base import BackupDump, BackupFiles, BackupSqlite, BackupTarget
    from installer.host.layout import BACKUP_DIR, BACKUP_SCRIPT, PROJECT, RESTORE_SCRIPT

    files = [i for i in items if isinstance(i, BackupFiles)]
    targets = [i for i in items if isinstance(i, BackupTarget)]
    if len(targets) > 1:
        raise RenderError(f"a deployment backs up to one place off the box, not {len(targets)}")
    for target in targets:
        if any(not re.fullmatch(r"[a-z]{1,16}", period) for period, _ in target.keep):
            raise RenderError(f"unsafe keep period: {target.keep!r}")
    return {
        "project": PROJECT, "backup_dir": BACKUP_DIR, "backup_script": BACKUP_SCRIPT, "restore_script": RESTORE_SCRIPT,
        "keep": keep, "files": files,
        "sqlite": [i for i in items if isinstance(i, BackupSqlite)],
        "dumps": [i for i in items if isinstance(i, BackupDump)],
        "excludes": [pattern for i in files for pattern in i.exclude],
        "required": [pattern for i in files for pattern in i.required],
        "target": targets[0] if targets else None,
    }


def render_restore_test(items: Sequence[Any], *, result_file: str, db: dict[str, str], homeserver: dict[str, str]) -> str:
    """The weekly restore test: the latest snapshot restored into scratch space and compared with
    the live server (`db`: how to load its database; `homeserver`: its container and image)."""
    values = _backup_values(items, keep=1)
    return render("restore-test.sh.j2", **values, result_file=result_file, db=db, homeserver=homeserver)
