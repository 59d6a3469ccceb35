"""Import hygiene: the engine never imports Textual; start-up does not pay for the oci SDK."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import installer

ROOT = Path(__file__).resolve().parents[2]


def _modules_loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


def test_importing_every_installer_module_never_imports_textual() -> None:
    names = [m.name for m in pkgutil.walk_packages(installer.__path__, "installer.") if not m.name.endswith("__main__")]
    assert "installer.engine" in names and "installer.cli" in names
    loaded = _modules_loaded_after("\n".join(f"import {name}" for name in names))
    textual = sorted(m for m in loaded if m == "textual" or m.startswith("textual."))
    assert textual == [], f"installer imports textual: {textual[:5]}"
    assert not any(m == "screens" or m.startswith("screens.") for m in loaded)


def test_cli_start_up_does_not_import_oci_or_asyncssh() -> None:
    loaded = _modules_loaded_after("import installer.cli, installer.plan")
    assert "oci" not in loaded
    assert "asyncssh" not in loaded
    assert "textual" not in loaded


def test_the_guided_setup_gets_to_its_first_form_without_the_oci_sdk_or_the_engine(tmp_path: Path) -> None:
    """Welcome (with its look around this machine) and the Cloud form: nothing there needs the
    SDK, SSH or the engine, so the first frame does not wait for them."""
    opened = (
        "import asyncio\n"
        "from pathlib import Path\n"
        "from installer.options import RunOptions\n"
        "from screens.app import InstallerApp\n"
        "async def main():\n"
        f"    app = InstallerApp(None, RunOptions(state_dir=Path({str(tmp_path)!r})), home=Path({str(tmp_path)!r}))\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        await pilot.pause()\n"
        "        await pilot.press('ctrl+n')\n"
        "        await pilot.pause()\n"
        "        assert type(app.screen).__name__ == 'CloudScreen', app.screen\n"
        "        assert app.found is not None\n"
        "asyncio.run(main())"
    )
    loaded = _modules_loaded_after(opened)
    assert "screens.cloud" in loaded and "installer.discovery" in loaded
    for heavy in ("oci", "asyncssh", "installer.engine", "installer.plan", "installer.cloud"):
        assert heavy not in loaded, f"{heavy} is imported before it is needed"
