"""A headless run: load the answers, check this machine, run the plan with the plain reporter,
write the report. Imported only when the command is not starting the guided setup."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from installer import shown
from installer.answers import Answers, AnswersError, in_words, load_answers
from installer.cli import UsageError, print_problems
from installer.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from installer.engine import Engine, Interrupted, Session, Stage
from installer.events import RunResult
from installer.files import UnsafePathError
from installer.headless import HeadlessReporter
from installer.readiness import readiness
from installer.options import RunOptions
from installer.report import write_report
from installer.session import open_session
from installer.state import StateError


def run_plan(stages: Sequence[Stage], session: Session, reporter: HeadlessReporter) -> tuple[int, RunResult]:
    """Run stages headless; Ctrl-C stops them, keeps the state, and exits 130."""
    session.listeners.append(reporter)
    engine = Engine(stages, session)
    try:
        result = asyncio.run(engine.run())
        code = EXIT_OK if result.ok else EXIT_FAILED
    except Interrupted as stop:
        result, code = stop.result, EXIT_INTERRUPTED
    return code, result


def run_headless(args: argparse.Namespace, options: RunOptions) -> int:
    """`--answers FILE` (install or upgrade) or `--check SERVER_NAME`: the process exit status."""
    try:
        if options.mode == "check":
            answers = Answers().replace("domain", server_name=args.check, matrix_host=args.check)
        else:
            answers = load_answers(args.answers)
        errors, warnings = readiness(answers, options)
        if errors:
            raise UsageError(errors)
        session = open_session(answers, options)
    except UsageError as exc:
        print_problems(exc.problems, "matrix-installer: cannot start:")
        return EXIT_USAGE
    except AnswersError as exc:
        print_problems(exc.problems, f"matrix-installer: the answers file has {shown.plural(len(exc.problems), 'problem')}; nothing was changed:")
        return EXIT_USAGE
    except StateError as exc:
        print_problems([str(exc)], "matrix-installer: cannot start:")
        return EXIT_USAGE
    except UnsafePathError as exc:
        print_problems([str(exc)], "matrix-installer: cannot start:")
        return EXIT_USAGE
    except OSError as exc:
        where = options.state_dir or "the state folder"
        why = exc.strerror or shown.error_words(exc)
        print_problems([f"{where}: cannot write the run's state there ({why}): pass --state-dir with a writable folder"],
                       "matrix-installer: cannot start:")
        return EXIT_USAGE

    from installer.plan import plan_for

    reporter = HeadlessReporter()
    if options.dry_run:
        print("Dry run: nothing will be contacted or changed. The plan, in order:\n")
    for warning in warnings + session.deployment.warnings():
        print(f"warning: {shown.line(in_words(warning))}")
    for notice in session.state.notices:
        print(f"note: {shown.line(notice)}")
    code, result = run_plan(plan_for(options.mode, answers, session.state.facts), session, reporter)
    reporter.summary(result)
    reporter.show_once(result)
    if options.report:
        try:
            write_report(result, options.report)
            print(f"Report: {shown.line(str(options.report))}")
        except OSError as exc:  # checked before the run; something changed there since
            print(f"The report could not be written: {shown.line(str(exc))}", file=sys.stderr)
            code = code or EXIT_FAILED
    if not options.dry_run and session.state.folder is not None:
        print(f"State: {session.state.folder}")
    return code
