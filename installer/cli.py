"""The `matrix-installer` command: parse flags, load answers, run a plan headless or guided.

Bad usage exits 2 with every problem listed and no traceback, before anything is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from installer import __version__, checks
from installer.answers import Answers, AnswersError, load_answers
from installer.engine import Engine, Interrupted, RunOptions, Session, Stage
from installer.events import RunResult
from installer.headless import HeadlessReporter
from installer.report import RunLog, write_report
from installer.state import RunState, StateError, default_state_dir

GuidedFn = Callable[[Answers | None, RunOptions], int]
"""The full-screen front-end (screens.app.run_guided), handed in by the command's entry point so
that the engine's package never imports the screens."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="matrix-installer",
        description="Set up a federating Matrix homeserver (Synapse behind Caddy) on Oracle Cloud or any "
        "Ubuntu/Debian server, prove it federates, and keep it upgraded.",
        epilog="With no arguments: the guided setup, full screen. Exit status: 0 all passed, 1 a stage or "
        "check failed, 2 bad usage or invalid answers, 130 interrupted (rerun to resume).",
    )
    mode = p.add_argument_group("mode")
    mode.add_argument("--answers", metavar="FILE", type=Path, help="headless: no prompts, the same stages, plain log lines")
    mode.add_argument("--upgrade", action="store_true", help="upgrade mode (guided unless --answers)")
    mode.add_argument("--check", metavar="SERVER_NAME", help="federation test only; prints the report")
    opts = p.add_argument_group("options")
    opts.add_argument("--dry-run", action="store_true", help="show every cloud call and remote command in order; contact nothing, change nothing")
    opts.add_argument("--state-dir", metavar="DIR", type=Path, help="where run state lives (default: $XDG_STATE_HOME/matrix-installer)")
    opts.add_argument("--report", metavar="FILE", type=Path, help="write the JSON report")
    opts.add_argument("--connect-to", metavar="H1:P1:H2:P2", action="append", default=[], help="like curl: connect to H2:P2 whenever H1:P1 is wanted (repeatable)")
    opts.add_argument("--dns-server", metavar="ADDR[:PORT]", help="resolver for A/AAAA/SRV look-ups (default: the system's)")
    opts.add_argument("--ca-file", metavar="FILE", type=Path, help="extra CA bundle to trust (a lab's own CA)")
    opts.add_argument("--launch-retry-minutes", metavar="N", type=int, help='keep retrying Oracle\'s "Out of host capacity" this long (overrides the answers)')
    p.add_argument("--version", action="version", version=f"matrix-installer {__version__}")
    return p


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d+)$")


def parse_connect_to(value: str) -> tuple[str, int, str, int]:
    """H1:P1:H2:P2 (IPv6 in brackets), as curl's --connect-to."""
    m = re.fullmatch(r"(\[[^\]]+\]|[^:]+):(\d+):(\[[^\]]+\]|[^:]+):(\d+)", value)
    if not m:
        raise ValueError("must be HOST1:PORT1:HOST2:PORT2, e.g. example.org:443:127.0.0.1:8443")
    h1, p1, h2, p2 = m.group(1).strip("[]"), int(m.group(2)), m.group(3).strip("[]"), int(m.group(4))
    for host in (h1, h2):
        if problem := checks.host_or_ip(host):
            raise ValueError(f'host "{host}" {problem}')
    for port in (p1, p2):
        if problem := checks.port(port):
            raise ValueError(f"port {port} {problem}")
    return h1, p1, h2, p2


def parse_dns_server(value: str) -> tuple[str, int]:
    host, port = value, 53
    if m := _HOST_PORT.match(value):
        host, port = m.group(1).strip("[]"), int(m.group(2))
    else:
        host = value.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("must be an IP address, optionally with :PORT (e.g. 127.0.0.1:5353)") from None
    if problem := checks.port(port):
        raise ValueError(f"port {problem}")
    return host, port


def check_server_name(value: str) -> str | None:
    """A Matrix server name: a host name or IP literal, optionally with :port."""
    host = value
    if m := _HOST_PORT.match(value):
        host = m.group(1).strip("[]")
        if checks.port(int(m.group(2))):
            return "has a port outside 1-65535"
    return checks.host_or_ip(host.strip("[]"))


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """Validate every flag; all problems at once."""
    problems: list[str] = []
    if args.check and (args.answers or args.upgrade):
        problems.append("--check runs the federation test alone: use it without --answers and --upgrade")
    if args.check and (problem := check_server_name(args.check)):
        problems.append(f"--check: the server name {problem}")
    connect_to = []
    for value in args.connect_to:
        try:
            connect_to.append(parse_connect_to(value))
        except ValueError as exc:
            problems.append(f"--connect-to {value}: {exc}")
    dns_server = None
    if args.dns_server:
        try:
            dns_server = parse_dns_server(args.dns_server)
        except ValueError as exc:
            problems.append(f"--dns-server {args.dns_server}: {exc}")
    if args.ca_file and not os.access(args.ca_file, os.R_OK):
        problems.append(f"--ca-file {args.ca_file}: cannot be read: give the path of a PEM CA bundle")
    if args.launch_retry_minutes is not None and not 0 <= args.launch_retry_minutes <= 1440:
        problems.append("--launch-retry-minutes: must be from 0 to 1440")
    if args.state_dir and args.state_dir.exists() and not args.state_dir.is_dir():
        problems.append(f"--state-dir {args.state_dir}: is a file, not a folder")
    if args.report and args.report.is_dir():
        problems.append(f"--report {args.report}: is a folder; give a file name such as report.json")
    elif args.report and not os.access(args.report.parent or Path("."), os.W_OK):
        where = args.report.parent
        problems.append(f"--report {args.report}: the folder {where} " + ("cannot be written to" if where.exists() else "does not exist"))
    if problems:
        raise UsageError(problems)
    mode = "check" if args.check else "upgrade" if args.upgrade else "install"
    return RunOptions(
        mode=mode,
        dry_run=args.dry_run,
        state_dir=args.state_dir or default_state_dir(),
        report=args.report,
        connect_to=connect_to,
        dns_server=dns_server,
        ca_file=args.ca_file,
        launch_retry_minutes=args.launch_retry_minutes,
    )


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


def _print_problems(problems: list[str], heading: str) -> None:
    print(heading, file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *, guided: GuidedFn | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        options = options_from_args(args)
        if options.mode == "check":
            answers = Answers().replace("domain", server_name=args.check, matrix_host=args.check)
        elif args.answers:
            answers = load_answers(args.answers)
        else:
            return _guided(options, guided)
        errors, warnings = preflight(answers, options)
        if errors:
            raise UsageError(errors)
        state = RunState.load(options.state_dir, answers.domain.server_name) if options.mode != "check" else RunState(None)
    except UsageError as exc:
        _print_problems(exc.problems, "matrix-installer: cannot start:")
        return EXIT_USAGE
    except AnswersError as exc:
        _print_problems(exc.problems, f"matrix-installer: the answers file has {len(exc.problems)} problem(s); nothing was changed:")
        return EXIT_USAGE
    except StateError as exc:
        _print_problems([str(exc)], "matrix-installer: cannot start:")
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
            _print_problems([f"{state.folder}: cannot write the run's state there ({exc.strerror}): pass --state-dir with a writable folder"],
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


def _guided(options: RunOptions, guided: GuidedFn | None) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(["the guided setup needs a terminal; for a headless run give --answers FILE"])
    if guided is None:
        raise UsageError(["the guided setup starts with the `matrix-installer` command (or `python -m screens`)"])
    return guided(None, options)


def entry(guided: GuidedFn | None = None) -> None:
    try:
        sys.exit(main(guided=guided))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    entry()
