"""Stage federation.check: the installer's own federation test, the last stage of every run."""

from __future__ import annotations

from installer.components.homeserver import AdminCredentials
from installer.engine import StageContext, StageError
from installer.events import Status


async def check(ctx: StageContext) -> Status:
    """Check the server as the world sees it; fail with the failing checks named and the first fix."""
    from installer.federation import AdminLogin, describe_requests, run_check
    from installer.shown import escape

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
                                      matrix_host=ctx.answers.domain.matrix_host):
            ctx.log(line, "command")
        return Status.PLANNED
    ctx.progress(f"testing {server_name} as other servers and new users see it")
    report = await run_check(server_name, connect_to=options.connect_to, dns_server=options.dns_server,
                             ca_file=options.ca_file, expect_policy=expect_policy, admin=admin)
    for line in report.summary_lines():
        ctx.log(line)
    ctx.log(f"federation test took {report.seconds:.2f} s")
    ctx.session.federation = report.to_json()
    if not report.ok:
        failed = report.failed
        fix = next((c.fix for c in failed if c.fix), None)  # details come from the network: escaped
        raise StageError(f"federation test failed: {', '.join(c.name for c in failed)} ({escape(failed[0].detail)})",
                         escape(fix) if fix else None)
    # What earlier stages checked of the deployment without failing the run there (backup-age, read
    # before the test so that a --check still tests federation): a failed one fails the check now.
    if failed_before := [c for c in ctx.session.checks if not c["ok"]]:
        first = failed_before[0]
        raise StageError(f"federation works, but {', '.join(c['name'] for c in failed_before)} failed ({first['detail']})",
                         first["fix"])
    return ctx.proven()
