"""Memory: peak RSS of the guided setup through a whole (dry-run) install, in its own process,
against the 150 MB goal; the hello app's peak is printed beside it for scale."""

from __future__ import annotations

import subprocess
import textwrap

from bench.common import PYTHON, ROOT, Row, print_rows

GUIDED_RUN = textwrap.dedent(
    """
    import asyncio
    from installer.answers import Answers
    from installer.engine import RunOptions
    from screens.app import InstallerApp

    async def main():
        answers = (Answers().replace("domain", server_name="example.org", matrix_host="matrix.example.org")
                   .replace("cloud", provider="existing")
                   .replace("ssh", host="203.0.113.7", host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"))
        app = InstallerApp(answers, RunOptions(dry_run=True), provider_check=lambda a, o: [], env=lambda n: "bench-admin-password")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("enter")
            for _ in range(5):
                await pilot.pause()
                await pilot.press("ctrl+n")
            for _ in range(600):
                await pilot.pause(0.05)
                if app.result is not None:
                    break
            assert app.result is not None, "the run did not finish"

    asyncio.run(main())
    """
)
HELLO = "from bench.hello_app import HelloApp; app = HelloApp(); app.call_after_refresh(app.exit); app.run(headless=True, size=(80, 24))"


def peak_rss_mb(code: str) -> float:
    """Peak RSS of a child process: run it alone, read the children's maximum."""
    probe = f"import resource, subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}], check=True); " \
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return int(out.split()[-1]) / 1024


def measure() -> tuple[list[Row], float]:
    guided = peak_rss_mb(GUIDED_RUN)
    hello = peak_rss_mb(HELLO)
    return [Row("guided setup peak RSS over a dry-run install vs 150 MB", guided, 150, "MB", guided / 150, "<= 1.0x")], hello


def main() -> None:
    rows, hello = measure()
    print_rows("Memory (peak RSS, whole process)", rows)
    print(f"  (a hello Textual app peaks at {hello:.0f} MB)")


if __name__ == "__main__":
    main()
