"""The `matrix-installer` command: parse flags, load answers, run a plan headless or guided.

Bad usage exits 2 with every problem listed and no traceback, before anything is touched.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from installer import __version__, checks, files, shown
from installer.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from installer.options import RunOptions
from installer.state import default_state_dir

if TYPE_CHECKING:
    from installer.answers import Answers

# The headless path (installer.run: answers, engine, reporter) is imported only when it runs, so
# the guided setup's first frame does not wait for it.
GuidedFn = Callable[["Answers | None", RunOptions], int]
"""The full-screen front-end (screens.app.run_guided), handed in by the command's entry point so
that the engine's package never imports the screens."""


_T = TypeVar("_T")


class UsageError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """argparse's own complaints echo what was typed: escaped and shortened like ours."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {shown.line(message)}\n")


def _parser() -> argparse.ArgumentParser:
    # Paths are taken as text: Path("") would silently be the current folder.
    p = _Parser(
        prog="matrix-installer",
        description="Set up a federating Matrix homeserver (Synapse behind Caddy) on Oracle Cloud or any "
        "Ubuntu/Debian server, prove it federates, and keep it upgraded.",
        epilog="With no arguments: the guided setup, full screen. Exit status: 0 all passed, 1 a stage or "
        "check failed, 2 bad usage or invalid answers, 130 interrupted (rerun to resume).",
        add_help=False,  # -h is listed with the other options, under one "options:" heading
    )
    mode = p.add_argument_group("mode")
    mode.add_argument("--answers", metavar="FILE", help="headless: no prompts, the same stages, plain log lines")
    mode.add_argument("--upgrade", action="store_true", help="upgrade mode (guided unless --answers)")
    mode.add_argument("--check", metavar="SERVER_NAME", help="federation test only; prints the report")
    mode.add_argument("--backup", action="store_true", help="back the server up now, off the box (with --answers); "
                      "shows files and bytes as they go")
    mode.add_argument("--restore", action="store_true", help="rebuild the server from a backup onto the host the "
                      "answers name (with --answers): every component installed, the data put back, the federation test")
    opts = p.add_argument_group("options")
    opts.add_argument("--dry-run", action="store_true", help="show every cloud call and remote command in order; contact nothing, change nothing")
    opts.add_argument("--state-dir", metavar="DIR", help="where run state lives (default: $XDG_STATE_HOME/matrix-installer)")
    opts.add_argument("--report", metavar="FILE", help="write the JSON report")
    opts.add_argument("--connect-to", metavar="H1:P1:H2:P2", action="append", default=[], help="like curl: connect to H2:P2 whenever H1:P1 is wanted (repeatable)")
    opts.add_argument("--dns-server", metavar="ADDR[:PORT]", help="resolver for A/AAAA/SRV look-ups (default: the system's)")
    opts.add_argument("--ca-file", metavar="FILE", help="extra CA bundle to trust (a lab's own CA)")
    opts.add_argument("--snapshot", metavar="ID", help="with --restore: the snapshot to restore (default: the latest)")
    opts.add_argument("--replace", action="store_true", help="with --restore: replace a deployment already on the "
                      "host (it is moved aside, not deleted)")
    opts.add_argument("--launch-retry-minutes", metavar="N", help='keep retrying Oracle\'s "Out of host capacity" this long (overrides the answers)')
    opts.add_argument("--version", action="version", version=f"matrix-installer {__version__}")
    opts.add_argument("-h", "--help", action="help", help="show this help and exit")
    return p


_HOST_PORT = re.compile(r"^(\[[0-9A-Za-z:.%_-]+\]|[^:\[\]]+):(\d+)$")


def _port(text: str, *, empty_ok: bool = False) -> int:
    """A port as typed (0 for an empty one where curl allows it); ValueError in words otherwise."""
    if empty_ok and not text:
        return 0
    number = checks.port_text(text)
    if number is None:
        raise ValueError(f"port {shown.value(text, 20)} must be a port number from 1 to 65535")
    return number


def parse_connect_to(value: str) -> tuple[str, int, str, int]:
    """H1:P1:H2:P2 (IPv6 in brackets), as curl's --connect-to: an empty H1 or P1 matches any host
    or port, an empty H2 or P2 keeps the one asked for (0 stands for an empty port)."""
    m = re.fullmatch(r"(\[[^\]]+\]|[^:]*):(\d*):(\[[^\]]+\]|[^:]*):(\d*)", value)
    if not m:
        raise ValueError("must be HOST1:PORT1:HOST2:PORT2, e.g. example.org:443:127.0.0.1:8443")
    h1, h2 = m.group(1).strip("[]"), m.group(3).strip("[]")
    p1, p2 = _port(m.group(2), empty_ok=True), _port(m.group(4), empty_ok=True)
    if not (h2 or p2):
        raise ValueError("says nowhere to connect to: give HOST2, PORT2 or both")
    for host in filter(None, (h1, h2)):
        if problem := checks.host_or_ip(host):
            raise ValueError(f"host {shown.quoted(host)} {problem}")
    return h1, p1, h2, p2


def parse_dns_server(value: str) -> tuple[str, int]:
    host, port = value, 53
    if m := _HOST_PORT.match(value):
        host, port = m.group(1).strip("[]"), _port(m.group(2))
    else:
        host = value.strip("[]")
    if not checks.is_ip_address(host):
        raise ValueError("must be an IP address, optionally with :PORT (e.g. 127.0.0.1:5353)")
    if problem := checks.ip_address(host):
        raise ValueError(problem)
    return host, port


def check_server_name(value: str) -> str | None:
    """A Matrix server name: a host name or IP literal, optionally with :port."""
    host = value
    if m := _HOST_PORT.match(value):
        host = m.group(1).strip("[]")
        if checks.port_text(m.group(2)) is None:
            return "has a port outside 1-65535"
    return checks.host_or_ip(host.strip("[]"))


def _path(flag: str, text: str | None, what: str) -> tuple[Path | None, str | None]:
    """A path flag's value, or the problem with it: an empty one is said, never taken as "."."""
    if text is None:
        return None, None
    if not text.strip():
        return None, f"{flag}: is empty: give {what}"
    return Path(text), None


def _state_dir_problem(root: Path) -> str | None:
    """What stops a run keeping its state under `root` (checked before anything runs)."""
    if folder := files.in_system_folder(root):
        return f"cannot write the run's state there: it is under {folder}, a kernel folder; give a folder of your own"
    if root.exists() and not root.is_dir():
        return "is a file, not a folder"
    for above in root.parents:
        if above.exists():
            if not above.is_dir():
                return f"cannot be made: {above} is a file, not a folder"
            break
    return files.loose_folder_problem(root)


def _minutes(text: str | None) -> tuple[int | None, str | None]:
    if text is None:
        return None, None
    if not (text.isascii() and text.isdigit() and len(text) <= 4) or int(text) > 1440:
        return None, "--launch-retry-minutes: must be a whole number from 0 to 1440"
    return int(text), None


_SNAPSHOT = re.compile(r"[0-9a-f]{8,64}")


def _mode_problems(args: argparse.Namespace) -> list[str]:
    """One mode at a time; --backup and --restore work on the server an answers file names; the
    flags that only --restore takes, only with it."""
    problems = []
    modes = [flag for flag, on in (("--upgrade", args.upgrade), ("--backup", args.backup),
                                   ("--restore", args.restore), ("--check", bool(args.check))) if on]
    if len(modes) > 1:
        problems.append(f"{' and '.join(modes)}: choose one mode")
    for flag, on in (("--backup", args.backup), ("--restore", args.restore)):
        if on and args.answers is None:
            problems.append(f"{flag} needs --answers FILE: the answers of the server (a previous run keeps them in "
                            "its state folder, as answers.toml)")
    if args.snapshot is not None:
        if not args.restore:
            problems.append("--snapshot: only with --restore")
        elif args.snapshot != "latest" and not _SNAPSHOT.fullmatch(args.snapshot):
            problems.append(f"--snapshot {shown.value(args.snapshot, 80)}: must be a snapshot ID (8 to 64 hex digits, "
                            'as `restic snapshots` shows them) or "latest"')
    if args.replace and not args.restore:
        problems.append("--replace: only with --restore")
    return problems


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """Validate every flag; all problems at once."""
    problems: list[str] = []

    def noted(value_and_problem: tuple[_T, str | None]) -> _T:
        value, problem = value_and_problem
        if problem:
            problems.append(problem)
        return value

    args.answers = noted(_path("--answers", args.answers, "the path of an answers file, e.g. --answers my.toml"))
    state_dir = noted(_path("--state-dir", args.state_dir, "a folder, or leave the flag out for the default "
                            "($XDG_STATE_HOME/matrix-installer)"))
    report = noted(_path("--report", args.report, "a file name such as report.json"))
    ca_file = noted(_path("--ca-file", args.ca_file, "the path of a PEM CA bundle"))
    launch_retry_minutes = noted(_minutes(args.launch_retry_minutes))
    if args.check and (args.answers or args.upgrade):
        problems.append("--check runs the federation test alone: use it without --answers and --upgrade")
    problems += _mode_problems(args)
    if args.check and (problem := check_server_name(args.check)):
        problems.append(f"--check: the server name {problem}")
    connect_to = []
    for value in args.connect_to:
        try:
            connect_to.append(parse_connect_to(value))
        except ValueError as exc:
            problems.append(f"--connect-to {shown.value(value)}: {exc}")
    dns_server = None
    if args.dns_server:
        try:
            dns_server = parse_dns_server(args.dns_server)
        except ValueError as exc:
            problems.append(f"--dns-server {shown.value(args.dns_server)}: {exc}")
    if ca_file and (problem := checks.ca_bundle(ca_file)):
        problems.append(f"--ca-file {shown.value(str(ca_file), 200)}: {problem}")
    state_root = state_dir or default_state_dir()
    if not args.check and (problem := _state_dir_problem(state_root)):
        problems.append(f"--state-dir {shown.value(str(state_root), 200)}: {problem}")
    if report and (problem := files.output_problem(report)):
        problems.append(f"--report {shown.value(str(report), 200)}: {problem}")
    if problems:
        raise UsageError(problems)
    mode = ("check" if args.check else "upgrade" if args.upgrade else "backup" if args.backup
            else "restore" if args.restore else "install")
    return RunOptions(
        mode=mode,
        dry_run=args.dry_run,
        state_dir=state_root,
        report=report,
        connect_to=connect_to,
        dns_server=dns_server,
        ca_file=ca_file,
        launch_retry_minutes=launch_retry_minutes,
        snapshot=args.snapshot if args.snapshot and args.snapshot != "latest" else None,
        replace=args.replace,
    )


def print_problems(problems: list[str], heading: str) -> None:
    """Every problem, each on one line: escaped (no value can forge a line) and shortened."""
    from installer.answers import in_words

    print(heading, file=sys.stderr)
    for problem in shown.problem_lines([in_words(p) for p in problems]):
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
    except BrokenPipeError:
        # Whoever read the output went away (`| head`): stop quietly, as a shell tool does, and
        # keep Python from printing a traceback while it flushes stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    entry()
