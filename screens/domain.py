"""The server's names: the server name in user IDs, the Matrix host, and how one points to the other."""

from __future__ import annotations

import json

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.widgets import Input, Static

from installer.answers import Answers
from installer.checks import is_ip_address
from installer.components.dns import well_known_server
from installer.deployment import Deployment
from screens.form import FormScreen
from screens.widgets import FormField


def preview_lines(answers: Answers, host_ip: str, *, resolved_from: str = "") -> list[str]:
    """What the user will see on the internet: the .well-known document and the DNS records, as
    the DNS stage and the Caddyfile will make them. `host_ip` may be words for an address not
    known yet; `resolved_from`: the server's name, whose address may be IPv4 or IPv6 (A or AAAA)."""
    d = answers.domain
    answers = answers.replace("domain", server_name=d.server_name or "example.org", matrix_host=d.matrix_host or "matrix.example.org")
    server, host, port = escape(answers.domain.server_name), escape(answers.domain.matrix_host), answers.federation_port
    records = Deployment.build(answers).records(host_ip)
    lines: list[str] = []
    if answers.domain.delegation == "well-known":
        where = "served here" if answers.serves_server_name else f"publish it on the site that serves {server}"
        lines += [f"[b]https://{server}/.well-known/matrix/server[/] ({where})",
                  f"  {escape(json.dumps(well_known_server(answers)))}"]
    elif answers.domain.delegation == "srv":
        lines += ["[b]SRV record[/] (federation on port 8448)"]
        lines += [f"  {escape(r.name)}.  SRV  {escape(r.value)}" for r in records if r.rtype == "SRV"]
    else:
        lines += ["[b]No delegation[/]", f"  other servers connect to {host}:{port}"]
    lines.append("[b]DNS records[/]")
    lines += [f"  {escape(r.name)}.  {'A or AAAA' if resolved_from else r.rtype}  {escape(r.value)}"
              for r in records if r.rtype in ("A", "AAAA")]
    return lines


class DomainScreen(FormScreen):
    """Server name, Matrix host, delegation (with a live preview), redirect, certificates."""

    STEP = "Domain"
    HEADING = "Which names will your server use?"

    def heading(self) -> str:
        return "Which names does your server use?" if self.installer.options.mode == "upgrade" else self.HEADING

    def compose_aside(self) -> ComposeResult:
        with VerticalScroll(id="aside", can_focus=False) as aside:
            aside.border_title = "Preview"
            yield Static("", id="preview")

    _suggested = ""

    def on_mount(self) -> None:
        # Back on this step: a Matrix host that is still the offered one keeps following.
        server = self.query_one("#field-domain-server_name", FormField).value
        host = self.query_one("#field-domain-matrix_host", FormField)
        if server and host.value == f"matrix.{server.lower()}":
            self._suggested = f"matrix.{server.lower()}"
            with host.control.prevent(Input.Changed):
                host.set_text(self._suggested)  # still the program's: typing there replaces it

    @on(FormField.Changed, "#field-domain-server_name")
    def _suggest_host(self, event: FormField.Changed) -> None:
        """Until the user types a Matrix host, offer matrix.<server name>."""
        host = self.query_one("#field-domain-matrix_host", FormField)
        server = str(event.field.value).lower()
        if host.value in ("", self._suggested) and server:
            self._suggested = f"matrix.{server}"
            control = host.control
            with control.prevent(Input.Changed):
                host.set_text(self._suggested)
            if host.problem:  # what it said of the value before no longer holds
                host.check()

    def update_aside(self) -> None:
        answers = self.draft()
        server = answers.domain.server_name or "example.org"
        self.query_one("#field-domain-server_name", FormField).set_help(f"user IDs will be @alice:{server}; it can never change later")
        host = answers.domain.matrix_host or "matrix.example.org"
        self.query_one("#field-domain-matrix_host", FormField).set_help(f"where clients and servers connect: https://{host}")
        name = ""
        if answers.cloud.provider == "existing" and answers.ssh.host:
            ip = answers.ssh.host
            if not is_ip_address(ip):
                name, ip = ip, f"(the address {ip} resolves to)"
        else:
            ip = "(the VM's public IP)"
        self.query_one("#preview", Static).update("\n".join(preview_lines(answers, ip, resolved_from=name)))
