"""installer.ssh helpers that need no server."""

from __future__ import annotations

import shlex

import pytest

from installer.engine import StageError
from installer.remote import CommandResult
from installer.ssh import CommandTimeout, SshRemote, key_text, parse_host_key

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"


def test_host_key_forms():
    assert key_text(parse_host_key(KEY + " root@host")) == KEY
    assert key_text(parse_host_key("[203.0.113.7]:2222 " + KEY)) == KEY  # a known_hosts line
    with pytest.raises(StageError) as caught:
        parse_host_key("ssh-ed25519 not-base64")
    assert "ssh_host_ed25519_key.pub" in caught.value.hint


def test_commands_run_under_timeout_with_every_word_quoted():
    line = SshRemote._wrap("echo 'a b'; rm -rf \"$x\"", sudo=True, timeout=42.7)
    words = shlex.split(line)
    assert words[:9] == ["sudo", "-n", "--", "timeout", "-k", "10", "42", "sh", "-c"]
    assert words[9] == "echo 'a b'; rm -rf \"$x\""
    assert shlex.split(SshRemote._wrap("true", sudo=False, timeout=0.2))[:4] == ["timeout", "-k", "10", "1"]


def test_timeout_message():
    err = CommandTimeout("sleep 99", CommandResult(124, "", ""), ["started"], 5)
    assert str(err).startswith("`sleep 99` was stopped after 5 s (timeout)") and "| started" in str(err)
