"""The Oracle Cloud calls the stages make, behind one small interface with two back-ends.

`OciCloud` talks to the real API through the `oci` SDK: imported lazily (it costs seconds), every
blocking call run in a thread so the event loop and the screen stay live, the SDK's own retries
off so that every retry is ours and shows progress. `_call` retries what the SDK's default
strategy treats as routine (src/oci/retry/retry_checkers.py, RETRYABLE_STATUSES_AND_CODES: 429,
409 IncorrectState/LockConflict, and any 5xx but 501), for calls that are safe to repeat: reads,
whole-object PUTs, and creates that carry an `opc-retry-token` (the SDK adds one itself whenever
a retry strategy is on: BaseClient.add_opc_retry_token_if_needed). `DryRunCloud` contacts
nothing: it logs each call and returns placeholders, so `--dry-run` prints the whole cloud plan
in order.

Every call is announced through `log_call` (the stage's `ctx.cloud_call`) before it is made;
descriptions never carry secrets (no user data, no keys).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import importlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from installer.cloud.config import config_value, endpoint_override
from installer.cloud.timing import Timing
from installer.shown import error_words

if TYPE_CHECKING:
    from installer.components.base import Port

LogCall = Callable[[str], None]
Notify = Callable[[str], None]
THROTTLE_TRIES = 5
TRANSIENT_TRIES = 5
CONFLICT_CODES = ("IncorrectState", "LockConflict")
CONSOLE_PAGE = 32 * 1024
"""Bytes asked for per console-history read; `opc-bytes-remaining` says whether more follow."""
CONSOLE_MAX = 1024 * 1024
"""A capture holds at most the last megabyte of serial output."""

VCN_NAME = "matrix-vcn"
SUBNET_NAME = "matrix-public-subnet"
GATEWAY_NAME = "matrix-internet-gateway"


class CloudError(Exception):
    """An Oracle Cloud API call failed: HTTP status (0: never reached the service), code, message."""

    def __init__(self, status: int, code: str, message: str, operation: str = "", request_id: str | None = None) -> None:
        self.status = status
        self.code = code or ""
        self.message = message or ""
        self.operation = operation
        self.request_id = request_id
        # Status 0 never reached the service: there is no HTTP status or code to show, only what happened.
        said = message if status == 0 else f"{status} {code}: {message}"
        super().__init__(f"{operation}: {said}" if operation else said)

    @property
    def out_of_capacity(self) -> bool:
        """Oracle has no room for the shape here now: "Out of host capacity.", "Out of capacity for shape
        ... in availability domain ...", whatever the wording, as an InternalError about capacity."""
        return (self.status == 500 or self.code == "InternalError") and "capacity" in self.message.lower()

    @property
    def shape_not_offered(self) -> bool:
        """404 NotAuthorizedOrNotFound "shape VM.Standard.E2.1.Micro not found": the shape is not offered in
        this availability domain (Micro is in one AD of most regions), not a permissions problem."""
        return self.status == 404 and re.search(r"\bshape\b.*\bnot found\b", self.message, re.I) is not None

    @property
    def limit_in_this_ad(self) -> bool:
        """LimitExceeded scoped to one availability domain ("... in this Availability Domain ... try
        launching the instance in a different Availability Domain"): another AD may still take it."""
        return self.code == "LimitExceeded" and "availability domain" in self.message.lower()

    @property
    def conflict(self) -> bool:
        """409 IncorrectState / LockConflict: the resource is busy with another change; it passes."""
        return self.status == 409 and self.code in CONFLICT_CODES

    @property
    def server_error(self) -> bool:
        """A 5xx (but 501 Not Implemented) that is not about capacity: a gateway or service hiccup."""
        return self.status >= 500 and self.status != 501 and not self.out_of_capacity

    @property
    def transient(self) -> bool:
        return self.conflict or self.server_error

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def gist(self) -> str:
        """Status and code for a progress line (a 502 from a load balancer may have no code)."""
        if self.status == 429:
            return "too many requests (429)"
        if self.conflict:
            return f"{self.status} {self.code}: busy with another change"
        if self.code:
            return f"{self.status} {self.code}"
        try:
            return f"{self.status} {HTTPStatus(self.status).phrase}"
        except ValueError:
            return str(self.status)


@dataclass(frozen=True)
class RouteRule:
    destination: str
    network_entity_id: str


def short(ocid: str) -> str:
    """An OCID shortened for log lines: its type and the last characters."""
    if not ocid.startswith("ocid1."):
        return ocid
    parts = ocid.split(".")
    return f"{parts[1]}…{parts[-1][-8:]}"


async def load_sdk() -> Any:
    """Import the oci SDK off the event loop (it takes seconds the first time)."""
    return await asyncio.to_thread(importlib.import_module, "oci")


class OciCloud:
    """The real back-end: one SDK client per service, all pointed at the override endpoint if set."""

    def __init__(self, oci: Any, config_path: str, profile: str, log_call: LogCall, timing: Timing | None = None) -> None:
        self._oci = oci
        self._log_call = log_call
        self._notify: Notify = log_call
        self.timing = timing or Timing()
        """backoff_* after a 429, retry_* after a conflict or a 5xx, poll_interval for the console capture."""
        self.config = oci.config.from_file(file_location=config_path, profile_name=profile)
        # The stages decide what to retry and show it: no hidden SDK retries, no circuit breaker
        # (some SDK versions enable one that opens after ten 500s, i.e. ten "Out of host capacity").
        kwargs: dict[str, Any] = {
            "retry_strategy": oci.retry.NoneRetryStrategy(),
            "circuit_breaker_strategy": oci.circuit_breaker.NoCircuitBreakerStrategy(),
            "timeout": (10, 60),
        }
        if endpoint := endpoint_override():
            kwargs["service_endpoint"] = endpoint
        self.endpoint = endpoint
        self.identity = oci.identity.IdentityClient(self.config, **kwargs)
        self.compute = oci.core.ComputeClient(self.config, **kwargs)
        self.network = oci.core.VirtualNetworkClient(self.config, **kwargs)
        self.dns = oci.dns.DnsClient(self.config, **kwargs)

    @classmethod
    async def open(cls, config_path: str, profile: str, log_call: LogCall, timing: Timing | None = None) -> OciCloud:
        oci = await load_sdk()
        path = str(Path(config_path).expanduser())
        try:
            return await asyncio.to_thread(cls, oci, path, profile, log_call, timing)
        except oci.exceptions.ClientError as exc:
            # The SDK's class names (ProfileNotFound, InvalidConfig) are no words for a user: its message is.
            raise CloudError(0, "", _config_problem(exc), "config") from None

    @property
    def tenancy(self) -> str:
        return str(self.config["tenancy"])

    def bind(self, log_call: LogCall, notify: Notify | None = None) -> OciCloud:
        """The same clients, announcing calls (and 429 waits) through another stage's log."""
        other = copy.copy(self)
        other._log_call = log_call
        other._notify = notify or log_call
        return other

    @property
    def models(self) -> Any:
        return self._oci.core.models

    async def _call(self, description: str, fn: Callable[..., Any], *args: Any, retry: bool = True,
                    announce: bool = True, **kwargs: Any) -> Any:
        """Announce and make one call in a thread. Unless the caller handles them (`retry=False`), a 429 is
        waited out (doubling from backoff_base) and a conflict or a 5xx is retried (doubling from
        retry_base), each wait shown through `notify`."""
        if announce:
            self._log_call(description)
        operation = description.split("(")[0]
        for attempt in range(1, max(THROTTLE_TRIES, TRANSIENT_TRIES) + 1):
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except self._oci.exceptions.ServiceError as exc:
                error = CloudError(exc.status, exc.code, _plain(exc.message), operation, exc.request_id)
            except Exception as exc:  # requests/urllib3 connection failures, timeouts
                network = (OSError, self._oci.exceptions.RequestException, self._oci.exceptions.ConnectTimeout)
                if not isinstance(exc, network) and not type(exc).__module__.startswith(("requests", "urllib3", "oci._vendor")):
                    raise
                error = CloudError(0, "", _connection_problem(exc), operation)
            delay = self._retry_delay(error, attempt) if retry else None
            if delay is None:
                raise error
            self._notify(f"{operation}: {error.gist}; next try in {_seconds(delay)}")
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _retry_delay(self, error: CloudError, attempt: int) -> float | None:
        """How long to wait before trying `error`'s call again, or None to give up."""
        t = self.timing
        if error.status == 429 and attempt < THROTTLE_TRIES:
            return min(t.backoff_max, t.backoff_base * 2 ** (attempt - 1))
        if error.transient and attempt < TRANSIENT_TRIES:
            return min(t.retry_max, t.retry_base * 2 ** (attempt - 1))
        return None

    async def _all(self, description: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Every item of a list call, following `opc-next-page`. (The SDK's own pagination helper
        wraps each page in its default retry strategy, which would hide 429s and outages for minutes.)"""
        items: list[Any] = []
        page: str | None = None
        while True:
            if page:
                kwargs["page"] = page
            response = await self._call(description, fn, *args, announce=page is None, **kwargs)
            items.extend(response.data)
            page = response.next_page
            if not page:
                return items

    # --- identity -----------------------------------------------------------------------
    async def list_availability_domains(self, compartment_id: str) -> list[str]:
        ads = await self._call(
            f"identity.list_availability_domains(compartment={compartment_id})",
            self.identity.list_availability_domains, compartment_id,
        )
        return [ad.name for ad in ads.data]

    # --- network ------------------------------------------------------------------------
    async def get_vcn(self, vcn_id: str) -> Any:
        return (await self._call(f"network.get_vcn({vcn_id})", self.network.get_vcn, vcn_id)).data

    async def list_vcns(self, compartment_id: str) -> list[Any]:
        return await self._all(f"network.list_vcns(compartment={compartment_id})", self.network.list_vcns, compartment_id)

    async def create_vcn(self, compartment_id: str, cidr: str, name: str, dns_label: str) -> Any:
        details = self.models.CreateVcnDetails(compartment_id=compartment_id, cidr_blocks=[cidr], display_name=name, dns_label=dns_label)
        return (await self._call(f"network.create_vcn(name={name}, cidr={cidr})", self.network.create_vcn, details,
                                 opc_retry_token=_retry_token())).data

    async def list_internet_gateways(self, compartment_id: str, vcn_id: str) -> list[Any]:
        return await self._all(
            f"network.list_internet_gateways(vcn={vcn_id})", self.network.list_internet_gateways, compartment_id, vcn_id=vcn_id
        )

    async def create_internet_gateway(self, compartment_id: str, vcn_id: str, name: str) -> Any:
        details = self.models.CreateInternetGatewayDetails(compartment_id=compartment_id, vcn_id=vcn_id, is_enabled=True, display_name=name)
        return (await self._call(f"network.create_internet_gateway(name={name}, vcn={vcn_id})", self.network.create_internet_gateway,
                                 details, opc_retry_token=_retry_token())).data

    async def get_internet_gateway(self, igw_id: str) -> Any:
        return (await self._call(f"network.get_internet_gateway({igw_id})", self.network.get_internet_gateway, igw_id)).data

    async def get_route_table(self, rt_id: str) -> Any:
        return (await self._call(f"network.get_route_table({rt_id})", self.network.get_route_table, rt_id)).data

    async def add_route_rules(self, rt_id: str, existing: list[Any], new: list[RouteRule]) -> Any:
        m = self.models
        rules = list(existing) + [
            m.RouteRule(destination=r.destination, destination_type="CIDR_BLOCK", network_entity_id=r.network_entity_id) for r in new
        ]
        shown = ", ".join(f"{r.destination} -> {r.network_entity_id}" for r in new)
        details = m.UpdateRouteTableDetails(route_rules=rules)
        return (await self._call(f"network.update_route_table({rt_id}, add {shown})", self.network.update_route_table, rt_id, details)).data

    async def get_subnet(self, subnet_id: str) -> Any:
        return (await self._call(f"network.get_subnet({subnet_id})", self.network.get_subnet, subnet_id)).data

    async def list_subnets(self, compartment_id: str, vcn_id: str) -> list[Any]:
        return await self._all(f"network.list_subnets(vcn={vcn_id})", self.network.list_subnets, compartment_id, vcn_id=vcn_id)

    async def create_subnet(self, compartment_id: str, vcn_id: str, cidr: str, name: str, dns_label: str,
                            route_table_id: str, security_list_ids: list[str]) -> Any:
        details = self.models.CreateSubnetDetails(
            compartment_id=compartment_id, vcn_id=vcn_id, cidr_block=cidr, display_name=name, dns_label=dns_label,
            prohibit_public_ip_on_vnic=False, route_table_id=route_table_id, security_list_ids=security_list_ids,
        )
        return (await self._call(f"network.create_subnet(name={name}, cidr={cidr}, public)", self.network.create_subnet, details,
                                 opc_retry_token=_retry_token())).data

    async def get_security_list(self, sl_id: str) -> tuple[Any, str]:
        response = await self._call(f"network.get_security_list({sl_id})", self.network.get_security_list, sl_id)
        return response.data, response.headers.get("etag", "")

    async def add_ingress_rules(self, sl_id: str, existing: list[Any], ports: list[Port], etag: str,
                                source: str = "0.0.0.0/0") -> Any:
        """PUT the list back with every existing rule kept and one rule per new port (or range),
        from `source` (a CIDR: anywhere unless said)."""
        m = self.models
        new = []
        for port in ports:
            low, high = port.span
            options = {"destination_port_range": m.PortRange(min=low, max=high)}
            new.append(m.IngressSecurityRule(
                protocol=PROTOCOL_NUMBERS[port.protocol], source=source, source_type="CIDR_BLOCK", is_stateless=False,
                tcp_options=m.TcpOptions(**options) if port.protocol == "tcp" else None,
                udp_options=m.UdpOptions(**options) if port.protocol == "udp" else None,
                description=f"matrix-installer: {port.protocol.upper()} {_numbers(port)}",
            ))
        details = m.UpdateSecurityListDetails(ingress_security_rules=list(existing) + new)
        return (await self._call(
            f"network.update_security_list({sl_id}, add ingress {_shown_ports(ports)}"
            f"{'' if source == '0.0.0.0/0' else ' from ' + source}, if_match=etag)",
            self.network.update_security_list, sl_id, details, if_match=etag,
        )).data

    async def get_vnic(self, vnic_id: str) -> Any:
        return (await self._call(f"network.get_vnic({vnic_id})", self.network.get_vnic, vnic_id)).data

    # --- compute ------------------------------------------------------------------------
    async def list_shapes(self, compartment_id: str, availability_domain: str) -> list[Any]:
        """The shapes this tenancy can launch in one availability domain, with their billing_type."""
        return await self._all(
            f"compute.list_shapes(ad={availability_domain})",
            self.compute.list_shapes, compartment_id, availability_domain=availability_domain,
        )

    async def list_images(self, compartment_id: str, version: str, shape: str) -> list[Any]:
        return await self._all(
            f'compute.list_images(os="Canonical Ubuntu", version={version}, shape={shape})',
            self.compute.list_images, compartment_id, operating_system="Canonical Ubuntu",
            operating_system_version=version, shape=shape, sort_by="TIMECREATED", sort_order="DESC", lifecycle_state="AVAILABLE",
        )

    async def list_instances(self, compartment_id: str, display_name: str) -> list[Any]:
        return await self._all(
            f"compute.list_instances(name={display_name})", self.compute.list_instances, compartment_id, display_name=display_name
        )

    async def launch_instance(self, *, compartment_id: str, availability_domain: str, name: str, shape: str,
                              ocpus: int | None, memory_gb: int | None, image_id: str, subnet_id: str,
                              ssh_public_key: str, user_data_b64: str) -> Any:
        m = self.models
        shape_config = m.LaunchInstanceShapeConfigDetails(ocpus=float(ocpus), memory_in_gbs=float(memory_gb)) if ocpus else None
        details = m.LaunchInstanceDetails(
            compartment_id=compartment_id, availability_domain=availability_domain, display_name=name, shape=shape,
            shape_config=shape_config,
            source_details=m.InstanceSourceViaImageDetails(source_type="image", image_id=image_id),
            create_vnic_details=m.CreateVnicDetails(subnet_id=subnet_id, assign_public_ip=True),
            metadata={"ssh_authorized_keys": ssh_public_key, "user_data": user_data_b64},
            freeform_tags={"created-by": "matrix-installer"},
        )
        # The stage decides what to do about each failure (another AD, a wait, adopting a launch that went through).
        return (await self._call(describe_launch(shape, ocpus, memory_gb, availability_domain, image_id, subnet_id),
                                 self.compute.launch_instance, details, retry=False, opc_retry_token=_retry_token())).data

    async def get_instance(self, instance_id: str, *, retry: bool = True) -> Any:
        return (await self._call(f"compute.get_instance({instance_id})", self.compute.get_instance, instance_id, retry=retry)).data

    async def list_vnic_attachments(self, compartment_id: str, instance_id: str) -> list[Any]:
        return await self._all(
            f"compute.list_vnic_attachments(instance={instance_id})",
            self.compute.list_vnic_attachments, compartment_id, instance_id=instance_id,
        )

    async def console_history(self, instance_id: str) -> str:
        """The serial console's recent output (cloud-init prints the host keys there, after tens of KB of
        boot messages): capture it, wait for the capture, then read it page by page. "" when the
        capture fails or never finishes (the host key is then pinned by hand)."""
        details = self.models.CaptureConsoleHistoryDetails(instance_id=instance_id)
        history = (await self._call(f"compute.capture_console_history(instance={instance_id})",
                                    self.compute.capture_console_history, details, opc_retry_token=_retry_token())).data
        waited = 0.0
        # The capture is asynchronous: REQUESTED, GETTING-HISTORY, then SUCCEEDED (or FAILED).
        while history.lifecycle_state not in ("SUCCEEDED", "FAILED") and waited < self.timing.running_timeout:
            self._notify(f"capturing the console history: {history.lifecycle_state}")
            await asyncio.sleep(self.timing.poll_interval)
            waited += self.timing.poll_interval
            history = (await self._call(f"compute.get_console_history({history.id})",
                                        self.compute.get_console_history, history.id, announce=False)).data
        if history.lifecycle_state != "SUCCEEDED":
            self._notify(f"the console history capture ended {history.lifecycle_state}")
            return ""
        return await self._console_text(history.id)

    async def _console_text(self, history_id: str) -> str:
        """Every page of a capture, following `opc-bytes-remaining` (one read returns at most `length` bytes)."""
        pages: list[bytes] = []
        offset = 0
        while offset < CONSOLE_MAX:
            response = await self._call(
                f"compute.get_console_history_content({history_id}, offset={offset})",
                self.compute.get_console_history_content, history_id, offset=offset, length=CONSOLE_PAGE, announce=offset == 0,
            )
            data = response.data if isinstance(response.data, bytes) else str(response.data or "").encode()
            pages.append(data)
            offset += len(data)
            remaining = _int_header(response.headers, "opc-bytes-remaining")
            if not data or not remaining:
                break
        return b"".join(pages).decode("utf-8", "replace")

    # --- dns ----------------------------------------------------------------------------
    async def find_zone(self, compartment_id: str, name: str) -> Any | None:
        """The public zone called `name`: scope GLOBAL, so a private (VCN-resolver) zone of the same name is never picked."""
        zones = await self._all(
            f"dns.list_zones(name={name}, type=PRIMARY, scope=GLOBAL)", self.dns.list_zones, compartment_id,
            name=name, zone_type="PRIMARY", scope="GLOBAL",
        )
        return zones[0] if zones else None

    async def get_rrset(self, zone: Any, domain: str, rtype: str) -> list[Any]:
        """The records of one name and type in `zone` (a zone from find_zone: addressed by its OCID)."""
        try:
            response = await self._call(f"dns.get_rr_set(zone={zone.name}, {domain} {rtype})", self.dns.get_rr_set, zone.id, domain, rtype)
        except CloudError as exc:
            if exc.not_found:
                return []
            raise
        return list(response.data.items or [])

    async def set_rrset(self, zone: Any, domain: str, rtype: str, rdatas: list[str], ttl: int) -> None:
        dm = self._oci.dns.models
        items = [dm.RecordDetails(domain=domain, rtype=rtype, rdata=r, ttl=ttl) for r in rdatas]
        await self._call(
            f"dns.update_rr_set(zone={zone.name}, {domain} {ttl} IN {rtype} {' '.join(rdatas)})",
            self.dns.update_rr_set, zone.id, domain, rtype, dm.UpdateRRSetDetails(items=items),
        )


PROTOCOL_NUMBERS = {"tcp": "6", "udp": "17"}
"""OCI names IP protocols by number in security rules."""


def _numbers(port: Port) -> str:
    low, high = port.span
    return f"{low}-{high}" if low != high else str(low)


def _shown_ports(ports: list[Port]) -> str:
    return ", ".join(f"{p.protocol}/{_numbers(p)} from 0.0.0.0/0" for p in ports)


def _plain(message: Any) -> str:
    """An error message as one line of text: a gateway's HTML page (no Oracle JSON) reduced to its words."""
    text = str(message or "")
    if text.lstrip().startswith("<"):
        text = re.sub(r"<[^>]*>", " ", text)
    return " ".join(text.split())[:500]


def _retry_token() -> str:
    """An `opc-retry-token`: Oracle answers a repeated create carrying it with the first result, not a second resource."""
    return secrets.token_hex(16)


def _int_header(headers: Any, name: str) -> int:
    try:
        return int((headers or {}).get(name) or 0)
    except (TypeError, ValueError):
        return 0


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 1 else f"{value:.2f} s"


def _config_problem(exc: Exception) -> str:
    """What the SDK found wrong with a config, in words: its InvalidConfig carries a dict of keys
    and their states ({'region': 'missing'}), its other errors a message."""
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        return "the profile has " + ", ".join(f"{error_words(Exception(key))} {error_words(Exception(state))}"
                                              for key, state in detail.items())
    return error_words(exc)


def _connection_problem(exc: Exception) -> str:
    """The gist of a connection failure (the SDK's own text runs to several hundred characters)."""
    text = str(exc)
    for needle, gist in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("Name or service not known", "host name not found"), ("nodename nor servname", "host name not found"),
                         ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"), ("Connection reset", "connection reset")):
        if needle in text:
            return gist
    return error_words(exc)  # shortened and escaped; words even when the exception has no message


def describe_launch(shape: str, ocpus: int | None, memory_gb: int | None, ad: str, image_id: str, subnet_id: str) -> str:
    size = f", ocpus={ocpus}, memory_gb={memory_gb}" if ocpus else ""
    return f"compute.launch_instance(shape={shape}{size}, ad={ad}, image={image_id}, subnet={subnet_id}, public_ip=true, user_data=cloud-init)"


class DryRunCloud:
    """Contacts nothing: logs each call and answers with placeholders, as if the tenancy were empty."""

    INSTANCE_ID = "ocid1.instance.dryrun"
    ADDRESS = "203.0.113.10"

    def __init__(self, log_call: LogCall, tenancy: str = "ocid1.tenancy.oc1..dryrun") -> None:
        self._log_call = log_call
        self.tenancy = tenancy
        self.endpoint = endpoint_override()

    @classmethod
    def for_config(cls, config_path: str, profile: str, log_call: LogCall) -> DryRunCloud:
        tenancy = config_value(config_path, profile, "tenancy") or "ocid1.tenancy.oc1..dryrun"
        return cls(log_call, tenancy)

    def bind(self, log_call: LogCall, notify: Notify | None = None) -> DryRunCloud:
        """The same placeholders, announcing calls through another stage's log."""
        other = copy.copy(self)
        other._log_call = log_call
        return other

    def _ns(self, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(**kwargs)

    async def list_availability_domains(self, compartment_id: str) -> list[str]:
        self._log_call(f"identity.list_availability_domains(compartment={compartment_id})")
        return ["DRYRUN:AD-1", "DRYRUN:AD-2", "DRYRUN:AD-3"]

    async def get_vcn(self, vcn_id: str) -> Any:
        self._log_call(f"network.get_vcn({vcn_id})")
        return self._ns(id=vcn_id, lifecycle_state="AVAILABLE", display_name=VCN_NAME,
                        default_route_table_id="ocid1.routetable.dryrun", default_security_list_id="ocid1.securitylist.dryrun")

    async def list_vcns(self, compartment_id: str) -> list[Any]:
        self._log_call(f"network.list_vcns(compartment={compartment_id})")
        return []

    async def create_vcn(self, compartment_id: str, cidr: str, name: str, dns_label: str) -> Any:
        self._log_call(f"network.create_vcn(name={name}, cidr={cidr})")
        return self._ns(id="ocid1.vcn.dryrun", lifecycle_state="AVAILABLE", display_name=name,
                        default_route_table_id="ocid1.routetable.dryrun", default_security_list_id="ocid1.securitylist.dryrun")

    async def list_internet_gateways(self, compartment_id: str, vcn_id: str) -> list[Any]:
        self._log_call(f"network.list_internet_gateways(vcn={vcn_id})")
        return []

    async def create_internet_gateway(self, compartment_id: str, vcn_id: str, name: str) -> Any:
        self._log_call(f"network.create_internet_gateway(name={name}, vcn={vcn_id})")
        return self._ns(id="ocid1.internetgateway.dryrun", lifecycle_state="AVAILABLE", is_enabled=True)

    async def get_internet_gateway(self, igw_id: str) -> Any:
        self._log_call(f"network.get_internet_gateway({igw_id})")
        return self._ns(id=igw_id, lifecycle_state="AVAILABLE", is_enabled=True)

    async def get_route_table(self, rt_id: str) -> Any:
        self._log_call(f"network.get_route_table({rt_id})")
        return self._ns(id=rt_id, route_rules=[])

    async def add_route_rules(self, rt_id: str, existing: list[Any], new: list[RouteRule]) -> Any:
        shown = ", ".join(f"{r.destination} -> {r.network_entity_id}" for r in new)
        self._log_call(f"network.update_route_table({rt_id}, add {shown})")
        return self._ns(id=rt_id, route_rules=list(existing) + list(new))

    async def get_subnet(self, subnet_id: str) -> Any:
        self._log_call(f"network.get_subnet({subnet_id})")
        return self._ns(id=subnet_id, vcn_id="ocid1.vcn.dryrun", lifecycle_state="AVAILABLE", prohibit_public_ip_on_vnic=False,
                        route_table_id="ocid1.routetable.dryrun", security_list_ids=["ocid1.securitylist.dryrun"], display_name=SUBNET_NAME)

    async def list_subnets(self, compartment_id: str, vcn_id: str) -> list[Any]:
        self._log_call(f"network.list_subnets(vcn={vcn_id})")
        return []

    async def create_subnet(self, compartment_id: str, vcn_id: str, cidr: str, name: str, dns_label: str,
                            route_table_id: str, security_list_ids: list[str]) -> Any:
        self._log_call(f"network.create_subnet(name={name}, cidr={cidr}, public)")
        return self._ns(id="ocid1.subnet.dryrun", vcn_id=vcn_id, lifecycle_state="AVAILABLE", prohibit_public_ip_on_vnic=False,
                        route_table_id=route_table_id, security_list_ids=security_list_ids, display_name=name)

    async def get_security_list(self, sl_id: str) -> tuple[Any, str]:
        self._log_call(f"network.get_security_list({sl_id})")
        return self._ns(id=sl_id, ingress_security_rules=[]), "dryrun-etag"

    async def add_ingress_rules(self, sl_id: str, existing: list[Any], ports: list[Port], etag: str,
                                source: str = "0.0.0.0/0") -> Any:
        self._log_call(f"network.update_security_list({sl_id}, add ingress {_shown_ports(ports)}"
                       f"{'' if source == '0.0.0.0/0' else ' from ' + source}, if_match=etag)")
        return self._ns(id=sl_id)

    async def get_vnic(self, vnic_id: str) -> Any:
        self._log_call(f"network.get_vnic({vnic_id})")
        return self._ns(id=vnic_id, public_ip=self.ADDRESS, private_ip="10.0.0.2", is_primary=True)

    async def list_shapes(self, compartment_id: str, availability_domain: str) -> list[Any]:
        """As a fresh Always Free tenancy might answer: every AD offers the usual shapes."""
        self._log_call(f"compute.list_shapes(ad={availability_domain})")
        return [self._ns(shape=name, billing_type=billing) for name, billing in (
            ("VM.Standard.A1.Flex", "LIMITED_FREE"), ("VM.Standard.E2.1.Micro", "ALWAYS_FREE"), ("VM.Standard.E4.Flex", "PAID"))]

    async def list_images(self, compartment_id: str, version: str, shape: str) -> list[Any]:
        self._log_call(f'compute.list_images(os="Canonical Ubuntu", version={version}, shape={shape})')
        arch = "-aarch64" if "A1" in shape else ""
        return [self._ns(id="ocid1.image.dryrun", display_name=f"Canonical-Ubuntu-{version}{arch}-2000.01.01-0",
                         time_created=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc), lifecycle_state="AVAILABLE")]

    async def list_instances(self, compartment_id: str, display_name: str) -> list[Any]:
        self._log_call(f"compute.list_instances(name={display_name})")
        return []

    async def launch_instance(self, *, compartment_id: str, availability_domain: str, name: str, shape: str,
                              ocpus: int | None, memory_gb: int | None, image_id: str, subnet_id: str,
                              ssh_public_key: str, user_data_b64: str) -> Any:
        self._log_call(describe_launch(shape, ocpus, memory_gb, availability_domain, image_id, subnet_id))
        return self._ns(id=self.INSTANCE_ID, lifecycle_state="PROVISIONING", availability_domain=availability_domain, display_name=name)

    async def get_instance(self, instance_id: str) -> Any:
        self._log_call(f"compute.get_instance({instance_id})")
        return self._ns(id=instance_id, lifecycle_state="RUNNING", availability_domain="DRYRUN:AD-1", display_name="matrix")

    async def list_vnic_attachments(self, compartment_id: str, instance_id: str) -> list[Any]:
        self._log_call(f"compute.list_vnic_attachments(instance={instance_id})")
        return [self._ns(id="ocid1.vnicattachment.dryrun", vnic_id="ocid1.vnic.dryrun", lifecycle_state="ATTACHED")]

    async def console_history(self, instance_id: str) -> str:
        self._log_call(f"compute.capture_console_history(instance={instance_id})")
        return ""

    async def find_zone(self, compartment_id: str, name: str) -> Any | None:
        self._log_call(f"dns.list_zones(name={name}, type=PRIMARY, scope=GLOBAL)")
        return None

    async def get_rrset(self, zone: Any, domain: str, rtype: str) -> list[Any]:
        self._log_call(f"dns.get_rr_set(zone={zone.name}, {domain} {rtype})")
        return []

    async def set_rrset(self, zone: Any, domain: str, rtype: str, rdatas: list[str], ttl: int) -> None:
        self._log_call(f"dns.update_rr_set(zone={zone.name}, {domain} {ttl} IN {rtype} {' '.join(rdatas)})")


Cloud = OciCloud | DryRunCloud
