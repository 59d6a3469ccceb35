"""The `matrix-installer` command: parse flags, load answers, run a plan headless or guided.

Bad usage exits 2 with every problem listed and no traceback, before anything is touched.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from installer import __version__, checks
from installer.exit_codes import EXIT_INTERRUPTED, EXIT_USAGE
from installer.options import RunOptions
from installer.state import default_state_dir

if TYPE_CHECKING:
    from installer.answers import Answers

# The headless path (installer.run: answers, engine, reporter) is imported only when it runs, so
# the guided setup's first frame does not wait for it.
GuidedFn = Callable[["Answers | None", RunOptions], int]
"""The full-screen front-end (screens.app.run_guided), handed in by the command's entry point so
that the engine's package never imports the screens."""


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
    """H1:P1:H2:P2 (IPv6 in brackets), as curl's --connect-to: an empty H1 or P1 matches any host
    or port, an empty H2 or P2 keeps the one asked for (0 stands for an empty port)."""
    m = re.fullmatch(r"(\[[^\]]+\]|[^:]*):(\d*):(\[[^\]]+\]|[^:]*):(\d*)", value)
    if not m:
        raise ValueError("must be HOST1:PORT1:HOST2:PORT2, e.g. example.org:443:127.0.0.1:8443")
    h1, h2 = m.group(1).strip("[]"), m.group(3).strip("[]")
    p1, p2 = int(m.group(2) or 0), int(m.group(4) or 0)
    if not (h2 or p2):
        raise ValueError("says nowhere to connect to: give HOST2, PORT2 or both")
    for host in filter(None, (h1, h2)):
        if problem := checks.host_or_ip(host):
            raise ValueError(f'host "{host}" {problem}')
    for port in filter(None, (p1, p2)):
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


def print_problems(problems: list[str], heading: str) -> None:
    print(heading, file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *, guided: GuidedFn | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        options = options_from_args(args)
        if options.mode != "check" and not args.answers:
            return _guided(options, guided)
    except UsageError as exc:
        print_problems(exc.problems, "matrix-installer: cannot start:")
        return EXIT_USAGE
    from installer.run import run_headless

    return run_headless(args, options)


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
