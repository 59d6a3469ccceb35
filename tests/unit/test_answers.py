"""The answers model: the example is valid, every kind of mistake is named with its line."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from installer.answers import (
    Answers,
    AnswersError,
    check_field,
    dump_answers,
    load_answers,
    parse_answers,
    save_answers,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "example-answers.toml"

MINIMAL = """\
version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
"""


def with_lines(section: str, lines: str) -> str:
    """MINIMAL plus some lines in a section (appended to [domain] when that is the one)."""
    if section == "domain":
        return MINIMAL + lines + "\n"
    return MINIMAL + f"[{section}]\n{lines}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(AnswersError) as err:
        parse_answers(text, "a.toml")
    return err.value.problems


def test_example_file_is_valid_and_round_trips(tmp_path: Path) -> None:
    answers = load_answers(EXAMPLE)
    assert answers.domain.server_name == "example.org"
    assert answers.cloud.provider == "oci"
    saved = tmp_path / "saved.toml"
    save_answers(answers, saved)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert load_answers(saved) == answers


def test_defaults_fill_missing_sections() -> None:
    answers = parse_answers(MINIMAL)
    assert answers.ssh.port == 22
    assert answers.registration.policy == "closed"
    assert answers.federation_port == 443


def test_every_problem_is_listed_at_once_with_its_line() -> None:
    found = problems(
        """\
version = 1
[domain]
server_name = "Example.org"
matrix_host = "matrix example.org"
delegation = "wellknown"
[ssh]
port = 70000
[registration]
polcy = "closed"
"""
    )
    assert found == [
        'a.toml:3: domain.server_name: must be lowercase: write "example.org"',
        "a.toml:4: domain.matrix_host: contains a space, which is not allowed here",
        'a.toml:5: domain.delegation: must be one of "well-known", "srv", "none"',
        "a.toml:7: ssh.port: must be a port number from 1 to 65535",
        'a.toml:9: registration.polcy: unknown key (did you mean "policy"?)',
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('server_name = "example.org; rm -rf /"', 'contains ";"'),
        ('server_name = "ex$ample.org"', 'contains "$"'),
        ('server_name = "exa`id`mple.org"', 'contains "`"'),
        ('server_name = "ex{a}mple.org"', 'contains "{"'),
        ('server_name = "ex\\"ample.org"', 'contains """'),
        ('server_name = "example.org\\n"', "contains a newline"),
        ('server_name = "-bad.org"', "inner hyphens"),
        ('server_name = "localhost"', "full domain name"),
        ('server_name = "example..org"', "empty label"),
        ('server_name = "10.0.0.1"', "IP address"),
        ("server_name = 5", "quoted string"),
    ],
)
def test_hostnames_that_could_break_a_shell_caddyfile_or_yaml_are_refused(line: str, expected: str) -> None:
    text = MINIMAL.replace('server_name = "example.org"', line)
    (found,) = [p for p in problems(text) if "domain.server_name" in p]
    assert found.startswith("a.toml:3: domain.server_name: ")
    assert expected in found


@pytest.mark.parametrize(
    ("section", "line", "expected"),
    [
        ("domain", 'acme_email = "admin"', "e-mail address"),
        ("domain", 'acme_email = "a b@example.org"', "part before @"),
        ("domain", 'redirect_to = "ftp://www.example.org"', 'must start with "https://"'),
        ("domain", 'redirect_to = "https://www.example.org/{path}"', 'contains "{"'),
        ("domain", 'tls = "self-signed"', '"acme", "internal"'),
        ("cloud", 'provider = "aws"', '"oci", "existing"'),
        ("cloud", "ocpus = 8", "from 1 to 4"),
        ("cloud", 'ocpus = "2"', "whole number"),
        ("cloud", "memory_gb = true", "whole number"),
        ("cloud", 'compartment_id = "my-compartment"', "OCID"),
        ("cloud", 'shape = "VM.Standard.E4.Flex"', "VM.Standard.A1.Flex"),
        ("ssh", 'user = "root;id"', "Unix user name"),
        ("ssh", 'host_key = "ssh-ed25519 not-base64!"', "base64"),
        ("ssh", 'host_key = "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"', "not an ssh-rsa key"),
        ("registration", 'admin_user = "Admin User"', "Matrix user name"),
        ("registration", 'admin_password_env = "MY-PASSWORD"', "environment variable"),
        ("synapse", 'image = "matrixdotorg/synapse:latest; curl evil"', "image reference"),
        ("synapse", 'max_upload_size = "50MB"', "K, M or G"),
        ("synapse", 'report_stats = "no"', "true or false"),
        ("upgrade", 'reboot = "maybe"', '"ask", "yes", "no"'),
    ],
)
def test_each_key_is_checked(section: str, line: str, expected: str) -> None:
    text = with_lines(section, line)
    found = problems(text)
    key = line.split(" = ")[0]
    assert len(found) == 1, found
    assert found[0].startswith(f"a.toml:{text.count(chr(10))}: {section}.{key}: ")
    assert expected in found[0]


def test_unknown_section_and_misplaced_key_get_a_suggestion() -> None:
    found = problems(MINIMAL + '[regstration]\npolicy = "closed"\n[domain2]\n')
    assert 'a.toml:5: regstration: unknown section (did you mean "registration"?)' in found[0]
    found = problems(MINIMAL + '[ssh]\nadmin_user = "x"\n')
    assert found == ["a.toml:6: ssh.admin_user: unknown key (it belongs in [registration])"]


def test_missing_required_keys_and_wrong_version() -> None:
    found = problems("version = 2\n[domain]\n")
    assert found == [
        "a.toml:1: version: must be 1 (this installer reads answers version 1, got 2)",
        "a.toml:2: domain.server_name: is required",
        "a.toml:2: domain.matrix_host: is required",
    ]


@pytest.mark.parametrize(
    ("section", "lines", "expected"),
    [
        ("domain", 'delegation = "none"', 'with no delegation (delegation = "none"), domain.matrix_host must be domain.server_name'),
        ("cloud", 'provider = "existing"\n[ssh]\nhost_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"', 'ssh.host: is required for provider = "existing"'),
        ("cloud", 'provider = "existing"\n[ssh]\nhost = "203.0.113.7"', 'ssh.host_key: is required for provider = "existing"'),
        ("registration", 'policy = "token"', 'registration policy = "token" needs at least one token'),
        ("registration", "tokens = 3", 'only created with policy = "token"'),
        ("domain", 'redirect_to = "https://example.org/blog"', "would loop"),
        ("cloud", "ocpus = 4\nmemory_gb = 2", "at least 1 GB per OCPU"),
        ("domain", 'delegation = "srv"\nserve_server_name = false', 'delegation = "srv" needs a certificate for example.org'),
    ],
)
def test_keys_that_contradict_each_other(section: str, lines: str, expected: str) -> None:
    found = problems(with_lines(section, lines))
    assert len(found) == 1 and expected in found[0], found


def test_syntax_error_names_the_line() -> None:
    found = problems('version = 1\n[domain]\nserver_name = "example.org\n')
    assert len(found) == 1
    assert found[0].startswith("a.toml:3: syntax: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnswersError) as err:
        load_answers(tmp_path / "nope.toml")
    assert "not found" in err.value.problems[0]


def test_saved_file_holds_no_secrets_and_annotates_each_key(tmp_path: Path) -> None:
    answers = parse_answers(MINIMAL).replace("registration", admin_password_env="MY_MATRIX_PASS")
    text = dump_answers(answers)
    assert 'admin_password_env = "MY_MATRIX_PASS"' in text
    assert "password =" not in text
    assert text.count("#") >= 30  # each key carries its help


def test_check_field_for_forms() -> None:
    assert check_field("ssh.port", 22) is None
    assert check_field("ssh.port", 0) == "must be a port number from 1 to 65535"
    assert check_field("domain.server_name", "ex ample.org") == "contains a space, which is not allowed here"


def test_answers_are_immutable_and_replace_returns_a_copy() -> None:
    a = Answers()
    b = a.replace("ssh", port=2222)
    assert a.ssh.port == 22 and b.ssh.port == 2222


def test_dotted_keys_are_pointed_at_on_their_own_line_and_cross_checks_come_with_field_errors():
    text = ('version = 1\ndomain.server_name = "bad name"\ndomain.matrix_host = "matrix.example.org"\ndomain.colour = "blue"\n'
            '\n[registration]\npolicy = "closed"\ntokens = 2\n[ssh]\nport = 0\n')
    with pytest.raises(AnswersError) as caught:
        parse_answers(text, "a.toml")
    assert caught.value.problems == [
        "a.toml:2: domain.server_name: contains a space, which is not allowed here",
        "a.toml:4: domain.colour: unknown key; [domain] has server_name, matrix_host, delegation, serve_server_name, "
        "redirect_to, acme_email, tls, ipv6",
        'a.toml:8: registration.tokens: tokens are only created with policy = "token" (it is policy = "closed")',
        "a.toml:10: ssh.port: must be a port number from 1 to 65535",
    ]


def test_a_key_with_its_own_problem_gets_no_second_message_from_a_cross_check():
    text = 'version = 1\n[domain]\nserver_name = "example.org"\nmatrix_host = "matrix.example.org"\n[registration]\npolicy = "token"\ntokens = -1\n'
    with pytest.raises(AnswersError) as caught:
        parse_answers(text, "a.toml")
    assert [p for p in caught.value.problems if "registration.tokens" in p] == [caught.value.problems[0]]
    assert len(caught.value.problems) == 1


def test_an_international_name_is_given_in_its_ascii_form_and_a_port_is_refused_plainly():
    assert check_field("domain.server_name", "bücher.example") == 'must be written in ASCII: write "xn--bcher-kva.example" (its IDNA form)'
    assert check_field("domain.server_name", "example.org:8448").startswith("has a port: give the name alone")
    assert check_field("domain.matrix_host", "xn--bcher-kva.example") is None


def test_a_user_or_port_written_into_the_ssh_address_is_pointed_to_its_own_key():
    assert check_field("ssh.host", "ubuntu@203.0.113.7") == "has a user name in it: give the address alone (the user goes in ssh.user)"
    assert check_field("ssh.host", "198.51.100.7:2222") == "has a port in it: give the address alone (the port goes in ssh.port)"
    assert check_field("ssh.host", "2001:db8::7") is None and check_field("ssh.host", "") is None
