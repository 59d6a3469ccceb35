"""The guided setup speaks of its own fields, not the answers file's keys (issue 14, guided setup
5, 6 and 9): help, choices and problems in the form's words; a pasted URL told to be a domain; a
user name told ASCII or lowercase; checkboxes and radio buttons that differ by shape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.widgets import Static

from installer.answers import FIELDS, Answers, cross_problems, in_words
from installer.options import RunOptions
from installer.readiness import problems_before_run
from tests.tui.helpers import NOTHING_FOUND, VALID, make_app
from tests.tui.test_flow import SIZE, field, problem_text, screen_name, type_into

KEY_NAMES = sorted({spec.key for spec in FIELDS if "_" in spec.key} | {spec.path for spec in FIELDS}, key=len, reverse=True)
"""Words only the answers file uses: every dotted path, and the keys written with an underscore."""


def jargon(text: str) -> list[str]:
    found = [name for name in KEY_NAMES if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text)]
    if re.search(r'\b[a-z_]+ = ("|true|false|\d)', text):
        found.append("a TOML assignment")
    return found


def test_every_field_is_explained_in_the_forms_words() -> None:
    for spec in FIELDS:
        d = spec.declared
        texts = [d.form_help, d.placeholder, d.checkbox, d.label, *(w for _, w in d.options), *(w for _, w in d.option_guides)]
        for text in texts:
            assert not jargon(text), (spec.path, text, jargon(text))


CONTRADICTIONS = [
    Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org", delegation="none"),
    Answers().replace("domain", server_name="example.org", matrix_host="example.org"),
    Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org", delegation="srv",
                      serve_server_name=False),
    Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org",
                      redirect_to="https://blog.example.org", serve_server_name=False),
    Answers().replace("cloud", provider="existing"),
    Answers().replace("registration", policy="token", tokens=0),
    Answers().replace("registration", policy="closed", tokens=2),
    Answers().replace("database", engine="sqlite"),
]


@pytest.mark.parametrize("answers", CONTRADICTIONS)
def test_problems_shown_on_the_forms_name_the_forms_fields(answers: Answers) -> None:
    from installer.deployment import Deployment

    messages = [message for _, message in cross_problems(answers)] + Deployment.build(answers).warnings()
    assert messages
    for message in messages:
        words = in_words(message, form=True)
        assert not jargon(words) and "{{" not in words, (words, jargon(words))


def test_machine_problems_on_review_name_the_forms_fields(tmp_path: Path) -> None:
    answers = VALID.replace("ssh", private_key=str(tmp_path / "gone"))
    for message in problems_before_run(answers, RunOptions(mode="upgrade", state_dir=tmp_path),
                                       lambda a, o: [], env=lambda name: "short"):
        words = in_words(message, form=True)
        assert not jargon(words) and "{{" not in words, (words, jargon(words))
    # Headless, the same problems name the answers file's keys.
    headless = [in_words(m) for m in problems_before_run(answers, RunOptions(mode="upgrade", state_dir=tmp_path),
                                                          lambda a, o: [])]
    assert any(m.startswith("ssh.private_key: ") for m in headless)
    assert any('provider = "existing", ssh.host and ssh.host_key' in m for m in headless)


async def test_a_pasted_url_is_told_to_be_just_the_domain() -> None:
    app = make_app(Answers())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n")
        await type_into(pilot, "domain.server_name", "https://example.org/")
        assert 'is a web address: type just the domain, e.g. "example.org"' in problem_text(app, "domain.server_name")


async def test_the_provider_help_describes_the_choice_made() -> None:
    app = make_app(VALID)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        assert screen_name(app) == "CloudScreen"

        def help_text() -> str:
            return str(field(app, "cloud.provider").query_one(".field-help", Static).render())

        assert "Oracle Cloud account" in help_text() and "Debian" not in help_text()
        field(app, "cloud.provider").control.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.answers.cloud.provider == "oci"  # not applied until Next, but the help follows the choice
        assert "Debian" in help_text() and "Oracle" not in help_text()


@pytest.mark.parametrize(("typed", "said"), [("ädmin", '"ä" is not ASCII'), ("Bob", 'must be lowercase: write "bob"')])
async def test_an_admin_name_is_told_what_to_change(typed: str, said: str) -> None:
    app = make_app(found=NOTHING_FOUND)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n", "ctrl+n", "ctrl+n")
        assert screen_name(app) == "RegistrationScreen"
        await type_into(pilot, "registration.admin_user", typed)
        assert said in problem_text(app, "registration.admin_user")
        assert "only letters" not in problem_text(app, "registration.admin_user")


def test_checked_and_unchecked_differ_by_shape_not_only_colour() -> None:
    from screens.widgets.field import MarkedCheckbox, MarkedRadioButton

    for kind, mark in ((MarkedCheckbox, "✓"), (MarkedRadioButton, "●")):
        on, off = kind("x", True), kind("x", False)
        assert on.BUTTON_INNER == mark and off.BUTTON_INNER == " "


def test_the_domain_preview_of_a_server_given_by_name_promises_no_record_type() -> None:
    """A name resolves to IPv4 or IPv6: the preview says A or AAAA, not A of the name itself."""
    from screens.domain import preview_lines

    answers = VALID.replace("cloud", provider="existing").replace("ssh", host="host.example.net")
    text = "\n".join(preview_lines(answers, "(the address host.example.net resolves to)", resolved_from="host.example.net"))
    assert "matrix.example.org.  A or AAAA  (the address host.example.net resolves to)" in text
    assert "  A  host.example.net" not in text and "  A  (" not in text
    vm = "\n".join(preview_lines(VALID, "(the VM's public IP)"))
    assert "matrix.example.org.  A  (the VM's public IP)" in vm  # Oracle's public addresses are IPv4
