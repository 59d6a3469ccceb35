"""The outbound check's parts: the alias look-up's answer, the look from inside the container and
from the host (the probe script, run here for real), and the cause each combination names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from installer.federation.outbound import (
    PROBE_SCRIPT,
    Probe,
    diagnose,
    docker_user_rules,
    failed_words,
    judge_answer,
    probe_path,
)

PEER = "other.test"


def run_probe(peer: str) -> Probe:
    done = subprocess.run([sys.executable, "-", peer], input=PROBE_SCRIPT, capture_output=True, text=True, timeout=60)
    probe = Probe.parse(done.stdout)
    assert probe is not None, done.stdout + done.stderr
    return probe


def test_the_probe_path_asks_for_an_alias_on_the_peer():
    assert probe_path("matrix.org") == "/_matrix/client/v3/directory/room/%23matrix-installer-outbound-check%3Amatrix.org"


def test_a_404_from_the_peer_is_a_pass_and_a_502_is_not():
    passed = judge_answer(PEER, 404, '{"errcode":"M_NOT_FOUND","error":"Room alias not found"}', 0.31, "asked on the host")
    assert passed is not None and passed.ok and passed.name == "outbound"
    assert passed.detail.startswith("our server asked other.test over federation and got its answer in 0.31 s")
    assert judge_answer(PEER, 200, '{"room_id":"!a:other.test","servers":["other.test"]}', 0.2, "x").ok
    assert judge_answer(PEER, 502, '{"errcode":"M_UNKNOWN","error":"Failed to fetch alias"}', 3.0, "x") is None
    assert failed_words(PEER, 502, '{"errcode":"M_UNKNOWN","error":"Failed to fetch alias"}', 3.0) == (
        "our server could not get an answer from other.test over federation (HTTP 502: M_UNKNOWN Failed to fetch alias)")
    assert "within 30 s" in failed_words(PEER, None, "", 30.2)


def test_the_probe_script_reports_dns_and_refused_connections():
    unknown = run_probe("no-such-name.invalid")
    failure = unknown.first_failure()
    assert failure["step"] == "dns" and failure["name"] == "no-such-name.invalid"
    refused = run_probe("127.0.0.1:1")
    assert [s["step"] for s in refused.steps] == ["dns", "connect"]
    failure = refused.first_failure()
    assert failure["step"] == "connect" and "127.0.0.1:1" in failure["error"] and "refused" in failure["error"].lower()


def _probe(*steps):
    return Probe([dict(s) for s in steps])


DNS_OK = {"step": "dns", "ok": True, "purpose": "federation", "name": "matrix.other.test", "addresses": ["240.0.0.3:443"]}
WK_DNS_OK = {"step": "dns", "ok": True, "purpose": "well-known", "name": PEER, "addresses": ["240.0.0.3:443"]}
CONNECT_OK = {"step": "connect", "ok": True, "purpose": "federation", "name": "matrix.other.test", "address": "240.0.0.3:443"}
TLS_OK = {"step": "tls", "ok": True, "purpose": "federation", "name": "matrix.other.test", "address": "240.0.0.3:443"}
HTTP_OK = {"step": "http", "ok": True, "purpose": "federation", "url": "https://matrix.other.test/_matrix/federation/v1/version", "status": 200}
REACHED = _probe(WK_DNS_OK, dict(CONNECT_OK, purpose="well-known", name=PEER), dict(TLS_OK, purpose="well-known", name=PEER),
                 dict(HTTP_OK, purpose="well-known"), DNS_OK, CONNECT_OK, TLS_OK, HTTP_OK)
WORDS = "our server could not get an answer from other.test over federation (HTTP 502: M_UNKNOWN Failed to fetch alias)"


def test_dns_broken_inside_the_container_only():
    inside = _probe({"step": "dns", "ok": False, "purpose": "well-known", "name": PEER, "error": "Name or service not known"},
                    {"step": "dns", "ok": False, "purpose": "federation", "name": PEER, "error": "Name or service not known"})
    check = diagnose(PEER, WORDS, inside, REACHED)
    assert not check.ok
    assert "DNS inside the synapse container cannot resolve other.test (Name or service not known), though the host " \
           "resolves it" in check.detail
    assert "Docker's embedded DNS" in check.fix


def test_egress_blocked_for_the_container_names_the_forward_chain_and_the_rule():
    blocked = {"step": "connect", "ok": False, "purpose": "federation", "name": "matrix.other.test", "port": 443,
               "error": "240.0.0.3:443: Connection refused"}
    inside = _probe(WK_DNS_OK, {"step": "connect", "ok": False, "purpose": "well-known", "name": PEER, "port": 443,
                                "error": "240.0.0.3:443: Connection refused"}, DNS_OK, blocked)
    rules = docker_user_rules("-N DOCKER-USER\n-A DOCKER-USER -d 240.0.0.3/32 -j REJECT --reject-with icmp-port-unreachable\n"
                              "-A DOCKER-USER -j RETURN\n")
    assert rules == ["-A DOCKER-USER -d 240.0.0.3/32 -j REJECT --reject-with icmp-port-unreachable"]
    check = diagnose(PEER, WORDS, inside, REACHED, rules)
    assert "egress from the synapse container is blocked: it cannot connect to other.test:443" in check.detail
    assert "while the host itself reaches" in check.detail and "240.0.0.3/32 -j REJECT" in check.detail
    assert "FORWARD or DOCKER-USER" in check.fix and "not OUTPUT" in check.fix


def test_egress_blocked_on_the_host_or_the_peer_down():
    blocked = {"step": "connect", "ok": False, "purpose": "federation", "name": "matrix.other.test", "port": 443,
               "error": "240.0.0.3:443: timed out"}
    both = _probe(DNS_OK, blocked)
    check = diagnose(PEER, WORDS, both, both)
    assert "neither the synapse container nor the host can connect to matrix.other.test:443" in check.detail
    assert "OUTPUT rule" in check.fix and "security list" in check.fix


def test_the_remotes_tls():
    untrusted = {"step": "tls", "ok": False, "purpose": "federation", "name": "matrix.other.test", "address": "240.0.0.3:443",
                 "error": "self-signed certificate", "verify": True}
    check = diagnose(PEER, WORDS, _probe(DNS_OK, CONNECT_OK, untrusted), REACHED)
    assert "the TLS handshake with matrix.other.test at 240.0.0.3:443 is not trusted inside the synapse container " \
           "(self-signed certificate)" in check.detail
    assert check.fix.startswith("the remote's TLS")


def test_reachable_from_the_container_but_refused_by_the_peer():
    check = diagnose(PEER, WORDS, REACHED, REACHED)
    assert "though from inside the synapse container other.test answers on its federation port" in check.detail
    assert "could not fetch our keys" in check.fix


def test_no_look_from_inside():
    check = diagnose(PEER, WORDS, None, None)
    assert "gave no answer" in check.detail and "docker exec synapse" in check.fix


@pytest.mark.parametrize("text", ["", "not json", json.dumps({"steps": "x"})])
def test_a_probe_without_its_json_line_is_none(text):
    assert Probe.parse(text) is None


def test_a_peer_that_refused_our_signature_is_told_apart():
    from installer.federation.outbound import homeserver_said

    log = ("2026-11-30 18:46:29,372 - synapse.handlers.directory - 289 - WARNING - GET-17 - Error retrieving alias "
           "#matrix-installer-outbound-check:other.test -> 401 Unauthorized\n")
    said = homeserver_said(log, PEER)
    assert said == "Error retrieving alias #matrix-installer-outbound-check:other.test -> 401 Unauthorized"
    check = diagnose(PEER, WORDS, REACHED, REACHED, said=said)
    assert check.detail.endswith("; its log says: " + said)
    assert check.fix.startswith("other.test refused our signed request: it could not fetch our server's keys")
    assert homeserver_said("nothing about it", PEER) == ""
