"""The guided setup driven with the keyboard (Pilot, 80x24): every screen, valid and invalid input,
back and forth, saving answers, and a run on a synthetic plan with a failing stage."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Input, Label, Log, RadioSet, Static

from installer.answers import Answers, load_answers
from installer.engine import RunOptions
from installer.events import RunResult, StageResult, Status
from installer.plan import plan_for
from screens.app import InstallerApp
from screens.dialogs import FailureDialog, PathDialog
from screens.provision import HISTORY, ProvisionScreen
from screens.widgets import FormField
from tests.tui.helpers import FEDERATION, NOTHING_FOUND, VALID, Plan, make_app

SIZE = (80, 24)
FEDERATES = {**FEDERATION, "ok": True, "checks": [dict(c, ok=True, fix=None) for c in FEDERATION["checks"]]}


def screen_name(app: InstallerApp) -> str:
    return type(app.screen).__name__


async def wait_for(pilot: Pilot, condition, timeout: float = 10.0) -> None:
    """Let the app run until `condition()` holds (the engine runs in a worker)."""
    waited = 0.0
    while not condition():
        assert waited < timeout, f"timed out on {screen_name(pilot.app)}"
        await pilot.pause(0.05)
        waited += 0.05


def field(app: InstallerApp, path: str) -> FormField:
    return app.screen.query_one(f"#field-{path.replace('.', '-')}", FormField)


def problem_text(app: InstallerApp, path: str) -> str:
    return str(field(app, path).query_one(".field-problem", Static).render())


async def type_into(pilot: Pilot, path: str, text: str) -> None:
    """Focus a text field, clear it and paste `text` (one change, as a paste; the keyboard-only
    test types key by key)."""
    control = field(pilot.app, path).control
    assert isinstance(control, Input)
    control.focus()
    await pilot.pause()
    control.value = ""
    control.insert_text_at_cursor(text)
    await pilot.pause()


async def save_through_the_dialog(pilot: Pilot, path: Path | str) -> None:
    """Review's Save answers: Ctrl+S, the path typed over the offered one, Enter."""
    await pilot.press("ctrl+s")
    pilot.app.screen.query_one("#path", Input).value = str(path)
    await pilot.press("enter")
    await pilot.pause()


async def run_to_review(pilot: Pilot) -> None:
    await pilot.press("enter")  # Start
    for expected in ("CloudScreen", "DomainScreen", "KeysScreen", "RegistrationScreen", "ServerScreen"):
        await pilot.pause()
        assert screen_name(pilot.app) == expected
        await pilot.press("ctrl+n")
    await pilot.pause()
    assert screen_name(pilot.app) == "ReviewScreen"


async def test_keyboard_alone_from_welcome_to_done_with_a_retry() -> None:
    plan = Plan(fail_once=["host.caddy"], federation=FEDERATES, shown_once=[("Admin password", "s3cret-pass-word")])
    app = make_app(None, plan=plan)
    async with app.run_test(size=SIZE) as pilot:
        assert screen_name(app) == "WelcomeScreen"
        await pilot.press("enter")
        assert screen_name(app) == "CloudScreen"
        await pilot.press("ctrl+n")
        assert screen_name(app) == "DomainScreen"
        # Nothing preset: the server name is empty and Next refuses.
        await pilot.press("ctrl+n")
        assert screen_name(app) == "DomainScreen"
        assert "is required" in problem_text(app, "domain.server_name")
        assert app.screen.focused is field(app, "domain.server_name").control
        await pilot.press(*"example.org")
        await pilot.pause()
        assert field(app, "domain.matrix_host").value == "matrix.example.org"  # suggested
        assert '"m.server": "matrix.example.org:443"' in str(app.screen.query_one("#preview", Static).render())
        await pilot.press("ctrl+n")
        assert screen_name(app) == "KeysScreen"
        await pilot.press("tab", "tab", "enter")  # Tab through the fields to Next
        await pilot.pause()
        assert screen_name(app) == "RegistrationScreen"
        await pilot.press("ctrl+n")
        assert screen_name(app) == "ServerScreen"
        await pilot.press("ctrl+n")
        assert screen_name(app) == "ReviewScreen"
        assert app.answers.domain.server_name == "example.org"
        await pilot.press("ctrl+n")  # Install (dry run)
        await wait_for(pilot, lambda: isinstance(app.screen, FailureDialog))
        dialog = app.screen
        assert dialog.stage_name == "host.caddy"
        assert "E: Unable to locate package caddy" in "\n".join(dialog.last_lines)
        assert not dialog.query("#skip")  # not skippable
        await pilot.press("r")
        provision = app.screen
        assert isinstance(provision, ProvisionScreen)
        await wait_for(pilot, lambda: not provision.query_one("#continue", Button).disabled)
        assert plan.attempts["host.caddy"] == 2
        assert [r.status for r in provision.rows] == [Status.PLANNED] * 5
        assert app.focused is provision.query_one("#continue", Button)
        await pilot.press("enter")
        assert screen_name(app) == "FederationScreen"
        await pilot.press("enter")
        assert screen_name(app) == "DoneScreen"
        done = str(app.screen.query_one("#login", Static).render())
        assert "https://matrix.example.org" in done and "@admin:example.org" in done
        assert "s3cret-pass-word" in str(app.screen.query_one("#secrets", Static).render())
        await pilot.press("enter")
    assert app.return_code == 0


async def test_a_long_done_screen_scrolls_from_the_keyboard() -> None:
    """Five tokens and the password to copy: more than 80x24 holds, and focus stays on Quit."""
    tokens = [(f"Registration token {n}", f"token-{n}-abcdefghijklmnop") for n in range(1, 6)]
    plan = Plan(shown_once=[("Admin password", "s3cret-pass-word"), *tokens], federation=FEDERATES)
    app = make_app(plan=plan)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        provision = app.screen
        await wait_for(pilot, lambda: not provision.query_one("#continue", Button).disabled)
        await pilot.press("enter", "enter")
        assert screen_name(app) == "DoneScreen"
        body = app.screen.query_one("#form")
        assert body.max_scroll_y > 0 and body.scroll_y == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert body.scroll_y > 0 and isinstance(app.focused, Button)
        await pilot.press("pageup")
        await pilot.pause()
        assert body.scroll_y == 0


async def test_secrets_never_reach_the_log_pane() -> None:
    plan = Plan(shown_once=[("Admin password", "s3cret-pass-word")], federation=FEDERATES)
    app = make_app(plan=plan)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, ProvisionScreen) and app.screen.result is not None)
        screen = app.screen
        for buffer in screen.buffers.values():
            assert not any("s3cret-pass-word" in line for line in buffer)
        assert not any("s3cret-pass-word" in line for line in screen.query_one("#log", Log).lines)


async def test_invalid_values_are_flagged_as_typed_and_block_next() -> None:
    app = make_app(Answers())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n")
        assert screen_name(app) == "DomainScreen"
        await type_into(pilot, "domain.server_name", "Example Org")
        assert "contains a space" in problem_text(app, "domain.server_name")
        await type_into(pilot, "domain.server_name", "Example.org")
        assert 'lowercase: write "example.org"' in problem_text(app, "domain.server_name")
        await pilot.press("ctrl+n")
        assert screen_name(app) == "DomainScreen"
        assert "to fix" in str(app.screen.query_one("#nav-status", Static).render())
        await type_into(pilot, "domain.server_name", "example.org")
        assert problem_text(app, "domain.server_name") == ""
        await type_into(pilot, "domain.matrix_host", "matrix.example.org")
        await type_into(pilot, "domain.redirect_to", "https://example.org/blog")  # loops back to itself
        await pilot.press("ctrl+n")
        assert screen_name(app) == "DomainScreen"
        assert "requests would loop" in problem_text(app, "domain.redirect_to")
        await type_into(pilot, "domain.redirect_to", "https://www.example.org/")
        # delegation "none" with a different host is a cross-field problem, shown on delegation
        radio = field(app, "domain.delegation").control
        assert isinstance(radio, RadioSet)
        radio.focus()
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        assert field(app, "domain.delegation").value == "none"
        await pilot.press("ctrl+n")
        assert screen_name(app) == "DomainScreen"
        assert 'With no delegation ("none: server name = Matrix host"), Matrix host must be Server name' in problem_text(app, "domain.delegation")
        radio.focus()
        await pilot.press("up", "up", "enter", "ctrl+n")
        await pilot.pause()
        assert screen_name(app) == "KeysScreen"
        assert app.answers.domain.redirect_to == "https://www.example.org/"


async def test_back_keeps_what_was_typed_and_choices_show_their_fields() -> None:
    app = make_app(Answers())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        assert screen_name(app) == "CloudScreen"
        assert field(app, "ssh.host").has_class("-na") and not field(app, "cloud.shape").has_class("-na")
        provider = field(app, "cloud.provider").control
        provider.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert field(app, "cloud.provider").value == "existing"
        assert field(app, "cloud.shape").has_class("-na") and field(app, "cloud.oci_profile").has_class("-na")
        assert not field(app, "ssh.host").has_class("-na") and not field(app, "ssh.port").has_class("-na")
        await pilot.press("ctrl+n")  # no host yet
        assert screen_name(app) == "CloudScreen"
        assert 'Server address is required for "A server I already have"' in problem_text(app, "ssh.host")
        await type_into(pilot, "ssh.port", "70000")
        assert "from 1 to 65535" in problem_text(app, "ssh.port")
        await type_into(pilot, "ssh.port", "2222")
        await type_into(pilot, "ssh.host", "203.0.113.7")
        await pilot.press("ctrl+n")
        assert screen_name(app) == "DomainScreen"
        await type_into(pilot, "domain.server_name", "chat.example.net")
        assert "203.0.113.7" in str(app.screen.query_one("#preview", Static).render())
        await pilot.press("escape")
        assert screen_name(app) == "CloudScreen"
        assert app.answers.domain.server_name == "chat.example.net"
        await pilot.press("escape")
        assert screen_name(app) == "WelcomeScreen"
        await pilot.press("enter")
        assert field(app, "cloud.provider").value == "existing"
        assert field(app, "ssh.host").value == "203.0.113.7"
        assert field(app, "ssh.port").value == 2222
        await pilot.press("ctrl+n")
        assert field(app, "domain.server_name").value == "chat.example.net"
        assert field(app, "domain.matrix_host").value == "matrix.chat.example.net"


async def test_registration_tokens_only_with_the_token_policy() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n", "ctrl+n", "ctrl+n")
        assert screen_name(app) == "RegistrationScreen"
        assert field(app, "registration.tokens").has_class("-na")
        field(app, "registration.policy").control.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert not field(app, "registration.tokens").has_class("-na")
        # No error at once for a field nobody touched: one token is offered instead of the default 0.
        assert problem_text(app, "registration.tokens") == ""
        assert field(app, "registration.tokens").value == 1
        await type_into(pilot, "registration.tokens", "0")
        await pilot.press("ctrl+n")
        assert 'needs at least one token' in problem_text(app, "registration.tokens")
        await type_into(pilot, "registration.tokens", "3")
        await pilot.press("ctrl+n", "ctrl+n")
        assert screen_name(app) == "ReviewScreen"
        assert app.answers.registration.policy == "token" and app.answers.registration.tokens == 3


async def test_the_run_log_shows_a_command_as_the_headless_log_does() -> None:
    """One mark per command line ("$ sudo true", never "$ $ sudo true"); a shell line under sudo
    as what really runs."""
    from installer.engine import Stage

    async def commands(ctx) -> Status:
        await ctx.run("true", sudo=True)
        await ctx.run("systemctl enable caddy && systemctl restart caddy", sudo=True)
        await ctx.read_file("/etc/caddy/Caddyfile")
        return Status.DONE

    app = make_app(plan=lambda mode, answers, facts=None: [Stage("host.caddy", "Caddy", commands)])
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, ProvisionScreen) and app.screen.result is not None)
        lines = list(app.screen.buffers["host.caddy"])
        assert "$ sudo true" in lines
        assert "$ sudo sh -c 'systemctl enable caddy && systemctl restart caddy'" in lines
        assert "? sudo cat -- /etc/caddy/Caddyfile  # a dry run assumes no such file yet" in lines
        assert not [line for line in lines if line.startswith(("$ $", "$ ?"))], lines


async def test_a_short_admin_password_is_found_on_the_accounts_step() -> None:
    """As the headless run finds it before anything runs: the status line says so, Next refuses."""
    app = make_app(env={"MATRIX_ADMIN_PASSWORD": "short"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n", "ctrl+n", "ctrl+n")
        assert screen_name(app) == "RegistrationScreen"
        status = str(app.screen.query_one("#password-status", Static).render())
        assert "✗" in status and "$MATRIX_ADMIN_PASSWORD is shorter than 8 characters" in status
        await pilot.press("ctrl+n")
        assert screen_name(app) == "RegistrationScreen"
        assert "shorter than 8 characters" in problem_text(app, "registration.admin_password_env")
        assert "short" not in status.replace("shorter", "")  # the password itself is never shown
        # Another variable, with a password long enough: on to the next step.
        app.env = {"MATRIX_ADMIN_PASSWORD": "short", "MY_ADMIN_PW": "long-enough-pw"}.get
        await type_into(pilot, "registration.admin_password_env", "MY_ADMIN_PW")
        assert "MY_ADMIN_PW is set" in str(app.screen.query_one("#password-status", Static).render())
        await pilot.press("ctrl+n")
        assert screen_name(app) == "ServerScreen"


async def test_a_password_variable_kept_for_something_else_is_refused_on_the_accounts_step() -> None:
    app = make_app(env={"PATH": "/usr/bin:/bin"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n", "ctrl+n", "ctrl+n")
        await type_into(pilot, "registration.admin_password_env", "PATH")
        assert "MATRIX or ADMIN" in problem_text(app, "registration.admin_password_env")
        assert str(app.screen.query_one("#password-status", Static).render()) == ""  # "PATH is set" would mislead
        await pilot.press("ctrl+n")
        assert screen_name(app) == "RegistrationScreen"


async def test_review_lists_problems_and_refuses_to_install() -> None:
    bad = VALID.replace("cloud", ocpus=4, memory_gb=2)
    app = make_app(bad)
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(__import__("screens.review", fromlist=["ReviewScreen"]).ReviewScreen())
        await pilot.pause()
        assert "at least 1 GB per OCPU" in str(app.screen.query_one("#problems", Static).render())
        assert app.screen.query_one("#install", Button).disabled
        # The footer does not offer what the dimmed button refuses; Ctrl+N says why rather than nothing.
        assert "Install" not in [str(k.description) for k in app.screen.query("FooterKey")]
        await pilot.press("ctrl+n")
        assert screen_name(app) == "ReviewScreen"
        assert "Not ready" in str(app.screen.query_one("#nav-status", Static).render())
        # The box stays in sight however far the answers are scrolled.
        box = app.screen.query_one("#problems-box")
        app.screen.query_one("#form").scroll_end(animate=False)
        await pilot.pause()
        assert box.display and box.region.height > 0 and box.region.y < app.screen.query_one("#form").region.y


async def test_save_answers_writes_0600_and_replays_to_the_same_plan(tmp_path: Path) -> None:
    target = tmp_path / "saved" / "answers.toml"
    answers = VALID.replace("registration", policy="token", tokens=2).replace("cloud", shape="VM.Standard.E2.1.Micro")
    app = make_app(answers)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, PathDialog)
        path_input = app.screen.query_one("#path", Input)
        assert path_input.value == "/work/answers/matrix-answers.toml"
        path_input.value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        # Its folder is not there yet: made only when the user says so.
        assert screen_name(app) == "ConfirmDialog" and f"{target.parent} does not exist" in app.screen.question
        await pilot.click("#yes")
        await pilot.pause()
        assert screen_name(app) == "ReviewScreen"
        status = str(app.screen.query_one("#nav-status", Static).render())
        assert status == f"✓ saved {target.name} (0600) in {target.parent}, new folder {target.parent}"
        assert not app._notifications  # no toast over the status line
        saved_answers = app.answers
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    text = target.read_text()
    # Saving over another file that is there already asks first; Cancel keeps it.
    other = tmp_path / "other.toml"
    other.write_text("mine\n")
    app = make_app(answers)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await save_through_the_dialog(pilot, other)
        assert screen_name(app) == "ConfirmDialog"
        await pilot.press("enter")  # Cancel is focused
        await pilot.pause()
        assert screen_name(app) == "ReviewScreen" and other.read_text() == "mine\n"
    assert 'server_name = "example.org"' in text and "password =" not in text
    loaded = load_answers(target)
    assert loaded == saved_answers
    assert [s.name for s in plan_for("install", loaded)] == [s.name for s in plan_for("install", saved_answers)]


async def test_save_answers_refuses_a_bad_path_in_the_dialog_itself(tmp_path: Path) -> None:
    """The dialog keeps its own problem line (its stylesheet loads with it, not with the forms)."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await save_through_the_dialog(pilot, tmp_path / "a;b.toml")
        assert screen_name(app) == "PathDialog"
        problem = app.screen.query_one("#path-problem", Static)
        assert str(problem.render()) == '✗ The path contains ";", which is not allowed in a path here'
        assert problem.region.height == 1 and problem.region.x == app.screen.query_one("#path", Input).region.x
        assert problem.styles.color.hex == app.current_theme.to_color_system().generate()["text-error"].upper()
        assert not list(tmp_path.iterdir())


async def test_save_answers_to_an_unwritable_place_shows_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await save_through_the_dialog(pilot, blocker / "answers.toml")
        assert screen_name(app) == "PathDialog"  # said where the path is typed, to type another
        assert f"cannot be made: {blocker} is a file, not a folder" in str(app.screen.query_one("#path-problem", Static).render())
        await pilot.press("escape")
        assert screen_name(app) == "ReviewScreen"


async def test_give_up_fails_the_stage_skips_its_dependents_and_exits_1() -> None:
    plan = Plan(fail_once=["cloud.instance"])
    app = make_app(plan=plan)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, FailureDialog))
        await pilot.press("g")
        provision = app.screen
        await wait_for(pilot, lambda: provision.result is not None and not provision.query_one("#continue", Button).disabled)
        statuses = {r.name: r.status for r in provision.rows}
        assert statuses["cloud.instance"] is Status.FAILED
        assert statuses["host.caddy"] is Status.SKIPPED
        await pilot.press("enter", "enter")
        assert screen_name(app) == "DoneScreen"
        assert "cloud.instance" in str(app.screen.query_one("#failures", Static).render())
        await pilot.press("q")
    assert app.return_code == 1


async def test_skip_is_offered_only_for_skippable_stages() -> None:
    plan = Plan(("local.ssh_key", "dns.records", "host.ssh"), fail_once=["dns.records"])
    app = make_app(plan=plan)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, FailureDialog))
        assert app.screen.query("#skip")
        await pilot.press("s")
        provision = app.screen
        await wait_for(pilot, lambda: provision.result is not None)
        assert {r.name: r.status for r in provision.rows}["dns.records"] is Status.SKIPPED


async def test_quit_and_resume_later_exits_130_with_state_saved(tmp_path: Path) -> None:
    plan = Plan(fail_once=["host.caddy"])
    app = make_app(plan=plan, dry_run=False, state_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        # A real install asks first; Cancel (focused) changes nothing, Install goes.
        assert screen_name(app) == "ConfirmDialog"
        assert "Install example.org on a new Oracle Cloud VM now?" in str(app.screen.query_one(".dialog-message", Static).render())
        await pilot.press("enter")
        assert screen_name(app) == "ReviewScreen" and not (tmp_path / "example.org").exists()
        await pilot.press("ctrl+n")
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FailureDialog))
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None)
    assert app.return_code == 130
    state = (tmp_path / "example.org" / "state.json").read_text()
    assert '"cloud.instance"' in state and '"done"' in state
    assert (tmp_path / "example.org" / "answers.toml").is_file()
    # The report is written for an interrupted run too, saying where it stopped.
    report = json.loads((tmp_path / "example.org" / "report.json").read_text())
    assert report["ok"] is False
    assert {s["name"]: s["status"] for s in report["stages"]}["cloud.instance"] == "done"


async def test_ctrl_q_asks_first_and_quits_with_0_before_anything_ran() -> None:
    """130 means a run was interrupted; quitting the forms, before any run, is a clean exit."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+q")
        assert screen_name(app) == "ConfirmDialog"
        await pilot.press("escape")
        assert screen_name(app) == "CloudScreen"
        await pilot.press("ctrl+q", "tab", "enter")
        await pilot.pause()
    assert app.return_code == 0


async def test_quitting_at_welcome_exits_0() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        assert screen_name(app) == "WelcomeScreen"
        await pilot.press("ctrl+q")
        assert screen_name(app) == "ConfirmDialog"
        await pilot.press("tab", "enter")
        await pilot.pause()
    assert app.return_code == 0


async def test_a_flood_of_log_lines_is_batched_and_bounded() -> None:
    plan = Plan(("local.ssh_key", "host.flood"), lines=100_000)
    app = make_app(plan=plan)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, ProvisionScreen) and app.screen.result is not None, timeout=60)
        screen = app.screen
        log = screen.query_one("#log", Log)
        assert log.line_count <= HISTORY
        assert len(screen.buffers["host.flood"]) == HISTORY
        assert screen.buffers["host.flood"][-2].endswith("output line 99999")
        assert screen.buffers["host.flood"][-1] == "✓ planned"


async def test_picking_a_stage_shows_its_log_and_f_follows_again() -> None:
    app = make_app(plan=Plan(federation=FEDERATES))
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        screen = app.screen
        await wait_for(pilot, lambda: isinstance(screen, ProvisionScreen) and screen.result is not None)
        await pilot.pause()
        assert screen.shown == "federation.check" and screen.following
        screen.stage_list.focus()
        await pilot.press("home")
        await pilot.pause()
        assert screen.shown == "local.ssh_key" and not screen.following
        assert "checking local.ssh_key" in screen.query_one("#log", Log).lines
        await pilot.press("f")
        assert screen.following


async def test_resume_a_previous_run_goes_to_review_with_its_answers(tmp_path: Path) -> None:
    from installer import discovery
    from installer.answers import save_answers

    folder = tmp_path / "old.example.net"
    saved = VALID.replace("domain", server_name="old.example.net", matrix_host="matrix.old.example.net")
    save_answers(saved, folder / "answers.toml")
    (folder / "state.json").write_text('{"version": 1, "facts": {}, "stages": {"local.ssh_key": {"status": "done", "at": 5}}}')
    found = discovery.Found(oci_config=Path("/nonexistent"), previous_runs=tuple(discovery.previous_runs(tmp_path)))
    app = make_app(None, found=found, plan=plan_for)
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#runs").focus()
        await pilot.press("u")
        await pilot.pause()
        assert screen_name(app) == "ReviewScreen"
        assert app.options.mode == "upgrade"
        assert app.answers == saved
        assert "upgrade.backup" in str(app.screen.query_one("#plan", Static).render())


async def test_the_real_install_plan_in_dry_run_reaches_done() -> None:
    app = InstallerApp(VALID, RunOptions(dry_run=True), found=NOTHING_FOUND, clock=lambda: 0.0)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, FailureDialog)
                       or (isinstance(app.screen, ProvisionScreen) and app.screen.result is not None), timeout=60)
        if isinstance(app.screen, FailureDialog):
            pytest.fail(f"dry-run stage failed: {app.screen.error}")
        await pilot.press("enter", "enter")
        assert screen_name(app) == "DoneScreen"


async def test_an_oci_profile_that_is_not_ready_blocks_a_real_install_only() -> None:
    problems = ["/home/ada/.oci/config:3: key_file: /home/ada/.oci/key.pem is not a PEM private key"]
    for dry_run, blocked in ((True, False), (False, True)):
        app = make_app(dry_run=dry_run, provider_check=lambda answers, options: problems)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter", "ctrl+n", "ctrl+n")
            assert "is not a PEM private key" in str(app.screen.query_one("#oci-key-status", Static).render())
            await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
            assert screen_name(app) == "ReviewScreen"
            assert "is not a PEM private key" in str(app.screen.query_one("#problems", Static).render())
            assert app.screen.query_one("#install", Button).disabled is blocked


async def test_z_gives_the_log_the_whole_width() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        screen = app.screen
        await wait_for(pilot, lambda: isinstance(screen, ProvisionScreen) and screen.result is not None)
        narrow = screen.query_one("#log", Log).size.width
        await pilot.press("z")
        await pilot.pause()
        assert not screen.query_one("#stage-list").display
        assert screen.query_one("#log", Log).size.width > narrow + 20
        # Back: the stage list has the keys again, as before z.
        await pilot.press("z")
        screen.stage_list.focus()
        await pilot.press("z", "z")
        await pilot.pause()
        assert app.focused is screen.stage_list
        before = screen.stage_list.highlighted
        await pilot.press("up")
        assert screen.stage_list.highlighted == before - 1


async def test_an_engine_error_goes_to_one_dialog_not_a_traceback() -> None:
    from installer.engine import Stage

    async def nothing(ctx):
        return None

    def broken(mode, answers, facts=None):  # a stage needing one that is not in the plan: the engine refuses it
        return [Stage("host.caddy", "Caddy", nothing, ("host.ssh",))]

    app = make_app(plan=broken)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: screen_name(app) == "ErrorDialog")
        assert "needs host.ssh" in str(app.screen.query_one(".dialog-message", Static).render())
        await pilot.press("enter")
        await pilot.pause()
    assert app.return_code == 1


class AskingPlan(Plan):
    """A plan whose one stage asks the user (as upgrade.reboot does with reboot = "ask")."""

    def __init__(self) -> None:
        super().__init__(["upgrade.reboot"])
        self.answer: bool | None = None

    def _body(self, name: str):
        async def run(ctx):
            self.answer = await ctx.confirm("The OS asks for a reboot (kernel update). Reboot now?")
            ctx.log(f"reboot answered: {self.answer}")
            return Status.DONE if self.answer else Status.SKIPPED

        return run


@pytest.mark.parametrize(("key", "expected"), [("y", True), ("escape", False)])
async def test_a_stage_that_asks_gets_the_users_answer(key: str, expected: bool) -> None:
    from screens.dialogs import ConfirmDialog

    plan = AskingPlan()
    app = make_app(plan=plan)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "Reboot now?" in str(app.screen.query_one(".dialog-message", Static).render())
        if key == "y":
            app.screen.query_one("#yes", Button).press()
        else:
            await pilot.press("escape")
        await wait_for(pilot, lambda: plan.answer is not None)
    assert plan.answer is expected


class WaitingPlan(Plan):
    """A plan whose one stage waits on the world the way dns.records does, stoppable by the user."""

    def __init__(self) -> None:
        super().__init__(["dns.records", "federation.check"])
        self.polls = 0

    def _body(self, name: str):
        if name != "dns.records":
            return super()._body(name)

        async def run(ctx):
            with ctx.skippable("waiting for DNS records") as wait:
                while not wait.stopped:
                    self.polls += 1
                    await wait.pause(0.05)
            ctx.log("stopped waiting for DNS at the user's request")
            return Status.SKIPPED

        return run


async def test_s_stops_a_wait_and_the_run_goes_on(tmp_path: Path) -> None:
    """The DNS wait's skip, as a person at the keyboard reaches it: `s` on the run's screen (the
    footer offers it only while something waits)."""
    plan = WaitingPlan()
    app = make_app(plan=plan, dry_run=False, state_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")  # Install: a real run asks first
        await wait_for(pilot, lambda: screen_name(app) == "ConfirmDialog")
        app.screen.query_one("#yes", Button).press()
        await wait_for(pilot, lambda: isinstance(app.screen, ProvisionScreen) and plan.polls > 2)
        footer = [str(k.description) for k in app.screen.query("FooterKey")]
        assert "Stop waiting" in footer
        await pilot.press("s")
        screen = app.screen
        await wait_for(pilot, lambda: screen.result is not None)
        assert [(s.name, s.status.value) for s in screen.result.stages] == [("dns.records", "skipped"),
                                                                             ("federation.check", "done")]
        assert "Stop waiting" not in [str(k.description) for k in app.screen.query("FooterKey")]


async def test_welcome_appears_first_then_shows_what_it_found_on_this_machine(tmp_path: Path) -> None:
    """Discovery runs right after the first frame (it is not on the way to it)."""
    import subprocess

    from installer.engine import RunOptions as Options

    (tmp_path / ".ssh").mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@here", "-f", str(tmp_path / ".ssh" / "id_ed25519")], check=True)
    app = InstallerApp(None, Options(dry_run=True, state_dir=tmp_path / "state"), home=tmp_path,
                       provider_check=lambda answers, options: [], env=lambda name: None)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.found is not None)
        await pilot.pause()
        found = str(app.screen.query_one("#found", Static).render())
        assert "SSH key id_ed25519" in found and "looking around" not in found
        assert app.focused is not None and app.focused.id == "start"
        await pilot.press("enter")
        await pilot.pause()
        assert screen_name(app) == "CloudScreen"


async def test_an_error_in_a_screen_shows_no_traceback_and_keeps_details_private(tmp_path: Path, capsys) -> None:
    """No traceback (Textual's shows local variables) reaches the terminal: a short message, and
    the details in a 0600 file."""
    app = make_app(state_dir=tmp_path)

    def broken() -> None:
        raise RuntimeError("the screen's handler broke")

    with pytest.raises(RuntimeError):
        async with app.run_test(size=SIZE) as pilot:
            app.screen.action_start = broken  # type: ignore[method-assign]
            await pilot.press("enter")
            await pilot.pause()
    shown = " ".join(capsys.readouterr().err.split())  # what the terminal got as the app closed
    assert "stopped on an unexpected error: the screen's handler broke" in shown
    assert "Traceback" not in shown and "locals" not in shown and "RuntimeError" not in shown
    (crash,) = tmp_path.glob("crash-*.log")
    assert stat.S_IMODE(crash.stat().st_mode) == 0o600
    assert "Traceback" in crash.read_text() and "RuntimeError" in crash.read_text()  # for a bug report


async def test_an_engine_that_stops_unexpectedly_is_said_in_words(tmp_path: Path, monkeypatch) -> None:
    """The run's worker error dialog names no internal class (LifetimeTimeout means nothing to a
    user); the class and traceback go to the private crash file."""
    from screens import provision
    from screens.dialogs import ErrorDialog

    class LifetimeTimeout(Exception):
        pass

    class Broken:
        def __init__(self, *args) -> None:
            pass

        async def run(self):
            raise LifetimeTimeout("The DNS operation timed out after 5.2 seconds")

    monkeypatch.setattr(provision, "Engine", Broken)
    app = make_app(state_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog))
        dialog = app.screen
        shown = f"{dialog.message} {dialog.what_to_do}"
        assert dialog.message == "no answer in time"
        assert "LifetimeTimeout" not in shown and "crash-" in shown
    (crash,) = tmp_path.glob("crash-*.log")
    assert "LifetimeTimeout" in crash.read_text()


def test_the_domain_preview_says_what_the_stages_will_make() -> None:
    """Port and SRV record as the DNS stage and the Caddyfile make them, for each delegation."""
    from screens.domain import preview_lines

    base = VALID.replace("domain", server_name="example.org", matrix_host="matrix.example.org")
    srv = "\n".join(preview_lines(base.replace("domain", delegation="srv"), "203.0.113.7"))
    assert "_matrix-fed._tcp.example.org.  SRV  0 10 8448 matrix.example.org." in srv
    none = "\n".join(preview_lines(base.replace("domain", delegation="none", matrix_host="example.org"), "203.0.113.7"))
    assert "other servers connect to example.org:8448" in none and none.count("  A  ") == 2
    assert "  element.example.org.  A  203.0.113.7" in none  # Element Web's own name needs its record too
    elsewhere = "\n".join(preview_lines(base.replace("domain", serve_server_name=False), "203.0.113.7"))
    assert "publish it on the site that serves example.org" in elsewhere and "  example.org.  A" not in elsewhere


async def test_the_offered_matrix_host_follows_the_server_name_and_its_old_problems_go() -> None:
    app = make_app(None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n")
        assert screen_name(app) == "DomainScreen"
        await pilot.press("ctrl+n")  # Next with nothing typed: both names are missing
        assert "is required" in problem_text(app, "domain.matrix_host")
        status = app.screen.query_one("#nav-status", Static)
        assert str(status.render()) == "✗ 2 fields to fix"
        await type_into(pilot, "domain.server_name", "Example.ORG")
        assert field(app, "domain.matrix_host").value == "matrix.example.org"
        assert problem_text(app, "domain.matrix_host") == ""  # "is required" no longer holds
        assert "must be lowercase" in problem_text(app, "domain.server_name")
        assert str(status.render()) == "✗ 1 field to fix"
        await type_into(pilot, "domain.server_name", "abc.org")
        assert str(status.render()) == "" and field(app, "domain.matrix_host").value == "matrix.abc.org"
        # Back and again: the offered host still follows the server name.
        await pilot.press("escape", "ctrl+n")
        assert screen_name(app) == "DomainScreen"
        await type_into(pilot, "domain.server_name", "xyz.org")
        assert field(app, "domain.matrix_host").value == "matrix.xyz.org"
        assert '"m.server": "matrix.xyz.org:443"' in str(app.screen.query_one("#preview", Static).render())


async def test_keys_for_an_existing_server_ask_for_its_host_key_and_say_how_to_authorize_a_new_pair() -> None:
    answers = VALID.replace("cloud", provider="existing").replace("ssh", host="203.0.113.7", private_key="~/.ssh/new_key")
    app = make_app(answers)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter", "ctrl+n", "ctrl+n")
        assert screen_name(app) == "KeysScreen"
        help_text = str(field(app, "ssh.host_key").query_one(".field-help", Static).render())
        assert help_text.startswith("required: on the server's console, sudo cat /etc/ssh/ssh_host_ed25519_key.pub")
        status = str(app.screen.query_one("#key-status", Static).render())
        assert "ssh-copy-id -i ~/.ssh/new_key.pub ubuntu@203.0.113.7" in status


async def test_upgrading_a_server_nobody_knows_the_address_of_is_refused_on_review(tmp_path: Path) -> None:
    app = make_app(mode="upgrade", dry_run=False, state_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        shown = str(app.screen.query_one("#problems", Static).render())
        assert "Not ready yet:" in shown and "knows the server's address" in shown
        assert app.screen.query_one("#install", Button).disabled
        await pilot.press("ctrl+n")
        assert screen_name(app) == "ReviewScreen"


async def test_upgrade_mode_words_its_steps_for_an_upgrade(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    answers = VALID.replace("cloud", provider="existing").replace("ssh", host="203.0.113.7", host_key=key)
    app = make_app(answers, mode="upgrade", state_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        assert screen_name(app) == "CloudScreen"
        assert "Oracle Cloud: the server an earlier run made" in [str(b.label) for b in app.screen.query("RadioButton")]
        assert str(app.screen.query_one(".heading", Static).render()) == "Where does the server run?"
        for expected in ("DomainScreen", "KeysScreen", "RegistrationScreen", "ServerScreen", "ReviewScreen"):
            await pilot.press("ctrl+n")
            await pilot.pause()
            assert screen_name(app) == expected
        assert str(app.screen.query_one(".heading", Static).render()) == "Review, then upgrade"
        footer_keys = [str(k.description) for k in app.screen.query("FooterKey")]
        assert "Upgrade" in footer_keys and "Install" not in footer_keys
        await pilot.press("ctrl+n")  # a dry run starts at once
        await wait_for(pilot, lambda: screen_name(app) == "ProvisionScreen")


def test_review_lists_only_the_answers_that_matter_for_this_setup() -> None:
    from installer.answers import FIELDS_BY_PATH

    def applies(path, answers, mode="install"):
        return FIELDS_BY_PATH[path].applies(answers, mode)

    existing = VALID.replace("cloud", provider="existing")
    assert not applies("cloud.shape", existing) and applies("cloud.provider", existing)
    micro = VALID.replace("cloud", shape="VM.Standard.E2.1.Micro")
    assert applies("cloud.shape", micro) and not applies("cloud.ocpus", micro)
    assert not applies("registration.tokens", VALID)
    assert applies("registration.tokens", VALID.replace("registration", policy="token", tokens=2))
    # What an install decides once is not asked again in upgrade mode.
    assert applies("cloud.shape", micro) and not applies("cloud.shape", micro, "upgrade")
    assert not applies("registration.policy", VALID, "upgrade") and applies("domain.server_name", VALID, "upgrade")


async def test_the_server_step_asks_what_the_components_declare() -> None:
    """The Database question comes from the Postgres component's declaration (label, help, choices);
    SQLite brings the component's warning to Review."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n")
        assert screen_name(app) == "ServerScreen"
        database = field(app, "database.engine")
        assert str(database.query_one(".field-label", Label).render()) == "Database"
        assert [str(b.label) for b in database.query("RadioButton")] == ["Postgres (recommended)", "SQLite: throwaway test servers only"]
        assert not field(app, "database.image").has_class("-na")
        assert "database.migrate" not in [f.path for f in app.screen.query(FormField)]  # an upgrade's question
        database.control.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert field(app, "database.image").has_class("-na")
        await pilot.press("ctrl+n")
        assert screen_name(app) == "ReviewScreen" and app.answers.database.engine == "sqlite"
        assert "SQLite is for throwaway test servers" in str(app.screen.query_one("#problems", Static).render())


async def test_review_and_done_say_oracle_stops_idle_free_instances_and_only_on_oracle(tmp_path: Path) -> None:
    from screens.done import DoneScreen
    from screens.review import ReviewScreen

    from installer.cloud.userdata import generate_host_key

    result = RunResult("install", False, [StageResult("federation.check", "Federation test", Status.DONE, 1.0)])
    own_server = VALID.replace("cloud", provider="existing").replace("ssh", host="203.0.113.7", host_key=generate_host_key().public_line)
    for answers, shown in ((VALID, True), (own_server, False)):
        app = make_app(answers)
        async with app.run_test(size=SIZE) as pilot:
            app.push_screen(ReviewScreen())
            await pilot.pause()
            review = str(app.screen.query_one("#plan", Static).render())
            app.push_screen(DoneScreen(answers, result, state_folder=tmp_path, answers_path=None, report_path=None))
            await pilot.pause()
            done = str(app.screen.query_one("#where", Static).render())
        assert "The plan: " in review  # the column is there either way
        for text in (review, done):
            assert ("Oracle stops idle Always Free instances" in text) is shown
            assert ("under 20% for 7 days" in text and "Pay As You Go" in text and "not deleted" in text) is shown


async def test_upgrade_mode_offers_no_new_key_pair(tmp_path: Path) -> None:
    """An upgrade logs in with the key that installed the server: a path with no key is a problem
    on the Keys step (Next refuses), not a promise to create one and connect with it."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    answers = (VALID.replace("cloud", provider="existing").replace("ssh", host="203.0.113.7", host_key=key,
                                                                     private_key=str(tmp_path / "gone")))
    app = make_app(answers, mode="upgrade", state_dir=tmp_path, found=NOTHING_FOUND)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "Upgrade" in [str(k.description) for k in app.screen.query("FooterKey")]  # as its button says
        assert "Start" not in [str(k.description) for k in app.screen.query("FooterKey")]
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
        assert screen_name(app) == "KeysScreen"
        assert "an upgrade logs in with the key the server already accepts" in problem_text(app, "ssh.private_key")
        assert "created" not in str(app.screen.query_one("#key-status", Static).render())
        await pilot.press("ctrl+n")
        assert screen_name(app) == "KeysScreen"
        assert "already accepts" in problem_text(app, "ssh.private_key")


async def type_slowly(pilot: Pilot, text: str, *, seconds_per_key: float = 0.04) -> None:
    """Key by key at a person's pace: each key's change is handled before the next arrives."""
    for key in text:
        await pilot.press(key)
        await pilot.pause(seconds_per_key)


async def test_a_matrix_host_filled_in_for_you_is_replaced_by_what_you_type() -> None:
    """Typing the server name fills in the Matrix host; Tab, then typing a host, must give that host
    (not "matrix.ematrix.example.orgxample.org", with the cursor left where the filling began)."""
    app = make_app(Answers())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "ctrl+n")
        assert screen_name(app) == "DomainScreen"
        await type_slowly(pilot, "example.org")
        assert field(app, "domain.matrix_host").value == "matrix.example.org"
        await pilot.press("tab")
        await pilot.pause(0.1)
        assert app.focused is field(app, "domain.matrix_host").control
        await type_slowly(pilot, "chat.example.org")
        assert field(app, "domain.matrix_host").value == "chat.example.org"
        # Typed by the person, it is theirs: leaving and coming back keeps the cursor, selects nothing.
        await pilot.press("shift+tab")
        await pilot.press("tab")
        await pilot.pause(0.1)
        await type_slowly(pilot, "x")
        assert field(app, "domain.matrix_host").value != "x"


async def test_save_answers_refuses_a_folder_in_the_dialog_itself(tmp_path: Path) -> None:
    """Not "Replace it?" then Errno 21: the dialog says it is a folder and stays open for another name."""
    folder = tmp_path / "answers"
    folder.mkdir()
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await save_through_the_dialog(pilot, folder)
        assert isinstance(app.screen, PathDialog)
        assert "is a folder: give the name of a file" in str(app.screen.query_one("#path-problem", Static).render())
        app.screen.query_one("#path", Input).value = str(folder / "mine.toml")
        await pilot.press("enter")
        await pilot.pause()
        assert screen_name(app) == "ReviewScreen" and (folder / "mine.toml").exists()


async def test_done_promises_no_sign_in_when_the_admin_was_not_made(tmp_path: Path) -> None:
    plan = Plan(("synapse.admin", "registration.policy"), fail_once=["synapse.admin"])
    app = make_app(plan=plan, dry_run=False, state_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await run_to_review(pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: screen_name(app) == "ConfirmDialog")
        await pilot.click("#yes")  # Install, for real (a synthetic plan)
        await wait_for(pilot, lambda: isinstance(app.screen, FailureDialog))
        await pilot.press("g")
        provision = app.screen
        await wait_for(pilot, lambda: provision.result is not None and not provision.query_one("#continue", Button).disabled)
        await pilot.press("enter", "enter")
        assert screen_name(app) == "DoneScreen"
        login = str(app.screen.query_one("#login", Static).render())
        assert "Not ready to sign in" in login and "\nSign in" not in login


async def test_upgrade_mode_asks_only_what_an_upgrade_uses(tmp_path: Path) -> None:
    """What an install decided once (a VM's shape, the registration policy, how the names are
    served) is not asked again: an upgrade does not redo the VM, Caddy, DNS or the accounts."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    answers = VALID.replace("cloud", provider="existing").replace("ssh", host="203.0.113.7", host_key=key)
    app = make_app(answers, mode="upgrade", state_dir=tmp_path)
    asked: set[str] = set()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        for _ in range(5):
            await pilot.pause()
            asked |= {f.path for f in app.screen.query(FormField) if not f.has_class("-na")}
            await pilot.press("ctrl+n")
        await pilot.pause()
        assert screen_name(app) == "ReviewScreen"
    for never in ("cloud.shape", "cloud.ocpus", "cloud.memory_gb", "registration.policy", "registration.admin_user",
                  "registration.tokens", "domain.delegation", "domain.serve_server_name", "domain.tls", "packages.source"):
        assert never not in asked, never
    assert {"domain.server_name", "domain.matrix_host", "ssh.host", "ssh.private_key", "upgrade.reboot"} <= asked
