"""Drive the cloud and DNS stages through the real Engine, the way a headless run does."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from installer.answers import Answers
from installer.cloud import Timing
from installer.engine import Engine, RunOptions, Session, Stage
from installer.interaction import Headless, Interaction
from installer.events import RunResult, StageFinished, StageLog, StageProgress, Status
from installer.plan import install_plan
from installer.state import RunState
from tests.oci_emulator.fixtures import EmulatorHandle

FAST = Timing(backoff_base=0.01, backoff_max=0.04, retry_base=0.01, retry_max=0.04, poll_interval=0.01, settle_interval=0.01,
              running_timeout=5.0, dns_poll_interval=0.05, dns_timeout=1.5)
CLOUD_STAGES = ("cloud.network", "cloud.ingress", "cloud.instance")
WITH_DNS = CLOUD_STAGES + ("dns.records",)
SERVER_NAME = "example.org"


def make_answers(config_path: str, key_path: Path, *, domain: dict[str, Any] | None = None, **cloud: Any) -> Answers:
    """Answers for the cloud stages: Element Web and TURN left out (their record and ports have
    their own tests: tests/integration/test_calls_oci.py)."""
    answers = Answers().replace("element", enabled=False).replace("calls", turn=False)
    answers = answers.replace("domain", server_name=SERVER_NAME, matrix_host=f"matrix.{SERVER_NAME}", **(domain or {}))
    answers = answers.replace("cloud", oci_config=config_path, oci_profile="DEFAULT", **cloud)
    return answers.replace("ssh", private_key=str(key_path))


def cloud_plan(answers: Answers, names: tuple[str, ...] = CLOUD_STAGES) -> list[Stage]:
    """installer.plan's local.ssh_key, then its cloud and DNS stages."""
    return [s for s in install_plan(answers) if s.name in ("local.ssh_key", *names)]


@dataclass
class Run:
    result: RunResult
    events: list[Any]
    state: RunState
    session: Session

    def status(self, stage: str) -> Status:
        return next(s.status for s in self.result.stages if s.name == stage)

    def finished(self, stage: str) -> StageFinished:
        return next(e for e in self.events if isinstance(e, StageFinished) and e.stage == stage)

    def logs(self, stage: str | None = None, kind: str | None = None) -> list[str]:
        return [e.line for e in self.events if isinstance(e, StageLog)
                and (stage is None or e.stage == stage) and (kind is None or e.kind == kind)]

    def progress(self, stage: str | None = None) -> list[str]:
        return [e.text for e in self.events if isinstance(e, StageProgress) and (stage is None or e.stage == stage)]

    def all_text(self) -> str:
        lines = [getattr(e, "line", None) or getattr(e, "text", None) or "" for e in self.events]
        lines += [f"{e.error} {e.hint}" for e in self.events if isinstance(e, StageFinished)]
        return "\n".join(lines)


@dataclass
class Runner:
    """Runs the plan against one state folder; each call is a new run (a rerun)."""

    state_dir: Path
    timing: Timing = FAST
    options: dict[str, Any] = field(default_factory=dict)

    async def __call__(self, answers: Answers, *, names: tuple[str, ...] = CLOUD_STAGES, dry_run: bool = False,
                       interaction: Interaction | None = None, **options: Any) -> Run:
        merged = {**self.options, **options}
        extra = {k: merged.pop(k) for k in list(merged) if k not in {f.name for f in dataclasses.fields(RunOptions)}}
        run_options = RunOptions(dry_run=dry_run, **merged)
        for key, value in extra.items():  # e.g. launch_retry_minutes, before RunOptions grows it
            setattr(run_options, key, value)
        state = RunState.load(self.state_dir, answers.domain.server_name)
        if dry_run:
            state = RunState.in_memory(state)
        events: list[Any] = []
        session = Session(answers=answers, state=state, options=run_options, listeners=[events.append],
                          interaction=interaction or Headless(), resources={Timing: self.timing})
        result = await Engine(cloud_plan(answers, names), session).run()
        return Run(result, events, state, session)


# --- fixtures for the cloud stage tests (this module is a plugin in tests/conftest.py) ---------
@pytest.fixture
def stage_runner(tmp_path: Path) -> Runner:
    """A fresh state folder; each call of the runner is one run of the stages."""
    return Runner(tmp_path / "state")


@pytest.fixture
def oci_answers(oci_emulator: EmulatorHandle, tmp_path: Path) -> Answers:
    """Answers for example.org through the emulator's OCI config, with a key pair made on first use."""
    return make_answers(oci_emulator.config_path, tmp_path / "ssh" / "id_ed25519")
