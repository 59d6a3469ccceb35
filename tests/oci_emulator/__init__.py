"""A local Oracle Cloud API emulator for the real `oci` SDK, and its pytest fixtures.

`fixtures.oci_emulator` gives a running emulator, an API key and a config file; `harness` drives
the cloud stages through the real Engine; `dns_server` is a tiny DNS server for the DNS stage.
"""

from tests.oci_emulator.server import ApiError, Emulator, Fault, Server

__all__ = ["ApiError", "Emulator", "Fault", "Server"]
