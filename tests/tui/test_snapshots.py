"""One snapshot per screen at 80x24 and 120x40. Inputs are fixed (found keys, paths, a clock that
never moves), so a snapshot changes only when the screen does: update with --snapshot-update
after looking at the report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from installer.events import RunResult, StageResult, Status
from screens.dialogs import FailureDialog
from screens.provision import ProvisionScreen
from tests.tui.helpers import FEDERATION, Plan, make_app

SIZES = [(80, 24), (120, 40)]
SHOWN_ONCE = [("Admin password for @admin:example.org", "correct-horse-battery-staple")]


async def _until(pilot: Pilot, condition: Callable[[], bool]) -> None:
    for _ in range(400):
        if condition():
            await pilot.pause()
            return
        await pilot.pause(0.05)
    raise AssertionError("the screen never got there")


async def _steady(pilot: Pilot) -> None:
    """No blinking cursor and no fade under way: a picture taken a moment later would differ."""
    from textual.widgets import Input

    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def _steps(keys: list[str]) -> Callable[[Pilot], Awaitable[None]]:
    async def run(pilot: Pilot) -> None:
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        await _steady(pilot)

    return run


async def _to_failure(pilot: Pilot) -> None:
    await _steps(["enter", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n"])(pilot)
    await _until(pilot, lambda: isinstance(pilot.app.screen, FailureDialog))


async def _to_finished_run(pilot: Pilot) -> None:
    await _to_failure(pilot)
    await pilot.press("r")
    await _until(pilot, lambda: isinstance(pilot.app.screen, ProvisionScreen) and pilot.app.screen.result is not None)


async def _to_federation(pilot: Pilot) -> None:
    await _to_finished_run(pilot)
    await pilot.press("enter")
    await pilot.pause()


async def _to_done(pilot: Pilot) -> None:
    await _to_federation(pilot)
    await pilot.press("enter")
    await pilot.pause()


async def _domain_with_a_problem(pilot: Pilot) -> None:
    await _steps(["enter", "ctrl+n"])(pilot)
    screen = pilot.app.screen
    control = screen.query_one("#field-domain-server_name").control  # type: ignore[attr-defined]
    control.value = ""
    control.insert_text_at_cursor("Example.org")
    # The typed name's problem, the suggested host and the preview follow in a chain of messages:
    # a loaded machine takes more than one pause to deliver them all.
    await _until(pilot, lambda: screen.query_one("#field-domain-server_name").has_class("-invalid")
                 and screen.query_one("#field-domain-matrix_host").value == "matrix.example.org")  # type: ignore[attr-defined]
    await _steady(pilot)


async def _done_after_a_real_run(pilot: Pilot) -> None:
    """The Done screen of a real (not dry) run that finished, with its paths fixed."""
    from screens.done import DoneScreen

    state = Path("/home/ada/.local/state/matrix-installer/example.org")
    result = RunResult("install", False, [StageResult(n, n, Status.DONE, 1.0) for n in Plan().names],
                       federation={**FEDERATION, "ok": True}, shown_once=SHOWN_ONCE,
                       links=[("Element Web", "https://element.example.org")])
    app = pilot.app
    await pilot.pause()
    await app.push_screen(DoneScreen(app.answers, result, state_folder=state,  # type: ignore[attr-defined]
                                     answers_path=Path("/home/ada/matrix-answers.toml"), report_path=state / "report.json"))
    await pilot.pause()


async def _review_save_dialog(pilot: Pilot) -> None:
    await _steps(["enter", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+s"])(pilot)


SCREENS: dict[str, Callable[[Pilot], Awaitable[None]]] = {
    "welcome": _steps([]),
    "welcome_upgrade": _steps([]),
    "cloud": _steps(["enter"]),
    "domain": _steps(["enter", "ctrl+n"]),
    "domain_invalid": _domain_with_a_problem,
    "keys": _steps(["enter", "ctrl+n", "ctrl+n"]),
    "accounts": _steps(["enter", "ctrl+n", "ctrl+n", "ctrl+n"]),
    "server": _steps(["enter", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n"]),
    "review": _steps(["enter", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n"]),
    "review_save": _review_save_dialog,
    "failure": _to_failure,
    "provision": _to_finished_run,
    "federation": _to_federation,
    "done": _to_done,
    "done_installed": _done_after_a_real_run,
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(SCREENS))
def test_screen(snap_compare, name: str, size: tuple[int, int]) -> None:
    plan = Plan(fail_once=["host.caddy"], federation=FEDERATION, shown_once=SHOWN_ONCE)
    app = make_app(plan=plan, mode="upgrade" if name.endswith("upgrade") else "install")
    assert snap_compare(app, terminal_size=size, run_before=SCREENS[name])
