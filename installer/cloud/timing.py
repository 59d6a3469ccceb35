"""How long the cloud stages and the API client wait between tries and polls."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Waits for the cloud stages. Tests put tiny values in `session.resources[Timing]`;
    real runs use these defaults."""

    backoff_base: float = 15.0
    """First wait after "Out of host capacity" or a 429; doubles each attempt up to `backoff_max`."""
    backoff_max: float = 240.0
    retry_base: float = 2.0
    """First wait after a 409 conflict or a 5xx on a call that is safe to repeat; doubles up to `retry_max`
    (the SDK's own default strategy starts at 1 s and stops at 30 s)."""
    retry_max: float = 30.0
    poll_interval: float = 5.0
    """Between lifecycle polls (instance RUNNING, VNIC attached, console capture)."""
    settle_interval: float = 1.0
    """Between polls of a new VCN, gateway or subnet: they become AVAILABLE within seconds."""
    running_timeout: float = 900.0
    dns_poll_interval: float = 15.0
    dns_timeout: float = 1800.0
    """How long the DNS stage waits for records the user creates by hand."""
