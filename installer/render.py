"""Templates rendered into the files the host runs on: Caddyfile, docker-compose.yml, cloud-init.

Every value is validated by the answers model before it gets here; the filters below quote it
for its destination and refuse anything that would still break out (defence in depth).
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jinja2

from installer.answers import Answers
from installer.published import well_known_client, well_known_server
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


def caddy_size(synapse_size: str) -> str:
    """Synapse's "50M" is 50 MiB; Caddy's "50MB" would be 50 * 10^6, so say MiB."""
    return synapse_size[:-1] + {"K": "KiB", "M": "MiB", "G": "GiB"}[synapse_size[-1]]


def render_caddyfile(answers: Answers, *, upstream: str = "127.0.0.1:8008", global_options: tuple[str, ...] = ()) -> str:
    """The whole Caddyfile for these answers. `global_options` adds lines to the global block
    (a lab's ports and storage); they are the caller's own, not user input."""
    d = answers.domain
    return render(
        "Caddyfile.j2",
        acme_email=d.acme_email if d.tls == "acme" else "",
        local_certs=d.tls == "internal",
        global_options=global_options,
        matrix_host=d.matrix_host,
        server_name=d.server_name,
        serve_server_name=answers.serves_server_name,
        redirect_to=d.redirect_to,
        federation_port=answers.federation_port,
        server_json=json.dumps(well_known_server(answers)),
        client_json=json.dumps(well_known_client(answers)),
        max_size=caddy_size(answers.synapse.max_upload_size),
        upstream=upstream,
    )


def render_compose(answers: Answers, *, port: int = 8008) -> str:
    return render("docker-compose.yml.j2", image=answers.synapse.image, port=port)
