"""Where the server runs: a new Oracle Cloud VM, or a server the user already has."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible

from screens.form import FormScreen

PROVIDERS = [
    ("oci", "Oracle Cloud: a new Always Free VM"),
    ("existing", "A server I already have"),
]
PROVIDER_HELP = "an existing server: Ubuntu or Debian, reachable over SSH, sudo without a password"
SHAPES = [
    ("VM.Standard.A1.Flex", "A1.Flex: Arm, up to 4 OCPUs / 24 GB"),
    ("VM.Standard.E2.1.Micro", "E2.1.Micro: AMD, 1 OCPU / 1 GB"),
]
SHAPE_HELP = ("A1.Flex is roomy, but often out of capacity (the installer keeps retrying); "
              "E2.1.Micro's 1 GB is tight for Synapse: a few users at most")


class CloudScreen(FormScreen):
    """Provider, then either the OCI details or the existing server's address."""

    STEP = "Cloud"
    HEADING = "Where will the server run?"

    def heading(self) -> str:
        return "Where does the server run?" if self.installer.options.mode == "upgrade" else self.HEADING

    def compose_form(self) -> ComposeResult:
        upgrading = self.installer.options.mode == "upgrade"
        providers = [(value, "Oracle Cloud: the VM an earlier run made") if value == "oci" and upgrading else (value, label)
                     for value, label in PROVIDERS]
        yield self.field("cloud.provider", options=providers, help=PROVIDER_HELP)
        with Vertical(id="oci-group", classes="group"):
            profiles = self.installer.found.oci_profiles if self.installer.found else ()
            names = ", ".join(p.name for p in profiles) or "none"
            yield self.field("cloud.oci_config")
            yield self.field("cloud.oci_profile", help=f"profile (section) in that file; found: {names}")
            yield self.field("cloud.shape", options=SHAPES, help=SHAPE_HELP)
            with Vertical(id="flex-group", classes="group"):
                yield self.field("cloud.ocpus")
                yield self.field("cloud.memory_gb", help="Flex shapes only: 1 to 24 GB free; Synapse is happy with 4 GB or more")
            yield self.field("cloud.ubuntu_version")
            with Collapsible(title="More Oracle Cloud settings", collapsed=True):
                yield self.field("cloud.compartment_id", placeholder="the tenancy")
                yield self.field("cloud.availability_domain", placeholder="each in turn")
                yield self.field("cloud.instance_name")
                yield self.field("cloud.subnet_id", placeholder="found or created")
                yield self.field("cloud.launch_retry_minutes")
        with Vertical(id="existing-group", classes="group"):
            yield self.field("ssh.host", help="the server's public IP address or host name", placeholder="203.0.113.10")
            yield self.field("ssh.port")
            yield self.field("ssh.user")
        with Collapsible(title="Packages", collapsed=True):
            yield self.field("packages.source")

    def update_visibility(self) -> None:
        provider = self.query_one("#field-cloud-provider").value  # type: ignore[attr-defined]
        shape = self.query_one("#field-cloud-shape").value  # type: ignore[attr-defined]
        self.query_one("#oci-group").set_class(provider != "oci", "-na")
        self.query_one("#existing-group").set_class(provider != "existing", "-na")
        self.query_one("#flex-group").set_class(shape != "VM.Standard.A1.Flex", "-na")
