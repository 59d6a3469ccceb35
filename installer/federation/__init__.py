"""The federation test: server discovery per the Matrix server-server spec, TLS, signed server
keys, and the client API as a stranger sees it. `run_check` is the one entry point."""

from __future__ import annotations

from installer.federation.check import describe_requests, run_check
from installer.federation.client import AdminLogin
from installer.federation.report import Check, FederationReport

__all__ = ["AdminLogin", "Check", "FederationReport", "describe_requests", "run_check"]
