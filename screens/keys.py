"""The keys: the SSH key pair to log in with (used or created) and the OCI API key's status."""

from __future__ import annotations


from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.widgets import Select, Static

from installer import discovery
from installer.answers import Answers, in_words
from screens.form import FormScreen
from screens.widgets import FormField


class KeysScreen(FormScreen):
    """Which SSH key, its fingerprint, an optional host key pin, and the OCI key status."""

    STEP = "Keys"
    HEADING = "Which keys will the installer use?"

    def compose_form(self) -> ComposeResult:
        found = self.installer.found
        keys = found.ssh_keys if found else ()
        if keys:
            options = [(f"{k.private_path.name}  {k.key_type}  {k.fingerprint[:27]}…", str(k.private_path)) for k in keys]
            yield Static("Key pairs found in ~/.ssh (pick one, or type a path below)", classes="field-help", id="found-keys-help")
            yield Select(options, prompt="Use a key found on this machine", id="found-keys", compact=True)
        yield self.field("ssh.private_key", help="")
        yield Static("", id="key-status", classes="status-line")
        if self.installer.answers.cloud.provider == "existing":
            yield self.field("ssh.host_key", placeholder="ssh-ed25519 AAAA... (read on the server itself)",
                             help="required: on the server's console, sudo cat /etc/ssh/ssh_host_ed25519_key.pub "
                                  "(the installer never trusts a host key on first sight)")
        else:
            yield self.field("ssh.host_key", placeholder="ssh-ed25519 AAAA... (leave empty for cloud VMs)",
                             help="optional: pin the server's host key; a new VM's key is set before the first login")
        with Vertical(id="oci-key-group", classes="group"):
            yield Static("Oracle Cloud API key", classes="subheading")
            yield Static("", id="oci-key-status", classes="status-line")

    @on(Select.Changed, "#found-keys")
    def _pick_key(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.query_one("#field-ssh-private_key", FormField).set_text(discovery.home_relative(event.value, self.installer.home))

    def _checks_provider(self) -> bool:
        """The provider's own credentials matter for an install on a cloud (not for a server of your own)."""
        return self.installer.answers.cloud.provider != "existing" and self.installer.options.mode == "install"

    def update_visibility(self) -> None:
        super().update_visibility()
        self.query_one("#oci-key-group").set_class(not self._checks_provider(), "-na")

    def update_aside(self) -> None:
        answers = self.draft()
        key_path = discovery.expand(answers.ssh.private_key, self.installer.home)
        pair = self.key_pair(answers)
        if pair is not None:
            status = f"[$text-success]✓[/] {escape(pair.key_type)} {escape(pair.fingerprint)}"
        elif self.step_problems(answers):
            status = ""  # the field itself says it (set on mount, and as the path changes)
        elif key_path.exists():
            status = f"[$text-warning]![/] {escape(str(key_path))} exists but its .pub is missing or unreadable"
        elif answers.cloud.provider == "existing":
            target = f"{answers.ssh.user}@{answers.ssh.host or 'your-server'}"
            status = ("[$text-primary]+[/] not found: a new ed25519 pair will be created here (mode 0600); the run then "
                      "waits while you add it to your server: "
                      f"ssh-copy-id -i {escape(discovery.home_relative(key_path, self.installer.home))}.pub {escape(target)}")
        else:
            status = "[$text-primary]+[/] not found: a new ed25519 pair will be created here (mode 0600)"
        self.query_one("#key-status", Static).update(status)

    def step_problems(self, answers: Answers) -> list[tuple[str, str]]:
        """An upgrade makes no key pair: the server accepts only the one that installed it."""
        from installer.readiness import NO_KEY_TO_UPGRADE_WITH

        key_path = discovery.expand(answers.ssh.private_key, self.installer.home)
        missing = self.key_pair(answers) is None and not key_path.exists()
        if self.installer.options.mode == "upgrade" and answers.ssh.private_key and missing:
            return [("ssh.private_key", NO_KEY_TO_UPGRADE_WITH)]
        return []

    def key_pair(self, answers: Answers) -> discovery.SshKey | None:
        """The key pair at ssh.private_key: one found on this machine, or read now."""
        key_path = discovery.expand(answers.ssh.private_key, self.installer.home)
        found = self.installer.found
        known = {k.private_path: k for k in found.ssh_keys} if found else {}
        return known.get(key_path) or discovery.key_pair(key_path)

    def on_mount(self) -> None:
        super().on_mount()
        self.show_oci_status()
        for path, problem in self.step_problems(self.draft()):  # said at once, as the key status would be
            self.query_one(f"#field-{path.replace('.', '-')}", FormField).set_cross_problem(problem)

    def show_oci_status(self) -> None:
        """The OCI profile's state, checked once (the Cloud step, not this one, names the profile)."""
        cloud = self.installer.answers.cloud
        if not self._checks_provider():
            return
        problems = self.installer.provider_check(self.installer.answers, self.installer.options)
        if problems:
            text = "\n".join(f"[$text-error]✗[/] {escape(in_words(p, form=True))}" for p in problems)
        else:
            text = f"[$text-success]✓[/] profile {escape(cloud.oci_profile)} in {escape(cloud.oci_config)}: user, tenancy, region and API key check out"
        self.query_one("#oci-key-status", Static).update(text)
