"""The Oracle Cloud calls the stages make, behind one small interface with two back-ends.

`OciCloud` talks to the real API through the `oci` SDK: imported lazily (it costs seconds), every
blocking call run in a thread so the event loop and the screen stay live, the SDK's own retries
off (the stages decide what to retry and show it). `DryRunCloud` contacts nothing: it logs each
call and returns placeholders, so `--dry-run` prints the whole cloud plan in order.

Every call is announced through `log_call` (the stage's `ctx.cloud_call`) before it is made;
descriptions never carry secrets (no user data, no keys).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from installer.cloud.config import config_value, endpoint_override

if TYPE_CHECKING:
    from installer.components.base import Port

LogCall = Callable[[str], None]
Notify = Callable[[str], None]
THROTTLE_TRIES = 5

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
        super().__init__(f"{operation}: {status} {code}: {message}" if operation else f"{status} {code}: {message}")

    @property
    def out_of_capacity(self) -> bool:
        return self.status == 500 and "out of host capacity" in self.message.lower()

    @property
    def not_found(self) -> bool:
        return self.status == 404


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

    def __init__(self, oci: Any, config_path: str, profile: str, log_call: LogCall,
                 backoff: tuple[float, float] = (15.0, 240.0)) -> None:
        self._oci = oci
        self._log_call = log_call
        self._notify: Notify = log_call
        self.backoff = backoff
        """(first wait, longest wait) after a 429 TooManyRequests; doubles each time."""
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
    async def open(cls, config_path: str, profile: str, log_call: LogCall, backoff: tuple[float, float] = (15.0, 240.0)) -> OciCloud:
        oci = await load_sdk()
        path = str(Path(config_path).expanduser())
        try:
            return await asyncio.to_thread(cls, oci, path, profile, log_call, backoff)
        except oci.exceptions.ClientError as exc:
            raise CloudError(0, type(exc).__name__, str(exc), "config") from None

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

    async def _call(self, description: str, fn: Callable[..., Any], *args: Any, throttle_retry: bool = True,
                    announce: bool = True, **kwargs: Any) -> Any:
        """Announce and make one call in a thread; a 429 is waited out (doubling) unless the caller handles it."""
        if announce:
            self._log_call(description)
        operation = description.split("(")[0]
        tries = THROTTLE_TRIES if throttle_retry else 1
        for attempt in range(1, tries + 1):
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except self._oci.exceptions.ServiceError as exc:
                error = CloudError(exc.status, exc.code, exc.message, operation, exc.request_id)
            except Exception as exc:  # requests/urllib3 connection failures, timeouts
                network = (OSError, self._oci.exceptions.RequestException, self._oci.exceptions.ConnectTimeout)
                if not isinstance(exc, network) and not type(exc).__module__.startswith(("requests", "urllib3", "oci._vendor")):
                    raise
                error = CloudError(0, "ConnectionError", _connection_problem(exc), operation)
            if error.status != 429 or attempt == tries:
                raise error
            delay = min(self.backoff[1], self.backoff[0] * 2 ** (attempt - 1))
            self._notify(f"{operation}: too many requests (429); next try in {delay:.0f} s" if delay >= 1
                         else f"{operation}: too many requests (429); next try in {delay:.2f} s")
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

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
        return (await self._call(f"network.create_vcn(name={name}, cidr={cidr})", self.network.create_vcn, details)).data

    async def list_internet_gateways(self, compartment_id: str, vcn_id: str) -> list[Any]:
        return await self._all(
            f"network.list_internet_gateways(vcn={vcn_id})", self.network.list_internet_gateways, compartment_id, vcn_id=vcn_id
        )

    async def create_internet_gateway(self, compartment_id: str, vcn_id: str, name: str) -> Any:
        details = self.models.CreateInternetGatewayDetails(compartment_id=compartment_id, vcn_id=vcn_id, is_enabled=True, display_name=name)
        return (await self._call(f"network.create_internet_gateway(name={name}, vcn={vcn_id})", self.network.create_internet_gateway, details)).data

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
        return (await self._call(f"network.create_subnet(name={name}, cidr={cidr}, public)", self.network.create_subnet, details)).data

    async def get_security_list(self, sl_id: str) -> tuple[Any, str]:
        response = await self._call(f"network.get_security_list({sl_id})", self.network.get_security_list, sl_id)
        return response.data, response.headers.get("etag", "")

    async def add_ingress_rules(self, sl_id: str, existing: list[Any], ports: list[Port], etag: str) -> Any:
        """PUT the list back with every existing rule kept and one rule per new port (or range)."""
        m = self.models
        new = []
        for port in ports:
            low, high = port.span
            options = {"destination_port_range": m.PortRange(min=low, max=high)}
            new.append(m.IngressSecurityRule(
                protocol=PROTOCOL_NUMBERS[port.protocol], source="0.0.0.0/0", source_type="CIDR_BLOCK", is_stateless=False,
                tcp_options=m.TcpOptions(**options) if port.protocol == "tcp" else None,
                udp_options=m.UdpOptions(**options) if port.protocol == "udp" else None,
                description=f"matrix-installer: {port.protocol.upper()} {_numbers(port)}",
            ))
        details = m.UpdateSecurityListDetails(ingress_security_rules=list(existing) + new)
        return (await self._call(
            f"network.update_security_list({sl_id}, add ingress {_shown_ports(ports)}, if_match=etag)",
            self.network.update_security_list, sl_id, details, if_match=etag,
        )).data

    async def get_vnic(self, vnic_id: str) -> Any:
        return (await self._call(f"network.get_vnic({vnic_id})", self.network.get_vnic, vnic_id)).data

    # --- compute ------------------------------------------------------------------------
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
        return (await self._call(describe_launch(shape, ocpus, memory_gb, availability_domain, image_id, subnet_id),
                                 self.compute.launch_instance, details, throttle_retry=False)).data

    async def get_instance(self, instance_id: str) -> Any:
        return (await self._call(f"compute.get_instance({instance_id})", self.compute.get_instance, instance_id)).data

    async def list_vnic_attachments(self, compartment_id: str, instance_id: str) -> list[Any]:
        return await self._all(
            f"compute.list_vnic_attachments(instance={instance_id})",
            self.compute.list_vnic_attachments, compartment_id, instance_id=instance_id,
        )

    async def console_history(self, instance_id: str) -> str:
        """The serial console's recent output (cloud-init prints the host keys there)."""
        details = self.models.CaptureConsoleHistoryDetails(instance_id=instance_id)
        history = (await self._call(f"compute.capture_console_history(instance={instance_id})",
                                    self.compute.capture_console_history, details)).data
        for _ in range(30):  # the capture is asynchronous: REQUESTED, GETTING-HISTORY, SUCCEEDED
            if history.lifecycle_state in ("SUCCEEDED", "FAILED"):
                break
            await asyncio.sleep(1)
            history = (await self._call(f"compute.get_console_history({history.id})",
                                        self.compute.get_console_history, history.id)).data
        if history.lifecycle_state != "SUCCEEDED":
            raise CloudError(0, "ConsoleHistory", f"the console history capture ended {history.lifecycle_state}", "compute.capture_console_history")
        content = await self._call(f"compute.get_console_history_content({history.id})",
                                   self.compute.get_console_history_content, history.id)
        data = content.data
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    # --- dns ----------------------------------------------------------------------------
    async def find_zone(self, compartment_id: str, name: str) -> Any | None:
        zones = await self._all(
            f"dns.list_zones(name={name}, type=PRIMARY)", self.dns.list_zones, compartment_id, name=name, zone_type="PRIMARY"
        )
        return zones[0] if zones else None

    async def get_rrset(self, zone: str, domain: str, rtype: str) -> list[Any]:
        try:
            response = await self._call(f"dns.get_rr_set(zone={zone}, {domain} {rtype})", self.dns.get_rr_set, zone, domain, rtype)
        except CloudError as exc:
            if exc.not_found:
                return []
            raise
        return list(response.data.items or [])

    async def set_rrset(self, zone: str, domain: str, rtype: str, rdatas: list[str], ttl: int) -> None:
        dm = self._oci.dns.models
        items = [dm.RecordDetails(domain=domain, rtype=rtype, rdata=r, ttl=ttl) for r in rdatas]
        await self._call(
            f"dns.update_rr_set(zone={zone}, {domain} {ttl} IN {rtype} {' '.join(rdatas)})",
            self.dns.update_rr_set, zone, domain, rtype, dm.UpdateRRSetDetails(items=items),
        )


PROTOCOL_NUMBERS = {"tcp": "6", "udp": "17"}
"""OCI names IP protocols by number in security rules."""


def _numbers(port: Port) -> str:
    low, high = port.span
    return f"{low}-{high}" if low != high else str(low)


def _shown_ports(ports: list[Port]) -> str:
    return ", ".join(f"{p.protocol}/{_numbers(p)} from 0.0.0.0/0" for p in ports)


def _connection_problem(exc: Exception) -> str:
    """The gist of a connection failure (the SDK's own text runs to several hundred characters)."""
    text = str(exc)
    for needle, gist in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("Name or service not known", "host name not found"), ("nodename nor servname", "host name not found"),
                         ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"), ("Connection reset", "connection reset")):
        if needle in text:
            return gist
    return text[:200]


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

    async def add_ingress_rules(self, sl_id: str, existing: list[Any], ports: list[Port], etag: str) -> Any:
        self._log_call(f"network.update_security_list({sl_id}, add ingress {_shown_ports(ports)}, if_match=etag)")
        return self._ns(id=sl_id)

    async def get_vnic(self, vnic_id: str) -> Any:
        self._log_call(f"network.get_vnic({vnic_id})")
        return self._ns(id=vnic_id, public_ip=self.ADDRESS, private_ip="10.0.0.2", is_primary=True)

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
        self._log_call(f"dns.list_zones(name={name}, type=PRIMARY)")
        return None

    async def get_rrset(self, zone: str, domain: str, rtype: str) -> list[Any]:
        self._log_call(f"dns.get_rr_set(zone={zone}, {domain} {rtype})")
        return []

    async def set_rrset(self, zone: str, domain: str, rtype: str, rdatas: list[str], ttl: int) -> None:
        self._log_call(f"dns.update_rr_set(zone={zone}, {domain} {ttl} IN {rtype} {' '.join(rdatas)})")


Cloud = OciCloud | DryRunCloud
