"""Stage federation.check: the installer's own federation test, the last stage of every run."""

from __future__ import annotations

import time

from installer.components.federation.host_side import net_options, outbound, server_health
from installer.components.homeserver import AdminCredentials
from installer.engine import StageContext, StageError
from installer.events import Status


def failed_names(report) -> list[str]:
    """The failed checks' names, a per-address one (`tls@ADDR`) left out when its summary (`tls`)
    failed too: the summary names the first address, the report has them all."""
    failed = {c.name for c in report.failed}
    return [c.name for c in report.failed if not ("@" in c.name and c.name.split("@")[0] in failed)]


async def check(ctx: StageContext) -> Status:
    """Check the server as the world sees it; fail with the failing checks named and the first fix."""
    from installer.federation import AdminLogin, describe_requests, run_check
    from installer.shown import escape

    started = time.monotonic()
    server_name = ctx.answers.domain.server_name
    options = ctx.options
    # --check alone tests any server: its registration policy is not ours to know.
    expect_policy = None if options.mode == "check" else ctx.answers.registration.policy
    admin = None
    if AdminCredentials in ctx.stage.takes:
        credentials = ctx.take(AdminCredentials)
        if credentials.password:
            # The password goes only to the Matrix host of the answers, never where .well-known points.
            admin = AdminLogin(credentials.user_id, ctx.secret(credentials.password), ctx.answers.domain.matrix_host)
    if options.mode == "check":  # the deployment's own view first (a stopped VM explains a failing test)
        from installer.providers import registered

        for provider in registered():
            for kind, line in await provider.check_notes(server_name, options):
                ctx.log(line, kind)
    if ctx.dry_run:
        for line in describe_requests(server_name, connect_to=options.connect_to, dns_server=options.dns_server,
                                      expect_policy=expect_policy, admin=admin is not None,
                                      matrix_host=ctx.answers.domain.matrix_host, peer=options.peer,
                                      on_host=options.mode != "check"):
            ctx.log(line, "command")
        return Status.PLANNED
    facts: dict = ctx.facts
    saved = None
    if options.mode == "check":  # a deployment this machine installed: its host is asked too
        from installer.host.saved import open_saved_host

        saved = await open_saved_host(ctx)
        facts = saved.facts if saved else {}
    ctx.progress(f"testing {server_name} as other servers and new users see it")
    report = await run_check(server_name, connect_to=options.connect_to, dns_server=options.dns_server,
                             ca_file=options.ca_file, expect_policy=expect_policy, admin=admin)
    ctx.progress(f"testing that {server_name} reaches {options.peer or 'other servers'} over federation")
    report.add(await outbound(ctx, base_url=report.base_url, net_options=net_options(ctx)))
    report.seconds = time.monotonic() - started
    for line in report.summary_lines():
        ctx.log(line)
    ctx.log(f"federation test took {report.seconds:.2f} s")
    ctx.session.federation = report.to_json()
    # The host's own view, beside the test (the report's "checks"): the self-test's last result.
    health = None
    if saved is not None and saved.problem:
        from installer.components.selftest import DEPLOYED
        from installer.federation.report import Check

        health = Check("server-health", False, saved.problem, saved.hint) if facts.get(DEPLOYED) else None
    elif ctx.session.remote is not None:
        health = await server_health(ctx, facts)
    if health is not None:
        ctx.log(health.summary_line())
        ctx.report_check(health.name, health.ok, health.detail, health.fix, warning=health.warning)
    if not report.ok:
        failed = report.failed
        fix = next((c.fix for c in failed if c.fix), None)  # details come from the network: escaped
        raise StageError(f"federation test failed: {', '.join(failed_names(report))} ({escape(failed[0].detail)})",
                         escape(fix) if fix else None)
    # What was checked of the deployment without failing the run there (backup-age, read before the
    # test so that a --check still tests federation; server-health): a failed one fails the check now.
    if failed_before := [c for c in ctx.session.checks if not c["ok"]]:
        first = failed_before[0]
        raise StageError(f"federation works, but {', '.join(c['name'] for c in failed_before)} failed ({first['detail']})",
                         first["fix"])
    return ctx.proven()
