"""`matrix-installer --check SERVER_NAME`: the federation test alone, printed, exit status 0 or 1."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from installer.engine import RunOptions


async def check_command(server_name: str, options: RunOptions, *, out: TextIO | None = None) -> int:
    """Run the check with the command line's --connect-to/--dns-server/--ca-file, print one line
    per check (and the fixes), write --report if asked. Returns the exit status: 0 ok, 1 failed."""
    from installer.events import RunResult, StageResult, Status
    from installer.federation import describe_requests, run_check

    out = out or sys.stdout
    if options.dry_run:
        for line in describe_requests(server_name, connect_to=options.connect_to, dns_server=options.dns_server):
            print(f"would: {line}", file=out)
        return 0
    report = await run_check(server_name, connect_to=options.connect_to, dns_server=options.dns_server,
                             ca_file=options.ca_file)
    print(f"Federation test for {server_name}", file=out)
    for line in report.summary_lines():
        print(f"  {line}", file=out)
    if report.ok:
        print(f"federation OK ({report.seconds:.2f} s)", file=out)
    else:
        names = ", ".join(c.name for c in report.failed)
        print(f"federation FAILED: {names} ({report.seconds:.2f} s)", file=out)
    if options.report is not None:
        from installer.report import write_report

        failed = report.failed
        stage = StageResult("federation.check", "Federation test", Status.DONE if report.ok else Status.FAILED,
                            report.seconds, None if report.ok else f"failed checks: {', '.join(c.name for c in failed)}",
                            failed[0].fix if failed else None)
        write_report(RunResult(mode="check", dry_run=False, stages=[stage], federation=report.to_json()), options.report)
    return 0 if report.ok else 1
