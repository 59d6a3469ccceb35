"""The engine: dependency order, real concurrency, failure handling, resume, retry, masking."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from installer.answers import Answers
from installer.engine import ConnectionLost, Engine, PlanError, RunOptions, Session, Stage, StageError, check_plan
from installer.events import StageFinished, StageLog, StageStarted, Status
from installer.interaction import Headless
from installer.report import build_report
from installer.state import RunState


def session(tmp_path: Path | None = None, *, dry_run: bool = False) -> tuple[Session, list]:
    events: list = []
    state = RunState.load(tmp_path, "example.org") if tmp_path else RunState.in_memory()
    s = Session(Answers(), state, RunOptions(dry_run=dry_run))
    s.listeners.append(events.append)
    return s, events


def sleeper(name: str, seconds: float = 0.05, status: Status = Status.DONE):
    async def run(ctx):
        ctx.log(f"{name} working")
        await asyncio.sleep(seconds)
        return status

    return run


def order_of(events: list, kind: type) -> list[str]:
    return [e.stage for e in events if isinstance(e, kind)]


async def test_dependencies_run_first_and_independent_stages_overlap() -> None:
    s, events = session()
    stages = [
        Stage("a.first", "first", sleeper("a")),
        Stage("b.left", "left", sleeper("b", 0.2), needs=("a.first",)),
        Stage("c.right", "right", sleeper("c", 0.2), needs=("a.first",)),
        Stage("d.last", "last", sleeper("d"), needs=("b.left", "c.right")),
    ]
    result = await Engine(stages, s).run()
    assert result.ok
    starts, ends = order_of(events, StageStarted), order_of(events, StageFinished)
    assert starts[0] == "a.first" and ends[0] == "a.first"
    # b and c both start before either finishes: they ran at the same time.
    assert set(starts[1:3]) == {"b.left", "c.right"}
    assert starts.index("d.last") > ends.index("b.left") and starts.index("d.last") > ends.index("c.right")
    # Side by side, not one after the other: both had started before the first of them finished.
    both = [(type(e), e.stage) for e in events if isinstance(e, (StageStarted, StageFinished)) and e.stage in ("b.left", "c.right")]
    assert [kind for kind, _ in both[:2]] == [StageStarted, StageStarted], both


async def test_max_parallel_is_respected() -> None:
    s, events = session()
    stages = [Stage(f"s.{i}", str(i), sleeper(str(i), 0.02)) for i in range(5)]
    await Engine(stages, s, max_parallel=2).run()
    running = peak = 0
    for e in events:
        if isinstance(e, StageStarted):
            running += 1
            peak = max(peak, running)
        elif isinstance(e, StageFinished):
            running -= 1
    assert peak == 2


async def test_a_failure_skips_its_dependents_but_not_independent_stages() -> None:
    s, events = session()

    async def broken(ctx):
        raise StageError("port 22 is closed", "open it in the security list")

    stages = [
        Stage("a.broken", "broken", broken),
        Stage("b.after", "after", sleeper("b"), needs=("a.broken",)),
        Stage("c.later", "later", sleeper("c"), needs=("b.after",)),
        Stage("d.other", "other", sleeper("d")),
    ]
    result = await Engine(stages, s).run()
    by_name = {r.name: r for r in result.stages}
    assert not result.ok
    assert by_name["a.broken"].status is Status.FAILED
    assert by_name["a.broken"].error == "port 22 is closed"
    assert by_name["a.broken"].hint == "open it in the security list"
    assert by_name["b.after"].status is Status.SKIPPED and "a.broken did not finish" in by_name["b.after"].error
    assert by_name["c.later"].status is Status.SKIPPED
    assert by_name["d.other"].status is Status.DONE


async def test_unexpected_exceptions_become_a_failed_stage_not_a_crash() -> None:
    s, events = session()

    async def buggy(ctx):
        return {}["missing"]

    result = await Engine([Stage("a.buggy", "buggy", buggy)], s).run()
    assert result.stages[0].status is Status.FAILED
    assert result.stages[0].error == "unexpected error: KeyError: 'missing'"


async def test_rerun_after_failure_resumes_and_after_success_changes_nothing(tmp_path: Path) -> None:
    """Stages check before they change: a rerun redoes nothing already in place."""
    marker = tmp_path / "made-by-a"
    attempts = {"b": 0}

    async def make_file(ctx):
        if marker.exists():
            return Status.UNCHANGED
        marker.write_text("x")
        return Status.DONE

    async def flaky(ctx):
        attempts["b"] += 1
        if attempts["b"] == 1:
            raise StageError("not yet")
        return Status.UNCHANGED if attempts["b"] > 2 else Status.DONE

    stages = [Stage("a.make", "make", make_file), Stage("b.flaky", "flaky", flaky, needs=("a.make",))]
    first = await Engine(stages, session(tmp_path)[0]).run()
    assert [r.status for r in first.stages] == [Status.DONE, Status.FAILED]
    saved = json.loads((tmp_path / "example.org" / "state.json").read_text())
    assert saved["stages"]["a.make"]["status"] == "done"
    assert saved["stages"]["b.flaky"]["status"] == "failed"

    second = await Engine(stages, session(tmp_path)[0]).run()
    assert [r.status for r in second.stages] == [Status.UNCHANGED, Status.DONE]
    third = await Engine(stages, session(tmp_path)[0]).run()
    assert [r.status for r in third.stages] == [Status.UNCHANGED, Status.UNCHANGED]
    assert (tmp_path / "example.org" / "state.json").stat().st_mode & 0o777 == 0o600


async def test_facts_are_saved_the_moment_they_are_remembered(tmp_path: Path) -> None:
    async def launch(ctx):
        ctx.remember("cloud.instance_id", "ocid1.instance.oc1..abc")
        raise StageError("waiting for RUNNING failed")

    await Engine([Stage("cloud.instance", "vm", launch)], session(tmp_path)[0]).run()
    state = RunState.load(tmp_path, "example.org")
    assert state.facts["cloud.instance_id"] == "ocid1.instance.oc1..abc"


async def test_decide_hook_can_retry_or_skip() -> None:
    s, events = session()
    calls = {"n": 0}

    async def once_broken(ctx):
        calls["n"] += 1
        if calls["n"] == 1:
            raise StageError("flaky")
        return Status.DONE

    async def always_broken(ctx):
        raise StageError("still broken")

    decisions = []

    class Person(Headless):
        async def decide(self, stage, error, hint):
            decisions.append((stage.name, error))
            return "retry" if stage.name == "a.flaky" else "skip"

    stages = [
        Stage("a.flaky", "flaky", once_broken),
        Stage("b.optional", "optional", always_broken, skippable=True),
        Stage("c.after", "after", sleeper("c"), needs=("b.optional",)),
    ]
    s.interaction = Person()
    result = await Engine(stages, s).run()
    assert decisions == [("a.flaky", "flaky"), ("b.optional", "still broken")]
    assert [r.status for r in result.stages] == [Status.DONE, Status.SKIPPED, Status.DONE]
    assert result.ok


async def test_a_dropped_connection_retries_the_stage_once() -> None:
    s, events = session()
    calls = {"n": 0}

    async def drops_once(ctx):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionLost("connection reset")
        return Status.DONE

    async def drops_always(ctx):
        raise ConnectionLost("connection reset")

    result = await Engine([Stage("a.once", "once", drops_once), Stage("b.always", "always", drops_always)], s).run()
    assert [r.status for r in result.stages] == [Status.DONE, Status.FAILED]
    assert "connection lost again" in result.stages[1].error


async def test_secrets_are_masked_in_logs_errors_and_report() -> None:
    s, events = session()
    password = "hunter2-correct-horse"

    async def leaky(ctx):
        ctx.reveal("Admin password", password)
        ctx.log(f"created admin with password {password}")
        raise StageError(f"login failed for {password}")

    result = await Engine([Stage("a.leaky", "leaky", leaky)], s).run()
    logs = [e.line for e in events if isinstance(e, StageLog)]
    assert logs == ["created admin with password ********"]
    assert password not in json.dumps(build_report(result))
    assert result.shown_once == [("Admin password", password)]


async def test_dry_run_runs_one_stage_at_a_time_in_listed_order_and_marks_them_planned() -> None:
    s, events = session(dry_run=True)
    stages = [Stage(f"s.{i}", str(i), sleeper(str(i), 0.01)) for i in range(4)]
    result = await Engine(stages, s).run()
    assert order_of(events, StageStarted) == ["s.0", "s.1", "s.2", "s.3"]
    assert order_of(events, StageFinished) == ["s.0", "s.1", "s.2", "s.3"]
    assert {r.status for r in result.stages} == {Status.PLANNED}


def test_plan_errors_are_caught() -> None:
    noop = sleeper("x")
    with pytest.raises(PlanError, match="needs b.later, which is not listed before it"):
        check_plan([Stage("a.first", "a", noop, needs=("b.later",)), Stage("b.later", "b", noop)])
    with pytest.raises(PlanError, match="listed twice"):
        check_plan([Stage("a.first", "a", noop), Stage("a.first", "a", noop)])


INTERRUPTIBLE = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from installer.answers import Answers
    from installer.run import run_plan
    from installer.engine import RunOptions, Session, Stage
    from installer.headless import HeadlessReporter
    from installer.report import write_report
    from installer.state import RunState

    async def quick(ctx):
        ctx.log("quick finished")

    async def slow(ctx):
        ctx.log("slow started")
        await asyncio.sleep(60)

    state_dir = Path(sys.argv[1])
    session = Session(Answers(), RunState.load(state_dir, "example.org"), RunOptions(state_dir=state_dir))
    stages = [Stage("a.quick", "quick", quick), Stage("b.slow", "slow", slow, needs=("a.quick",))]
    code, result = run_plan(stages, session, HeadlessReporter())
    write_report(result, state_dir / "report.json")
    sys.exit(code)
    """
)


def test_ctrl_c_saves_state_writes_the_report_and_exits_130(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "slow started" in line:
            break
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    state = json.loads((tmp_path / "example.org" / "state.json").read_text())
    assert state["stages"]["a.quick"]["status"] == "done"
    assert state["stages"]["b.slow"] == {**state["stages"]["b.slow"], "status": "failed", "error": "interrupted"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is False and report["interrupted"] is True
    assert [s["status"] for s in report["stages"]] == ["done", "failed"]


# --- typed outputs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Address:
    value: str


def test_a_stage_taking_what_no_stage_it_needs_gives_is_a_plan_error() -> None:
    giver = Stage("a.give", "give", sleeper("a"), gives=(Address,))
    with pytest.raises(PlanError, match="b.take takes a Address, which no stage it needs gives"):
        check_plan([giver, Stage("b.take", "take", sleeper("b"), takes=(Address,))])
    check_plan([giver, Stage("b.take", "take", sleeper("b"), needs=("a.give",), takes=(Address,))])
    # Given further up the chain counts too.
    check_plan([giver, Stage("b.mid", "mid", sleeper("b"), needs=("a.give",)),
                Stage("c.take", "take", sleeper("c"), needs=("b.mid",), takes=(Address,))])


async def test_outputs_travel_by_type_and_a_missing_one_fails_its_stage() -> None:
    s, _ = session()
    seen = []

    async def give(ctx):
        ctx.give(Address("203.0.113.7"))

    async def take(ctx):
        seen.append(ctx.take(Address).value)

    async def forgets(ctx):
        return Status.DONE

    result = await Engine([Stage("a.give", "give", give, gives=(Address,)),
                           Stage("b.take", "take", take, needs=("a.give",), takes=(Address,))], s).run()
    assert result.ok and seen == ["203.0.113.7"]
    s, _ = session()
    result = await Engine([Stage("a.forgets", "forgets", forgets, gives=(Address,)),
                           Stage("b.take", "take", take, needs=("a.forgets",), takes=(Address,))], s).run()
    first, second = result.stages
    assert first.status is Status.FAILED and "finished without giving Address" in first.error
    assert second.status is Status.SKIPPED and second.error == "not run: a.forgets did not finish"


async def test_a_stage_cannot_take_or_give_what_it_does_not_declare() -> None:
    s, _ = session()

    async def sneaky(ctx):
        ctx.take(Address)

    result = await Engine([Stage("a.sneaky", "sneaky", sneaky)], s).run()
    assert result.stages[0].status is Status.FAILED and "takes a Address it does not declare" in result.stages[0].error


def test_the_plan_orders_stages_from_needs_before_and_what_they_take() -> None:
    from installer.deployment import EVERY_OTHER, DeploymentError, order_stages

    stages = order_stages([
        Stage("z.proof", "proof", sleeper("z"), needs=(EVERY_OTHER,)),
        Stage("b.take", "take", sleeper("b"), takes=(Address,)),
        Stage("c.config", "config", sleeper("c"), before=("d.start",)),
        Stage("d.start", "start", sleeper("d")),
        Stage("a.give", "give", sleeper("a"), gives=(Address,)),
    ])
    names = [s.name for s in stages]
    assert names == ["c.config", "d.start", "a.give", "b.take", "z.proof"]
    needs = {s.name: s.needs for s in stages}
    assert needs["b.take"] == ("a.give",) and needs["d.start"] == ("c.config",)
    assert set(needs["z.proof"]) == {"a.give", "b.take", "c.config", "d.start"}
    check_plan(stages)
    with pytest.raises(DeploymentError, match="need each other in a circle"):
        order_stages([Stage("a", "a", sleeper("a"), needs=("b",)), Stage("b", "b", sleeper("b"), needs=("a",))])
