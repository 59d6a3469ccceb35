"""AAAA records: `[domain] ipv6` (on by default) adds the dns.aaaa stage, which reads the host's
own interfaces over SSH and publishes AAAA records for every name the box serves, pointing at its
public IPv6 address; a host without one keeps A records only."""

from __future__ import annotations

import pytest

from installer.answers import parse_answers
from installer.components.dns import stages
from installer.engine import RunOptions, Session, Stage, StageContext
from installer.events import StageLog, Status
from installer.plan import install_plan
from installer.remote import CommandResult
from installer.state import RunState
from tests.unit.test_host_stages import ScriptedRemote, answers

IP_ADDR = """\
1: lo    inet6 ::1/128 scope host noprefixroute \\       valid_lft forever preferred_lft forever
2: eth0    inet6 2001:db8:100::7/64 scope global temporary dynamic \\       valid_lft 86000sec preferred_lft 14000sec
2: eth0    inet6 fd12:3456::7/64 scope global \\       valid_lft forever preferred_lft forever
3: docker0    inet6 2a01:4f8:1::1/64 scope global \\       valid_lft forever preferred_lft forever
2: eth0    inet6 2a01:4f8:c17:1::7/64 scope global dynamic mngtmpaddr \\       valid_lft 86000sec preferred_lft 14000sec
"""


def test_the_public_ipv6_address_is_a_stable_global_one_on_a_real_interface():
    assert stages.public_ipv6(IP_ADDR) == "2a01:4f8:c17:1::7"
    assert stages.public_ipv6("2: eth0    inet6 fd00::2/64 scope global \\ valid_lft forever\n") is None
    assert stages.public_ipv6("") is None


def test_the_key_adds_the_stage_after_ssh():
    names = [s.name for s in install_plan(answers())]
    assert names.index("dns.aaaa") > names.index("host.ssh") and names.index("dns.aaaa") > names.index("dns.records")
    without = answers().replace("domain", ipv6=False)
    assert "dns.aaaa" not in [s.name for s in install_plan(without)]
    parsed = parse_answers('version = 1\n[domain]\nserver_name = "example.org"\nmatrix_host = "matrix.example.org"\n'
                           'ipv6 = false\n[cloud]\nprovider = "existing"\n[ssh]\nhost = "203.0.113.7"\n'
                           'host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"\n')
    assert parsed.domain.ipv6 is False


def _context(output: str):
    remote = ScriptedRemote([(r"^ip -6", CommandResult(0, output, ""))])
    session = Session(answers(), RunState(None), RunOptions(), remote=remote)
    lines: list[str] = []
    session.listeners.append(lambda e: lines.append(e.line) if isinstance(e, StageLog) else None)
    return StageContext(session, Stage("dns.aaaa", "", stages.ensure_aaaa)), lines


async def test_aaaa_records_for_every_name_the_box_serves(monkeypatch):
    published = []

    async def publish(ctx, records):
        published.extend(records)
        return Status.DONE

    monkeypatch.setattr(stages, "_publish", publish)
    ctx, lines = _context(IP_ADDR)
    assert await stages.ensure_aaaa(ctx) is Status.DONE
    assert [r.zone_line for r in published] == [
        "matrix.example.org. 300 IN AAAA 2a01:4f8:c17:1::7", "example.org. 300 IN AAAA 2a01:4f8:c17:1::7",
        "element.example.org. 300 IN AAAA 2a01:4f8:c17:1::7"]  # Element Web's site too
    assert "the host's public IPv6 address is 2a01:4f8:c17:1::7" in lines


async def test_no_public_ipv6_keeps_a_records_only():
    ctx, lines = _context("2: eth0    inet6 fd00::2/64 scope global \\ valid_lft forever\n")
    assert await stages.ensure_aaaa(ctx) is Status.SKIPPED
    assert "the host has no public IPv6 address: A records only" in lines
