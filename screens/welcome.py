"""The first screen: what will be set up, what is needed, and what this machine already has."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.widgets import Button, Footer, OptionList, Static
from textual.widgets.option_list import Option

from screens.base import StepScreen

WHAT = """\
From an Oracle Cloud account (or a server you have) and a domain to a Matrix homeserver \
that federates with the rest of the network:
  • an Ubuntu VM on Oracle's Always Free tier, both firewalls opened
  • DNS records, Caddy (HTTPS), Synapse and Postgres in Docker, an admin
  • Element Web, a TURN server for calls, backups off the box
  • a federation test at the end, then daily; --upgrade keeps it current
[b]You need[/] an OCI config (~/.oci/config) or a server you can SSH into, and a domain \
whose DNS you can edit. Nothing changes until you press Install on the Review step."""

UPGRADE = """\
Upgrade mode: back up Synapse's data, upgrade the OS packages, the images and Element Web (the \
previous release kept), reboot if the OS asks, remove old images, then run the federation test \
again. Check the answers of the \
server to upgrade on the next screens (or pick a previous run below), then review and start."""


class WelcomeScreen(StepScreen):
    """Start a new setup, or resume or upgrade one found in the state folder."""

    STEP = "Welcome"
    HORIZONTAL_BREAKPOINTS = []  # one layout at every width: no restyle before the first frame
    BINDINGS = [
        # One key, worded as the button of the mode (check_action shows the one that applies).
        Binding("ctrl+n", "start('install')", "Start"),
        Binding("ctrl+n", "start('upgrade')", "Upgrade"),
        Binding("r", "resume", "Resume run", show=False),
        Binding("u", "upgrade", "Upgrade run", show=False),
    ]

    def compose(self) -> ComposeResult:
        found = self.installer.found
        yield from self.compose_steps()
        upgrading = self.installer.options.mode == "upgrade"
        with VerticalScroll(id="form", can_focus=False):
            yield Static("Upgrade your Matrix homeserver" if upgrading else "Set up your own Matrix homeserver", classes="title")
            yield Static(UPGRADE if upgrading else WHAT, classes="intro")
            yield Static("Found on this machine", classes="subheading")
            yield Static(self._found_text(), id="found", classes="found")
            if found and found.previous_runs:
                yield Static("Previous runs (pick one, then Resume or Upgrade)", classes="subheading")
                options = [Option(f"{escape(run.server_name)}  ·  {escape(run.summary)}", id=str(i)) for i, run in enumerate(found.previous_runs)]
                yield OptionList(*options, id="runs")
                with Horizontal(id="run-buttons"):
                    yield Button("Resume", id="resume", compact=True)
                    yield Button("Upgrade", id="upgrade", compact=True)
        with Horizontal(id="nav"):
            yield Button("Quit", id="quit", compact=True)
            yield Static("", id="nav-status")
            yield Button("Upgrade →" if upgrading else "Start →", id="start", variant="primary", compact=True)
        yield Footer()

    def _found_text(self) -> str:
        found = self.installer.found
        if found is None:
            return "looking around this machine…"
        lines = []
        if found.oci_profiles:
            for p in found.oci_profiles:
                mark = "[$text-success]✓[/]" if p.key_present else "[$text-warning]![/]"
                key = "API key found" if p.key_present else "API key missing"
                lines.append(f"{mark} OCI profile {escape(p.name)} · {escape(p.region or 'no region')} · {key}")
        else:
            lines.append(f"[$text-muted]·[/] no OCI config at {escape(str(found.oci_config))} (fine for an existing server)")
        if found.ssh_keys:
            for k in found.ssh_keys[:3]:
                lines.append(f"[$text-success]✓[/] SSH key {escape(k.private_path.name)}  {escape(k.fingerprint)}")
            if len(found.ssh_keys) > 3:
                lines.append(f"  and {len(found.ssh_keys) - 3} more")
        elif self.installer.options.mode == "upgrade":
            lines.append("[$text-warning]![/] no SSH key pair in ~/.ssh: an upgrade needs the one that installed the server")
        else:
            lines.append("[$text-muted]·[/] no SSH key pair in ~/.ssh: an ed25519 pair will be created")
        if not found.previous_runs:
            lines.append("[$text-muted]·[/] no previous runs")
        return "\n".join(lines)

    def on_mount(self) -> None:
        self.query_one("#start", Button).focus()
        self.call_after_refresh(self.query_one("#form").scroll_home, animate=False)
        if self.installer.found is None:
            self.call_after_refresh(self._look_around)

    async def _look_around(self) -> None:
        """Discovery after the first frame: the screen appears at once, what was found a moment later."""
        self.installer.discover()
        await self.recompose()
        self.query_one("#start", Button).focus()

    def _picked(self) -> int | None:
        runs = self.query("#runs")
        if not runs:
            return None
        return runs.first(OptionList).highlighted

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start" and parameters:
            return parameters[0] == self.installer.options.mode
        return True

    def action_start(self, mode: str = "") -> None:
        self.installer.go_next(self)

    def action_resume(self) -> None:
        if (index := self._picked()) is not None:
            self.installer.continue_run(index, mode="install")

    def action_upgrade(self) -> None:
        if (index := self._picked()) is not None:
            self.installer.continue_run(index, mode="upgrade")

    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#resume")
    def _resume(self) -> None:
        self.action_resume()

    @on(Button.Pressed, "#upgrade")
    def _upgrade(self) -> None:
        self.action_upgrade()

    @on(Button.Pressed, "#quit")
    def _quit(self) -> None:
        self.installer.request_quit()
