"""A headless run: load the answers, check this machine, run the plan with the plain reporter,
write the report. Imported only when the command is not starting the guided setup."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from installer.answers import Answers, AnswersError, load_answers
from installer.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, print_problems
from installer.engine import Engine, Interrupted, Session, Stage
from installer.events import RunResult
from installer.headless import HeadlessReporter
from installer.options import RunOptions
from installer.report import RunLog, write_report
from installer.state import RunState, StateError


def preflight(answers: Answers, options: RunOptions) -> tuple[list[str], list[str]]:
    """Problems found on this machine before anything runs: (errors, dry-run warnings)."""
    problems: list[str] = []
    if answers.cloud.provider == "oci" and options.mode == "install":
        from installer.cloud.config import check_oci_config

        problems += check_oci_config(answers.cloud.oci_config, answers.cloud.oci_profile)
    if options.dry_run:
        return [], [f"{p} (a real run stops here)" for p in problems]
    return problems, []


def run_plan(stages: Sequence[Stage], session: Session, reporter: HeadlessReporter) -> tuple[int, RunResult]:
    """Run stages headless; Ctrl-C stops them, keeps the state, and exits 130."""
    session.listeners.append(reporter)
    log: RunLog | None = None
    if not session.dry_run and session.state.folder is not None:
        log = RunLog(session.state.folder / "last-run.log")
        session.listeners.append(log)
    engine = Engine(stages, session)
    try:
        result = asyncio.run(engine.run())
        code = EXIT_OK if result.ok else EXIT_FAILED
    except Interrupted as stop:
        result, code = stop.result, EXIT_INTERRUPTED
    finally:
        if log:
            log.close()
    return code, result


def run_headless(args: argparse.Namespace, options: RunOptions) -> int:
    """`--answers FILE` (install or upgrade) or `--check SERVER_NAME`: the process exit status."""
    try:
        if options.mode == "check":
            answers = Answers().replace("domain", server_name=args.check, matrix_host=args.check)
        else:
            answers = load_answers(args.answers)
        errors, warnings = preflight(answers, options)
        if errors:
            raise UsageError(errors)
        state = RunState.load(options.state_dir, answers.domain.server_name) if options.mode != "check" else RunState(None)
    except UsageError as exc:
        print_problems(exc.problems, "matrix-installer: cannot start:")
        return EXIT_USAGE
    except AnswersError as exc:
        print_problems(exc.problems, f"matrix-installer: the answers file has {len(exc.problems)} problem(s); nothing was changed:")
        return EXIT_USAGE
    except StateError as exc:
        print_problems([str(exc)], "matrix-installer: cannot start:")
        return EXIT_USAGE

    from installer.plan import plan_for

    if options.dry_run:
        state = RunState.in_memory(state)
    reporter = HeadlessReporter()
    if options.dry_run:
        print("Dry run: nothing will be contacted or changed. The plan, in order:\n")
    for warning in warnings:
        print(f"warning: {warning}")
    if not options.dry_run and state.folder is not None:
        # Kept beside the state, so `--upgrade` and the guided setup's Resume find the deployment.
        from installer.answers import save_answers
        from installer.discovery import ANSWERS_FILE

        try:
            save_answers(answers, state.folder / ANSWERS_FILE)
        except OSError as exc:
            print_problems([f"{state.folder}: cannot write the run's state there ({exc.strerror}): pass --state-dir with a writable folder"],
                            "matrix-installer: cannot start:")
            return EXIT_USAGE
    session = Session(answers=answers, state=state, options=options)
    if options.dry_run:
        from installer.remote import RecordingRemote

        session.remote = RecordingRemote()
    code, result = run_plan(plan_for(options.mode, answers), session, reporter)
    reporter.summary(result)
    reporter.show_once(result)
    if options.report:
        write_report(result, options.report)
        print(f"Report: {options.report}")
    if not options.dry_run and state.folder is not None:
        print(f"State: {state.folder}")
    return code
