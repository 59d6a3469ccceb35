"""The federation test against a real stack: Synapse and Caddy (the installer's own Caddyfile and
homeserver.yaml edits) plus dnsmasq, all on loopback, reached through --connect-to mappings.

Each test asserts what a user would see: the check's name, whether it passed, and the words of
the diagnosis.
"""

from __future__ import annotations

import json

import httpx
import pytest

from installer.components.homeserver import AdminCredentials
from installer.federation import AdminLogin, FederationReport, run_check

pytest.register_assert_rewrite("tests.fixtures.matrix_stack")
from tests.fixtures.matrix_stack import (  # noqa: E402
    LOOPBACK,
    MATRIX_HOST,
    SERVER_NAME,
    CaddyLab,
    CaddyServer,
    DnsServer,
    SynapseServer,
    free_port,
    lab_answers,
)

BOTH = (SERVER_NAME, MATRIX_HOST)


def edit(text: str, old: str, new: str) -> str:
    assert old in text, f"the rendered Caddyfile no longer contains {old!r}"
    return text.replace(old, new)


def start_caddy(lab: CaddyLab, answers, upstream: str, *, names=BOTH, change=None, extra_global=()) -> CaddyServer:
    caddyfile, ports = lab.render(answers, upstream, extra_global=extra_global)
    if change is not None:
        caddyfile = change(caddyfile)
    return lab.start(caddyfile, ports, wait_for=names)


async def check(server_name: str, caddy: CaddyServer, dns: DnsServer, lab: CaddyLab, *, names=BOTH,
                connect_to=None, trust_lab_ca: bool = True, **kwargs) -> FederationReport:
    report = await run_check(server_name, connect_to=connect_to if connect_to is not None else caddy.connect_to(*names),
                             dns_server=dns.address, ca_file=lab.ca_file if trust_lab_ca else None, timeout=5, **kwargs)
    print("\n".join(report.summary_lines()))
    return report


def failing(report: FederationReport, name: str):
    found = report.check(name)
    assert found is not None, f"no {name} check in {[c.name for c in report.checks]}"
    assert not found.ok, f"{name} passed: {found.detail}"
    assert not report.ok
    return found


@pytest.fixture(scope="module")
def well_known_caddy(caddy_lab: CaddyLab, synapse: SynapseServer) -> CaddyServer:
    """The installer's Caddyfile for well-known delegation: example.test -> matrix.example.test:443."""
    return start_caddy(caddy_lab, lab_answers(), synapse.upstream)


# --- passing -------------------------------------------------------------------------------


async def test_well_known_delegation_passes(well_known_caddy, dns_plain, caddy_lab, synapse):
    report = await check(SERVER_NAME, well_known_caddy, dns_plain, caddy_lab, expect_policy="closed",
                         admin=AdminLogin(*synapse.admin, MATRIX_HOST))
    assert report.ok, report.summary_lines()
    assert [c.name for c in report.checks] == ["dns", "well-known", "tls", "server-keys", "federation-version",
                                               "client-well-known", "client-versions", "registration", "admin-login"]
    assert report.check("well-known").detail == "m.server = matrix.example.test:443"
    assert report.summary_lines()[1] == "✓ well-known  m.server = matrix.example.test:443"
    assert "verified" in report.check("server-keys").detail
    assert report.check("federation-version").detail.startswith("Synapse 1.")
    assert "closed" in report.check("registration").detail
    assert report.check("admin-login").detail == "@admin:example.test can log in"

    data = report.to_json()
    assert synapse.admin[1] not in json.dumps(data)
    assert data["server_name"] == SERVER_NAME and data["ok"] is True
    assert {"name", "ok", "detail", "fix"} <= set(data["checks"][0])
    tester = data["tester"]
    assert tester["FederationOK"] is True
    assert tester["WellKnownResult"]["m.server"] == "matrix.example.test:443"
    assert tester["DNSResult"]["Hosts"][MATRIX_HOST]["Addrs"] == [LOOPBACK]
    (address, connection), = tester["ConnectionReports"].items()
    assert address == f"{LOOPBACK}:{well_known_caddy.https_port}"
    assert connection["Checks"]["AllChecksOK"] is True
    assert connection["Checks"]["ValidCertificates"] and connection["Checks"]["MatchingServerName"]
    assert connection["Certificates"][0]["DNSNames"] == [MATRIX_HOST]
    assert tester["Version"]["name"] == "Synapse"


async def test_srv_delegation_passes(caddy_lab, dns_lab, synapse):
    caddy = start_caddy(caddy_lab, lab_answers(delegation="srv"), synapse.upstream)
    dns = dns_lab.start(srv=((f"_matrix-fed._tcp.{SERVER_NAME}", MATRIX_HOST, 8448),))
    report = await check(SERVER_NAME, caddy, dns, caddy_lab)
    assert report.ok, report.summary_lines()
    assert report.check("dns").detail.startswith("SRV _matrix-fed._tcp.example.test -> matrix.example.test:8448")
    assert report.check("well-known").detail.startswith("none (")
    assert "SRV _matrix-fed._tcp.example.test" in report.check("well-known").detail
    # SRV without .well-known: the certificate must be for the server name, not the SRV target.
    assert "certificate for example.test" in report.check("tls").detail


async def test_deprecated_matrix_tcp_srv_still_works_with_a_note(caddy_lab, dns_lab, synapse):
    caddy = start_caddy(caddy_lab, lab_answers(delegation="srv"), synapse.upstream)
    dns = dns_lab.start(srv=((f"_matrix._tcp.{SERVER_NAME}", MATRIX_HOST, 8448),))
    report = await check(SERVER_NAME, caddy, dns, caddy_lab)
    assert report.ok, report.summary_lines()
    assert report.check("dns").detail.startswith("SRV _matrix._tcp.example.test -> matrix.example.test:8448")
    assert "deprecated _matrix._tcp: publish _matrix-fed._tcp.example.test too" in report.check("dns").detail


async def test_no_delegation_passes(caddy_lab, dns_plain, synapse):
    caddy = start_caddy(caddy_lab, lab_answers(SERVER_NAME, SERVER_NAME, delegation="none"), synapse.upstream,
                        names=(SERVER_NAME,))
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab, names=(SERVER_NAME,), expect_policy="closed")
    assert report.ok, report.summary_lines()
    assert "the default port 8448" in report.check("well-known").detail
    assert report.check("client-well-known").detail.startswith("m.homeserver.base_url = https://example.test")


async def test_check_command_prints_the_summary_and_exits_0(well_known_caddy, dns_plain, caddy_lab, capsys):
    from installer.engine import RunOptions
    from installer.federation.cli import check_command

    options = RunOptions(mode="check", connect_to=well_known_caddy.connect_to(*BOTH), dns_server=dns_plain.address,
                         ca_file=caddy_lab.ca_file)
    assert await check_command(SERVER_NAME, options) == 0
    out = capsys.readouterr().out
    assert "✓ well-known  m.server = matrix.example.test:443" in out
    assert "federation OK" in out


# --- failing: discovery --------------------------------------------------------------------


async def test_no_well_known_and_nothing_on_8448(caddy_lab, dns_plain, synapse, capsys):
    # The server name's site answers 404 for /.well-known/matrix/server; no SRV; 8448 closed.
    caddy = start_caddy(caddy_lab, lab_answers(delegation="srv"), synapse.upstream)
    closed = free_port()
    mappings = [m for m in caddy.connect_to(*BOTH) if m[1] == 443] + [(SERVER_NAME, 8448, LOOPBACK, closed)]
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab, connect_to=mappings)
    wk = failing(report, "well-known")
    assert "https://example.test/.well-known/matrix/server answered 404 Not Found" in wk.detail
    assert "publish" in wk.fix and "m.server" in wk.fix
    tls = failing(report, "tls")
    assert "port 8448 is closed" in tls.detail
    assert tls.fix.startswith("port 8448 is closed: open it in the security list and iptables")

    from installer.engine import RunOptions
    from installer.federation.cli import check_command

    options = RunOptions(mode="check", connect_to=mappings, dns_server=dns_plain.address, ca_file=caddy_lab.ca_file)
    assert await check_command(SERVER_NAME, options) == 1
    assert "✗ well-known  https://example.test/.well-known/matrix/server answered 404" in capsys.readouterr().out


def closed_8448(caddy: CaddyServer) -> list[tuple[str, int, str, int]]:
    """Mappings to the Caddy for 443, and port 8448 of the server name closed (as on a VM that only opened 443)."""
    return caddy.connect_to(*BOTH) + [(SERVER_NAME, 8448, LOOPBACK, free_port())]


async def test_well_known_with_bad_json(caddy_lab, dns_plain, synapse):
    caddy = start_caddy(caddy_lab, lab_answers(), synapse.upstream, change=lambda text: edit(
        text, '{"m.server": "matrix.example.test:443"}', '{"m.server": matrix.example.test:443'))
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab, connect_to=closed_8448(caddy))
    wk = failing(report, "well-known")
    assert "https://example.test/.well-known/matrix/server is not valid JSON" in wk.detail
    assert "Expecting value: line 1 column 14" in wk.detail
    assert 'valid JSON like {"m.server": "matrix.example.org:443"}' in wk.fix


async def test_well_known_without_m_server(caddy_lab, dns_plain, synapse):
    caddy = start_caddy(caddy_lab, lab_answers(), synapse.upstream, change=lambda text: edit(
        text, '{"m.server": "matrix.example.test:443"}', '{"m.homeserver": "matrix.example.test:443"}'))
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab, connect_to=closed_8448(caddy))
    wk = failing(report, "well-known")
    assert 'has no "m.server" key (keys: m.homeserver)' in wk.detail


async def test_wrong_port_in_m_server(caddy_lab, dns_plain, synapse):
    caddy = start_caddy(caddy_lab, lab_answers(), synapse.upstream, change=lambda text: edit(
        text, '"matrix.example.test:443"', '"matrix.example.test:8449"'))
    closed = free_port()  # stands for the VM's port 8449, where nothing listens
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab,
                         connect_to=caddy.connect_to(*BOTH) + [(MATRIX_HOST, 8449, LOOPBACK, closed)])
    wk = failing(report, "well-known")
    assert wk.detail == "m.server = matrix.example.test:8449, but nothing answers on port 8449"
    assert wk.fix.startswith('publish {"m.server": "matrix.example.test:443"}')
    tls = failing(report, "tls")
    assert "cannot connect to matrix.example.test:8449" in tls.detail and "port 8449 is closed" in tls.detail


async def test_port_443_closed(dns_plain):
    closed = free_port()  # the VM before its security list and iptables let 443 in
    mappings = [(name, port, LOOPBACK, closed) for name in BOTH for port in (443, 8448)]
    report = await run_check(SERVER_NAME, connect_to=mappings, dns_server=dns_plain.address, timeout=5)
    wk = failing(report, "well-known")
    assert "https://example.test/.well-known/matrix/server could not be fetched: cannot connect to example.test:443" in wk.detail
    assert wk.fix.startswith("port 443 is closed: open it in the security list and iptables")
    client = failing(report, "client-well-known")
    assert client.fix.startswith("port 443 is closed: open it in the security list and iptables")


# --- failing: TLS --------------------------------------------------------------------------


async def test_certificate_for_the_wrong_name(caddy_lab, dns_lab, synapse):
    # The manual guide's SRV catch: SRV to matrix.example.test:443, which only has a certificate
    # for matrix.example.test, while SRV delegation needs one for example.test.
    caddy = start_caddy(caddy_lab, lab_answers(serve_server_name=False), synapse.upstream, names=(MATRIX_HOST,),
                        extra_global=(f"fallback_sni {MATRIX_HOST}",))
    dns = dns_lab.start(srv=((f"_matrix-fed._tcp.{SERVER_NAME}", MATRIX_HOST, 443),))
    report = await check(SERVER_NAME, caddy, dns, caddy_lab)
    tls = failing(report, "tls")
    assert tls.detail == "certificate is for matrix.example.test, not example.test"
    assert tls.fix.startswith("use .well-known delegation")
    assert tls.summary_line().startswith(
        "✗ tls  certificate is for matrix.example.test, not example.test -> fix: use .well-known delegation")
    assert report.tester["ConnectionErrors"]


async def test_untrusted_certificate_without_the_ca_file(well_known_caddy, dns_plain, caddy_lab):
    report = await check(SERVER_NAME, well_known_caddy, dns_plain, caddy_lab, trust_lab_ca=False,
                         connect_to=closed_8448(well_known_caddy))
    tls = failing(report, "tls")
    assert "certificate for example.test is not trusted" in tls.detail
    assert "Caddy Local Authority" in tls.detail
    assert 'tls = "acme"' in tls.fix
    assert "not trusted" in failing(report, "client-well-known").detail


# --- failing: keys and Synapse -------------------------------------------------------------


async def test_server_name_mismatch_in_the_keys(caddy_lab, dns_plain, synapse):
    # other.example.test delegates to a Synapse whose server_name is example.test.
    other = "other.example.test"
    caddy = start_caddy(caddy_lab, lab_answers(other, MATRIX_HOST), synapse.upstream, names=(other, MATRIX_HOST))
    report = await check(other, caddy, dns_plain, caddy_lab, names=(other, MATRIX_HOST))
    keys = failing(report, "server-keys")
    assert "the keys are for example.test, not other.example.test" in keys.detail
    assert "server_name is other.example.test" in keys.fix
    assert report.check("tls").ok and report.check("well-known").ok
    (connection,) = report.tester["ConnectionReports"].values()
    assert connection["Checks"]["MatchingServerName"] is False


async def test_tampered_key_signature(caddy_lab, dns_plain, synapse):
    keys = httpx.get(f"{synapse.url}/_matrix/key/v2/server", timeout=5).json()
    (key_id, signature), = keys["signatures"][SERVER_NAME].items()
    keys["signatures"][SERVER_NAME][key_id] = ("A" if signature[0] != "A" else "B") + signature[1:]
    served = json.dumps(keys)

    def serve_tampered(text: str) -> str:
        site = text.index(f"{MATRIX_HOST} {{\n")
        at = text.index("\troute {\n", site) + len("\troute {\n")
        return text[:at] + f"\t\trespond /_matrix/key/v2/server `{served}` 200\n" + text[at:]

    caddy = start_caddy(caddy_lab, lab_answers(), synapse.upstream, change=serve_tampered)
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab)
    bad = failing(report, "server-keys")
    assert f"key {key_id} signature does not verify" in bad.detail
    assert "unchanged" in bad.fix
    (connection,) = report.tester["ConnectionReports"].values()
    assert connection["Checks"]["Ed25519Checks"][key_id] == {"ValidEd25519": True, "MatchingSignature": False}
    assert connection["Checks"]["AllEd25519ChecksOK"] is False


async def test_synapse_down_behind_caddy(caddy_lab, dns_plain):
    caddy = start_caddy(caddy_lab, lab_answers(), f"{LOOPBACK}:{free_port()}")
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab)
    keys = failing(report, "server-keys")
    assert "https://matrix.example.test/_matrix/key/v2/server answered 502 Bad Gateway: Synapse is down behind Caddy" in keys.detail
    assert keys.fix.startswith("Synapse is down behind Caddy (502): check `docker compose ps` in /opt/matrix/synapse")
    assert "502" in failing(report, "client-versions").detail
    assert report.check("tls").ok and report.check("well-known").ok


# --- failing: client side ------------------------------------------------------------------


async def test_client_well_known_without_cors(caddy_lab, dns_plain, synapse):
    caddy = start_caddy(caddy_lab, lab_answers(), synapse.upstream, change=lambda text: edit(
        text, '\t\theader "/.well-known/matrix/client" "Access-Control-Allow-Origin" "*"\n', ""))
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab)
    cors = failing(report, "client-well-known")
    assert "has no Access-Control-Allow-Origin header" in cors.detail
    assert 'Access-Control-Allow-Origin "*"' in cors.fix
    assert [c.name for c in report.failed] == ["client-well-known"]


async def test_registration_open_when_the_policy_says_closed(caddy_lab, dns_plain, synapse_open):
    caddy = start_caddy(caddy_lab, lab_answers(), synapse_open.upstream)
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab, expect_policy="closed")
    reg = failing(report, "registration")
    assert reg.detail.startswith("registration is open to anyone (flows: m.login.dummy")
    assert reg.detail.endswith('but the policy is "closed"')
    assert "enable_registration: false" in reg.fix
    assert [c.name for c in report.failed] == ["registration"]
    # "open-until-admin" must have ended closed too; "token" wants a token flow.
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab, expect_policy="open-until-admin")
    assert not report.check("registration").ok
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab, expect_policy="token")
    assert "registration_requires_token: true" in failing(report, "registration").fix


async def test_admin_with_a_wrong_password(well_known_caddy, dns_plain, caddy_lab):
    secret = "not-the-password-" + "x" * 8
    report = await check(SERVER_NAME, well_known_caddy, dns_plain, caddy_lab, admin=AdminLogin("admin", secret, MATRIX_HOST))
    login = failing(report, "admin-login")
    assert "@admin:example.test cannot log in: M_FORBIDDEN (wrong user or password)" == login.detail
    assert secret not in json.dumps(report.to_json()) and secret not in "\n".join(report.summary_lines())


# --- more discovery and TLS cases ----------------------------------------------------------


def _expired_certificate(folder, name: str):
    """A CA (returned as PEM) and an expired certificate for `name` it signed (written to folder)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def dn(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(dn("Lab Test CA")).issuer_name(dn("Lab Test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(days=400))
          .not_valid_after(now + datetime.timedelta(days=400))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(dn(name)).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(2).not_valid_before(now - datetime.timedelta(days=100))
            .not_valid_after(now - datetime.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM), (now - datetime.timedelta(days=10)).strftime("%Y-%m-%d")


async def test_expired_certificate(caddy_lab, dns_plain, synapse, tmp_path):
    ca_pem, expired_on = _expired_certificate(tmp_path, MATRIX_HOST)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(caddy_lab.ca_file.read_bytes() + ca_pem)
    caddy = start_caddy(caddy_lab, lab_answers(), synapse.upstream, names=(SERVER_NAME,), change=lambda text: edit(
        text, f"{MATRIX_HOST} {{\n", f"{MATRIX_HOST} {{\n\ttls {tmp_path}/leaf.pem {tmp_path}/leaf.key\n"))
    report = await run_check(SERVER_NAME, connect_to=caddy.connect_to(*BOTH), dns_server=dns_plain.address,
                             ca_file=bundle, timeout=5)
    tls = failing(report, "tls")
    assert tls.detail.startswith(f"certificate for matrix.example.test expired on {expired_on}")
    assert "journalctl -u caddy" in tls.fix


async def test_well_known_redirect_is_followed_and_a_loop_is_reported(caddy_lab, dns_plain, synapse):
    served = '\trespond /.well-known/matrix/server `{"m.server": "matrix.example.test:443"}` 200\n'

    def redirect_to_matrix_host(text: str) -> str:
        text = edit(text, '\t\trespond "/.well-known/matrix/server" `{"m.server": "matrix.example.test:443"}` 200\n',
                    "\t\tredir /.well-known/matrix/server https://matrix.example.test/.well-known/matrix/server 301\n")
        return edit(text, f"{MATRIX_HOST} {{\n", f"{MATRIX_HOST} {{\n{served}")

    caddy = start_caddy(caddy_lab, lab_answers(), synapse.upstream, change=redirect_to_matrix_host)
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab)
    assert report.ok, report.summary_lines()
    assert report.check("well-known").detail == "m.server = matrix.example.test:443 (after 1 redirect)"

    caddy = start_caddy(caddy_lab, lab_answers(), synapse.upstream, change=lambda text: edit(
        text, '\t\trespond "/.well-known/matrix/server" `{"m.server": "matrix.example.test:443"}` 200\n',
        "\t\tredir /.well-known/matrix/server /.well-known/matrix/server 302\n"))
    report = await check(SERVER_NAME, caddy, dns_plain, caddy_lab, connect_to=closed_8448(caddy))
    assert "redirects in a loop" in failing(report, "well-known").detail


async def test_srv_target_that_is_a_cname_is_rejected(caddy_lab, dns_lab, synapse):
    caddy = start_caddy(caddy_lab, lab_answers(delegation="srv"), synapse.upstream)
    dns = dns_lab.start(srv=((f"_matrix-fed._tcp.{SERVER_NAME}", "alias.example.test", 8448),),
                        cnames=(("alias.example.test", MATRIX_HOST),))
    report = await check(SERVER_NAME, caddy, dns, caddy_lab, names=(*BOTH, "alias.example.test"))
    bad = failing(report, "dns")
    assert "SRV target alias.example.test is a CNAME (to matrix.example.test), which the spec forbids" in bad.detail
    assert "not a CNAME" in bad.fix


# --- the stage ------------------------------------------------------------------------------


def _stage_context(answers, options):
    from installer.engine import Session, Stage, StageContext
    from installer.state import RunState

    events = []
    session = Session(answers=answers, state=RunState(None), options=options, listeners=[events.append])
    session.outputs[AdminCredentials] = AdminCredentials("@admin:example.test", None)
    stage = Stage("federation.check", "Federation test", lambda ctx: None, takes=(AdminCredentials,))
    return StageContext(session, stage), session, events


async def test_stage_passes_logs_the_summary_and_keeps_the_report(well_known_caddy, dns_plain, caddy_lab, synapse):
    from installer.engine import RunOptions
    from installer.components.federation.check import check as federation_check

    options = RunOptions(connect_to=well_known_caddy.connect_to(*BOTH), dns_server=dns_plain.address,
                         ca_file=caddy_lab.ca_file)
    ctx, session, events = _stage_context(lab_answers(), options)
    user, password = synapse.admin
    session.outputs[AdminCredentials] = AdminCredentials(f"@{user}:{SERVER_NAME}", password)
    await federation_check(ctx)
    lines = [e.line for e in events if hasattr(e, "line")]
    assert "✓ well-known  m.server = matrix.example.test:443" in lines
    assert "✓ admin-login  @admin:example.test can log in" in lines
    assert session.federation["ok"] is True and session.federation["server_name"] == SERVER_NAME
    assert synapse.admin[1] not in json.dumps(session.federation) + "\n".join(lines)


async def test_stage_fails_naming_the_checks_with_the_first_fix(caddy_lab, dns_plain):
    from installer.engine import RunOptions, StageError
    from installer.components.federation.check import check as federation_check

    caddy = start_caddy(caddy_lab, lab_answers(), f"{LOOPBACK}:{free_port()}")
    options = RunOptions(connect_to=caddy.connect_to(*BOTH), dns_server=dns_plain.address, ca_file=caddy_lab.ca_file)
    ctx, session, _ = _stage_context(lab_answers(), options)
    with pytest.raises(StageError) as raised:
        await federation_check(ctx)
    assert str(raised.value).startswith("federation test failed: server-keys, federation-version, client-versions, registration")
    assert raised.value.hint.startswith("Synapse is down behind Caddy (502)")
    assert session.federation["ok"] is False


# --- the command line ---------------------------------------------------------------------


def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "installer", *args], capture_output=True, text=True, timeout=60)


def _cli_flags(caddy: CaddyServer, dns: DnsServer, lab: CaddyLab) -> list[str]:
    flags = []
    for h1, p1, h2, p2 in caddy.connect_to(*BOTH):
        flags += ["--connect-to", f"{h1}:{p1}:{h2}:{p2}"]
    return flags + ["--dns-server", f"{dns.address[0]}:{dns.address[1]}", "--ca-file", str(lab.ca_file)]


def test_matrix_installer_check_passes_against_the_lab(well_known_caddy, dns_plain, caddy_lab, tmp_path):
    report_file = tmp_path / "report.json"
    result = _cli("--check", SERVER_NAME, *_cli_flags(well_known_caddy, dns_plain, caddy_lab), "--report", str(report_file))
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ well-known  m.server = matrix.example.test:443" in result.stdout
    report = json.loads(report_file.read_text())
    assert report["mode"] == "check" and report["ok"] is True
    assert report["federation"]["server_name"] == SERVER_NAME
    assert {c["name"] for c in report["federation"]["checks"]} >= {
        "dns", "well-known", "tls", "server-keys", "federation-version", "client-well-known", "client-versions",
        "registration"}


def test_matrix_installer_check_fails_naming_the_fault(caddy_lab, dns_plain):
    caddy = start_caddy(caddy_lab, lab_answers(), f"{LOOPBACK}:{free_port()}")
    result = _cli("--check", SERVER_NAME, *_cli_flags(caddy, dns_plain, caddy_lab))
    print(result.stdout, result.stderr)
    assert result.returncode == 1
    assert "✗ server-keys" in result.stdout
    assert "Synapse is down behind Caddy (502)" in result.stdout
