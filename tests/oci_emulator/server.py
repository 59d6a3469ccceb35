"""A local Oracle Cloud API emulator that the real `oci` SDK talks to through `service_endpoint`.

It implements the routes matrix-installer uses, the way Oracle's API answers them: camelCase
JSON, `opc-request-id` on every response, paging with `opc-next-page`, etags with `if-match`
(412 on a mismatch), lifecycle states that advance as they are polled, and request signatures
verified against the API key's public half (401 NotAuthenticated otherwise). Faults can be
injected per operation: `emulator.inject("launch_instance", 500, "InternalError",
"Out of host capacity.", times=3, availabilityDomain="Uocm:PHX-AD-1")`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import email.utils
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

CORE = "/20160918"
DNS = "/20180115"
NOT_FOUND = "Authorization failed or requested resource not found."
NOT_AUTHENTICATED = "The required information to complete authentication was not provided or was incorrect."
CLOCK_SKEW = 300


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Fault:
    op: str
    status: int
    code: str
    message: str
    times: int
    match: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    op: str
    status: int


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ocid(kind: str, region: str = "phx") -> str:
    return f"ocid1.{kind}.oc1.{region}.emu{uuid.uuid4().hex[:24]}"


def _default_images() -> list[dict[str, Any]]:
    """What a region offers, enough to tell newest, architecture, version and flavour apart."""
    rows = [
        ("Canonical Ubuntu", "24.04", "Canonical-Ubuntu-24.04-aarch64-2024.10.08-0", "2024-10-10T01:00:00.000Z"),
        ("Canonical Ubuntu", "24.04", "Canonical-Ubuntu-24.04-aarch64-2024.09.20-0", "2024-09-22T01:00:00.000Z"),
        ("Canonical Ubuntu", "24.04", "Canonical-Ubuntu-24.04-Minimal-aarch64-2024.11.01-0", "2024-11-02T01:00:00.000Z"),
        ("Canonical Ubuntu", "24.04", "Canonical-Ubuntu-24.04-2024.10.08-0", "2024-10-10T02:00:00.000Z"),
        ("Canonical Ubuntu", "24.04", "Canonical-Ubuntu-24.04-2024.09.20-0", "2024-09-22T02:00:00.000Z"),
        ("Canonical Ubuntu", "22.04", "Canonical-Ubuntu-22.04-aarch64-2024.10.01-0", "2024-10-03T01:00:00.000Z"),
        ("Canonical Ubuntu", "22.04", "Canonical-Ubuntu-22.04-2024.10.01-0", "2024-10-03T02:00:00.000Z"),
        ("Oracle Linux", "9", "Oracle-Linux-9.4-aarch64-2024.09.30-0", "2024-10-01T01:00:00.000Z"),
    ]
    return [
        {"id": _ocid("image"), "displayName": name, "operatingSystem": os_, "operatingSystemVersion": version,
         "lifecycleState": "AVAILABLE", "timeCreated": created, "compartmentId": None, "createImageAllowed": True,
         "launchMode": "PARAVIRTUALIZED", "sizeInMBs": 47694, "billableSizeInGBs": 1, "listingType": "NONE"}
        for os_, version, name, created in rows
    ]


def _is_arm_image(image: dict[str, Any]) -> bool:
    return "aarch64" in image["displayName"]


def _is_arm_shape(shape: str) -> bool:
    return ".A1." in shape or ".A2." in shape


KNOWN_SHAPES = ("VM.Standard.A1.Flex", "VM.Standard.E2.1.Micro", "VM.Standard.E4.Flex")


class Emulator:
    """The API's state and behaviour; `Server` puts it on a socket."""

    def __init__(self, *, tenancy: str, keys: dict[str, Any], region: str = "us-phoenix-1",
                 ads: tuple[str, ...] = ("Uocm:PHX-AD-1", "Uocm:PHX-AD-2", "Uocm:PHX-AD-3"),
                 page_size: int = 2, provision_polls: int = 2, public_ip_prefix: str = "129.146.7.",
                 public_ip: str | None = None) -> None:
        self.tenancy = tenancy
        self.keys = keys
        self.region = region
        self.ads = list(ads)
        self.page_size = page_size
        self.provision_polls = provision_polls
        self.public_ip_prefix = public_ip_prefix
        self.public_ip = public_ip
        """Every instance gets this address when set (a lab host on 127.0.0.1); else PREFIX<n>."""
        self.on_launch: Callable[[dict[str, Any], str | None], None] | None = None
        """Called (under the lock) with each launched instance and its cloud-init text: a lab can
        install the host key from `ssh_keys` into its sshd, as cloud-init would."""
        self.lock = threading.RLock()
        self.store: dict[str, dict[str, dict[str, Any]]] = {
            kind: {} for kind in ("vcns", "subnets", "internetGateways", "routeTables", "securityLists", "instances",
                                  "vnicAttachments", "vnics", "zones", "consoleHistories", "dhcpOptions")
        }
        self.images = _default_images()
        self.rrsets: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.etags: dict[str, str] = {}
        self.polls: dict[str, int] = {}
        self.requests: list[Logged] = []
        self.faults: list[Fault] = []
        self.hooks: list[tuple[str, Callable[[Emulator], None], list[int]]] = []
        self.user_data: dict[str, str] = {}
        self._ips = 10
        self.routes = self._routes()

    # --- test controls ------------------------------------------------------------------
    def inject(self, op: str, status: int = 500, code: str = "InternalError", message: str = "Internal error",
               times: int = 1, **match: Any) -> Fault:
        """Fail the next `times` calls of `op` (an SDK operation name) whose body/query match `match`."""
        fault = Fault(op, status, code, message, times, match)
        with self.lock:
            self.faults.append(fault)
        return fault

    def inject_capacity(self, ad: str, times: int) -> Fault:
        return self.inject("launch_instance", 500, "InternalError", "Out of host capacity.", times, availabilityDomain=ad)

    def after(self, op: str, action: Callable[[Emulator], None], times: int = 1) -> None:
        """Run `action` right after the next `times` successful calls of `op` (a concurrent change)."""
        with self.lock:
            self.hooks.append((op, action, [times]))

    def count(self, method: str | None = None, op: str | None = None, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if (method is None or r.method == method) and (op is None or r.op == op)
                       and (status is None or r.status == status))

    def ops(self) -> list[str]:
        with self.lock:
            return [r.op for r in self.requests]

    def instances(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(i) for i in self.store["instances"].values()]

    def security_list(self, sl_id: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.store["securityLists"][sl_id])

    def add_zone(self, name: str, compartment: str | None = None) -> dict[str, Any]:
        zone = {"id": _ocid("dns-zone"), "name": name, "zoneType": "PRIMARY", "compartmentId": compartment or self.tenancy,
                "scope": "GLOBAL", "self": f"https://dns.{self.region}.oraclecloud.com{DNS}/zones/{name}",
                "timeCreated": _now(), "version": "1", "serial": 1, "lifecycleState": "ACTIVE", "isProtected": False,
                "resolutionMode": "STATIC", "dnssecState": "DISABLED",
                "nameservers": [{"hostname": f"ns{i}.p68.dns.oraclecloud.net"} for i in (1, 2)],
                "externalMasters": [], "externalDownstreams": [], "zoneTransferServers": []}
        with self.lock:
            self.store["zones"][zone["id"]] = zone
        return zone

    def rrset(self, zone: str, domain: str, rtype: str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.rrsets.get((zone, domain, rtype), []))

    def set_instance_state(self, instance_id: str, state: str) -> None:
        with self.lock:
            self.store["instances"][instance_id]["lifecycleState"] = state

    def add_network(self, *, public: bool = True, name: str = "user-vcn", extra_ingress: list[dict[str, Any]] | None = None) -> dict[str, str]:
        """Seed a VCN with a subnet the way a user's console wizard would leave it."""
        vcn = self._create_vcn({"compartmentId": self.tenancy, "cidrBlocks": ["10.1.0.0/16"], "displayName": name, "dnsLabel": "user"})
        rules = self.store["routeTables"][vcn["defaultRouteTableId"]]["routeRules"]
        ids = {"vcn": vcn["id"], "routeTable": vcn["defaultRouteTableId"], "securityList": vcn["defaultSecurityListId"]}
        if public:
            igw = self._create_igw({"compartmentId": self.tenancy, "vcnId": vcn["id"], "isEnabled": True, "displayName": "igw"})
            rules.append({"destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK", "networkEntityId": igw["id"], "description": None, "routeType": "STATIC"})
            ids["internetGateway"] = igw["id"]
        if extra_ingress:
            self.store["securityLists"][vcn["defaultSecurityListId"]]["ingressSecurityRules"].extend(extra_ingress)
            self._bump(vcn["defaultSecurityListId"])
        subnet = self._create_subnet({"compartmentId": self.tenancy, "vcnId": vcn["id"], "cidrBlock": "10.1.0.0/24",
                                      "displayName": "user-subnet", "prohibitPublicIpOnVnic": not public,
                                      "routeTableId": vcn["defaultRouteTableId"], "securityListIds": [vcn["defaultSecurityListId"]]})
        ids["subnet"] = subnet["id"]
        return ids

    # --- the HTTP side --------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        request_id = uuid.uuid4().hex.upper()
        out_headers = {"opc-request-id": request_id, "content-type": "application/json"}
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        op = "unknown"
        try:
            handler, params, op = self._route(method, path)
            self._verify_signature(method, target, headers, body)
            data = json.loads(body) if body else {}
            self._apply_faults(op, data, query, params)
            with self.lock:
                reply = handler(params=params, query=query, body=data, headers=headers)
                self._run_hooks(op)
        except ApiError as exc:
            reply = Reply(exc.status, {"code": exc.code, "message": exc.message})
        except (ValueError, KeyError, TypeError) as exc:
            reply = Reply(400, {"code": "InvalidParameter", "message": f"Invalid request: {exc}"})
        with self.lock:
            self.requests.append(Logged(method, path, op, reply.status))
        out_headers.update(reply.headers)
        if reply.text is not None:
            out_headers["content-type"] = "text/plain"
            payload = reply.text.encode()
        else:
            payload = json.dumps(reply.body).encode() if reply.body is not None else b""
        return reply.status, out_headers, payload

    def _route(self, method: str, path: str) -> tuple[Callable[..., Reply], dict[str, str], str]:
        for route_method, pattern, op, handler in self.routes:
            m = pattern.fullmatch(path)
            if m and route_method == method:
                return handler, m.groupdict(), op
            if m:
                continue
        raise ApiError(404, "NotAuthorizedOrNotFound", NOT_FOUND)

    def _verify_signature(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        """Oracle's draft-cavage HTTP signature: rebuild the signing string and verify RSA-SHA256."""
        auth = headers.get("authorization", "")
        if not auth.startswith("Signature "):
            raise ApiError(401, "NotAuthenticated", NOT_AUTHENTICATED)
        params = dict(re.findall(r'(\w+)="([^"]*)"', auth))
        key = self.keys.get(params.get("keyId", ""))
        if key is None or params.get("algorithm") != "rsa-sha256":
            raise ApiError(401, "NotAuthenticated", NOT_AUTHENTICATED)
        names = params.get("headers", "date").lower().split()
        required = {"date", "(request-target)", "host"}
        if method in ("POST", "PUT", "PATCH"):
            required |= {"content-length", "content-type", "x-content-sha256"}
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
            if headers.get("x-content-sha256") != digest or headers.get("content-length") != str(len(body)):
                raise ApiError(401, "NotAuthenticated", NOT_AUTHENTICATED)
        if not required <= set(names):
            raise ApiError(401, "NotAuthenticated", NOT_AUTHENTICATED)
        lines = []
        for name in names:
            if name == "(request-target)":
                lines.append(f"(request-target): {method.lower()} {target}")
            elif name in headers:
                lines.append(f"{name}: {headers[name]}")
            else:
                raise ApiError(401, "NotAuthenticated", NOT_AUTHENTICATED)
        try:
            key.verify(base64.b64decode(params.get("signature", "")), "\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise ApiError(401, "NotAuthenticated", NOT_AUTHENTICATED) from None
        try:
            sent = email.utils.parsedate_to_datetime(headers["date"])
        except (TypeError, ValueError):
            raise ApiError(401, "NotAuthenticated", NOT_AUTHENTICATED) from None
        if abs((dt.datetime.now(dt.timezone.utc) - sent).total_seconds()) > CLOCK_SKEW:
            raise ApiError(401, "NotAuthenticated", "The request date is too far from the server's clock.")

    def _apply_faults(self, op: str, body: dict[str, Any], query: dict[str, str], params: dict[str, str]) -> None:
        with self.lock:
            for fault in self.faults:
                if fault.op != op or fault.times <= 0:
                    continue
                seen = {**query, **params, **(body if isinstance(body, dict) else {})}
                if all(seen.get(k) == v for k, v in fault.match.items()):
                    fault.times -= 1
                    raise ApiError(fault.status, fault.code, fault.message)

    def _run_hooks(self, op: str) -> None:
        for hook_op, action, left in self.hooks:
            if hook_op == op and left[0] > 0:
                left[0] -= 1
                action(self)

    # --- helpers --------------------------------------------------------------------------
    def _get(self, kind: str, rid: str) -> dict[str, Any]:
        item = self.store[kind].get(rid)
        if item is None:
            raise ApiError(404, "NotAuthorizedOrNotFound", NOT_FOUND)
        return item

    def _need(self, data: dict[str, Any], *keys: str) -> None:
        for key in keys:
            if data.get(key) in (None, "", []):
                raise ApiError(400, "MissingParameter", f"Missing parameter: {key}")

    def _compartment(self, query: dict[str, str]) -> str:
        if not query.get("compartmentId"):
            raise ApiError(400, "MissingParameter", "compartmentId is required")
        return query["compartmentId"]

    def _page(self, items: list[dict[str, Any]], query: dict[str, str]) -> Reply:
        limit = min(int(query.get("limit") or self.page_size), self.page_size)
        start = int(query.get("page") or 0)
        chunk = items[start : start + limit]
        headers = {"opc-next-page": str(start + limit)} if start + limit < len(items) else {}
        return Reply(200, copy.deepcopy(chunk), headers)

    def _bump(self, rid: str) -> str:
        self.etags[rid] = uuid.uuid4().hex
        return self.etags[rid]

    def _filter(self, kind: str, query: dict[str, str], **fields: str) -> list[dict[str, Any]]:
        compartment = self._compartment(query)
        out = []
        for item in self.store[kind].values():
            if item.get("compartmentId") != compartment:
                continue
            if any(query.get(q) and item.get(f) != query[q] for q, f in fields.items()):
                continue
            out.append(item)
        return out

    # --- identity -------------------------------------------------------------------------
    def list_availability_domains(self, query: dict[str, str], **_: Any) -> Reply:
        compartment = self._compartment(query)
        return Reply(200, [{"name": ad, "id": _ocid("availabilitydomain"), "compartmentId": compartment} for ad in self.ads])

    # --- network --------------------------------------------------------------------------
    def _create_vcn(self, body: dict[str, Any]) -> dict[str, Any]:
        self._need(body, "compartmentId")
        cidrs = body.get("cidrBlocks") or ([body["cidrBlock"]] if body.get("cidrBlock") else None)
        if not cidrs:
            raise ApiError(400, "MissingParameter", "cidrBlocks is required")
        vcn_id = _ocid("vcn")
        rt = {"id": _ocid("routetable"), "compartmentId": body["compartmentId"], "vcnId": vcn_id, "lifecycleState": "AVAILABLE",
              "displayName": f"Default Route Table for {body.get('displayName')}", "routeRules": [], "timeCreated": _now()}
        sl = {"id": _ocid("securitylist"), "compartmentId": body["compartmentId"], "vcnId": vcn_id, "lifecycleState": "AVAILABLE",
              "displayName": f"Default Security List for {body.get('displayName')}", "timeCreated": _now(),
              "ingressSecurityRules": [
                  {"protocol": "6", "source": "0.0.0.0/0", "sourceType": "CIDR_BLOCK", "isStateless": False,
                   "tcpOptions": {"destinationPortRange": {"min": 22, "max": 22}}},
                  {"protocol": "1", "source": "0.0.0.0/0", "sourceType": "CIDR_BLOCK", "isStateless": False,
                   "icmpOptions": {"type": 3, "code": 4}},
                  {"protocol": "1", "source": cidrs[0], "sourceType": "CIDR_BLOCK", "isStateless": False, "icmpOptions": {"type": 3}},
              ],
              "egressSecurityRules": [{"protocol": "all", "destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK", "isStateless": False}]}
        vcn = {"id": vcn_id, "compartmentId": body["compartmentId"], "cidrBlock": cidrs[0], "cidrBlocks": cidrs,
               "displayName": body.get("displayName") or "vcn", "dnsLabel": body.get("dnsLabel"), "lifecycleState": "AVAILABLE",
               "defaultRouteTableId": rt["id"], "defaultSecurityListId": sl["id"], "defaultDhcpOptionsId": _ocid("dhcpoptions"),
               "timeCreated": _now(), "vcnDomainName": f"{body.get('dnsLabel')}.oraclevcn.com", "freeformTags": body.get("freeformTags") or {}}
        self.store["vcns"][vcn_id] = vcn
        self.store["routeTables"][rt["id"]] = rt
        self.store["securityLists"][sl["id"]] = sl
        self._bump(sl["id"])
        self._bump(rt["id"])
        return vcn

    def create_vcn(self, body: dict[str, Any], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._create_vcn(body)))

    def list_vcns(self, query: dict[str, str], **_: Any) -> Reply:
        return self._page(self._filter("vcns", query, displayName="displayName", lifecycleState="lifecycleState"), query)

    def get_vcn(self, params: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._get("vcns", params["id"])))

    def _create_igw(self, body: dict[str, Any]) -> dict[str, Any]:
        self._need(body, "compartmentId", "vcnId")
        self._get("vcns", body["vcnId"])
        igw = {"id": _ocid("internetgateway"), "compartmentId": body["compartmentId"], "vcnId": body["vcnId"],
               "isEnabled": body.get("isEnabled", True), "displayName": body.get("displayName") or "igw",
               "lifecycleState": "AVAILABLE", "timeCreated": _now()}
        self.store["internetGateways"][igw["id"]] = igw
        return igw

    def create_internet_gateway(self, body: dict[str, Any], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._create_igw(body)))

    def list_internet_gateways(self, query: dict[str, str], **_: Any) -> Reply:
        return self._page(self._filter("internetGateways", query, vcnId="vcnId"), query)

    def get_route_table(self, params: dict[str, str], **_: Any) -> Reply:
        rt = self._get("routeTables", params["id"])
        return Reply(200, copy.deepcopy(rt), {"etag": self.etags[rt["id"]]})

    def update_route_table(self, params: dict[str, str], body: dict[str, Any], headers: dict[str, str], **_: Any) -> Reply:
        rt = self._get("routeTables", params["id"])
        self._check_etag(rt["id"], headers)
        if "routeRules" in body:
            for rule in body["routeRules"]:
                self._need(rule, "networkEntityId")
                target = rule["networkEntityId"]
                if not any(target in self.store[k] for k in ("internetGateways",)):
                    raise ApiError(400, "InvalidParameter", f"Route target {target} not found")
            rt["routeRules"] = body["routeRules"]
        return Reply(200, copy.deepcopy(rt), {"etag": self._bump(rt["id"])})

    def _create_subnet(self, body: dict[str, Any]) -> dict[str, Any]:
        self._need(body, "compartmentId", "vcnId", "cidrBlock")
        vcn = self._get("vcns", body["vcnId"])
        subnet = {"id": _ocid("subnet"), "compartmentId": body["compartmentId"], "vcnId": vcn["id"], "cidrBlock": body["cidrBlock"],
                  "displayName": body.get("displayName") or "subnet", "dnsLabel": body.get("dnsLabel"),
                  "prohibitPublicIpOnVnic": bool(body.get("prohibitPublicIpOnVnic", False)),
                  "prohibitInternetIngress": bool(body.get("prohibitPublicIpOnVnic", False)),
                  "routeTableId": body.get("routeTableId") or vcn["defaultRouteTableId"],
                  "securityListIds": body.get("securityListIds") or [vcn["defaultSecurityListId"]],
                  "dhcpOptionsId": vcn["defaultDhcpOptionsId"], "lifecycleState": "AVAILABLE", "timeCreated": _now(),
                  "virtualRouterIp": "10.0.0.1", "virtualRouterMac": "00:00:17:00:00:01"}
        for sl in subnet["securityListIds"]:
            self._get("securityLists", sl)
        self.store["subnets"][subnet["id"]] = subnet
        return subnet

    def create_subnet(self, body: dict[str, Any], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._create_subnet(body)))

    def list_subnets(self, query: dict[str, str], **_: Any) -> Reply:
        return self._page(self._filter("subnets", query, vcnId="vcnId"), query)

    def get_subnet(self, params: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._get("subnets", params["id"])))

    def _check_etag(self, rid: str, headers: dict[str, str]) -> None:
        wanted = headers.get("if-match")
        if wanted and wanted != self.etags.get(rid):
            raise ApiError(412, "NoEtagMatch", "The resource's etag does not match the value in the if-match header.")

    def get_security_list(self, params: dict[str, str], **_: Any) -> Reply:
        sl = self._get("securityLists", params["id"])
        return Reply(200, copy.deepcopy(sl), {"etag": self.etags[sl["id"]]})

    def update_security_list(self, params: dict[str, str], body: dict[str, Any], headers: dict[str, str], **_: Any) -> Reply:
        sl = self._get("securityLists", params["id"])
        self._check_etag(sl["id"], headers)
        for key in ("ingressSecurityRules", "egressSecurityRules"):
            if key in body and body[key] is not None:
                for rule in body[key]:
                    self._need(rule, "protocol")
                    if key == "ingressSecurityRules":
                        self._need(rule, "source")
                sl[key] = body[key]
        if body.get("displayName"):
            sl["displayName"] = body["displayName"]
        return Reply(200, copy.deepcopy(sl), {"etag": self._bump(sl["id"])})

    def get_vnic(self, params: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._get("vnics", params["id"])))

    # --- compute --------------------------------------------------------------------------
    def list_images(self, query: dict[str, str], **_: Any) -> Reply:
        self._compartment(query)
        items = [i for i in self.images
                 if (not query.get("operatingSystem") or i["operatingSystem"] == query["operatingSystem"])
                 and (not query.get("operatingSystemVersion") or i["operatingSystemVersion"] == query["operatingSystemVersion"])
                 and (not query.get("lifecycleState") or i["lifecycleState"] == query["lifecycleState"])
                 and (not query.get("shape") or _is_arm_image(i) == _is_arm_shape(query["shape"]))]
        key = "timeCreated" if query.get("sortBy", "TIMECREATED") == "TIMECREATED" else "displayName"
        items.sort(key=lambda i: i[key], reverse=query.get("sortOrder", "DESC") == "DESC")
        return self._page(items, query)

    def launch_instance(self, body: dict[str, Any], **_: Any) -> Reply:
        self._need(body, "compartmentId", "availabilityDomain", "shape")
        if body["availabilityDomain"] not in self.ads:
            raise ApiError(400, "InvalidParameter", f"Invalid availabilityDomain {body['availabilityDomain']}")
        shape = body["shape"]
        if shape not in KNOWN_SHAPES:
            raise ApiError(400, "InvalidParameter", f"Shape {shape} not found")
        source = body.get("sourceDetails") or {}
        image_id = source.get("imageId") or body.get("imageId")
        image = next((i for i in self.images if i["id"] == image_id), None)
        if image is None:
            raise ApiError(404, "NotAuthorizedOrNotFound", NOT_FOUND)
        if _is_arm_image(image) != _is_arm_shape(shape):
            raise ApiError(400, "InvalidParameter", f"Shape {shape} is not valid for image {image_id}.")
        config = body.get("shapeConfig") or {}
        if shape.endswith(".Flex") and not (config.get("ocpus") and config.get("memoryInGBs")):
            raise ApiError(400, "InvalidParameter", "Flex shapes require shapeConfig with ocpus and memoryInGBs.")
        vnic_details = body.get("createVnicDetails") or {}
        subnet = self._get("subnets", vnic_details.get("subnetId") or body.get("subnetId") or "")
        metadata = body.get("metadata") or {}
        if not metadata.get("ssh_authorized_keys"):
            raise ApiError(400, "InvalidParameter", "metadata.ssh_authorized_keys is required for Linux images here.")
        user_data = base64.b64decode(metadata["user_data"], validate=True).decode() if "user_data" in metadata else None
        instance = {"id": _ocid("instance"), "compartmentId": body["compartmentId"], "availabilityDomain": body["availabilityDomain"],
                    "displayName": body.get("displayName") or "instance", "shape": shape, "region": self.region,
                    "lifecycleState": "PROVISIONING", "timeCreated": _now(), "imageId": image_id, "faultDomain": "FAULT-DOMAIN-1",
                    "shapeConfig": {"ocpus": config.get("ocpus", 1), "memoryInGBs": config.get("memoryInGBs", 1)} if config else None,
                    "sourceDetails": {"sourceType": "image", "imageId": image_id},
                    "metadata": metadata, "freeformTags": body.get("freeformTags") or {}, "launchMode": "PARAVIRTUALIZED"}
        self.store["instances"][instance["id"]] = instance
        if user_data is not None:
            self.user_data[instance["id"]] = user_data
        self._ips += 1
        public = None if subnet["prohibitPublicIpOnVnic"] or vnic_details.get("assignPublicIp") is False \
            else self.public_ip or f"{self.public_ip_prefix}{self._ips}"
        vnic = {"id": _ocid("vnic"), "compartmentId": body["compartmentId"], "availabilityDomain": body["availabilityDomain"],
                "subnetId": subnet["id"], "isPrimary": True, "privateIp": f"10.0.0.{self._ips}", "publicIp": public,
                "lifecycleState": "PROVISIONING", "timeCreated": _now(), "macAddress": "02:00:17:00:00:01", "hostnameLabel": "matrix"}
        attachment = {"id": _ocid("vnicattachment"), "compartmentId": body["compartmentId"], "instanceId": instance["id"],
                      "availabilityDomain": body["availabilityDomain"], "subnetId": subnet["id"], "vnicId": vnic["id"],
                      "lifecycleState": "ATTACHING", "nicIndex": 0, "timeCreated": _now()}
        self.store["vnics"][vnic["id"]] = vnic
        self.store["vnicAttachments"][attachment["id"]] = attachment
        self.polls[instance["id"]] = 0
        if self.on_launch is not None:
            self.on_launch(copy.deepcopy(instance), user_data)
        return Reply(200, copy.deepcopy(instance), {"etag": self._bump(instance["id"])})

    def _advance(self, instance: dict[str, Any]) -> None:
        """PROVISIONING -> RUNNING after `provision_polls` reads; the VNIC attaches with it."""
        if instance["lifecycleState"] == "PROVISIONING":
            self.polls[instance["id"]] = self.polls.get(instance["id"], 0) + 1
            if self.polls[instance["id"]] > self.provision_polls:
                instance["lifecycleState"] = "RUNNING"
                for attachment in self.store["vnicAttachments"].values():
                    if attachment["instanceId"] == instance["id"]:
                        attachment["lifecycleState"] = "ATTACHED"
                        self.store["vnics"][attachment["vnicId"]]["lifecycleState"] = "AVAILABLE"

    def get_instance(self, params: dict[str, str], **_: Any) -> Reply:
        instance = self._get("instances", params["id"])
        self._advance(instance)
        return Reply(200, copy.deepcopy(instance), {"etag": self.etags.get(instance["id"], "x")})

    def list_instances(self, query: dict[str, str], **_: Any) -> Reply:
        return self._page(self._filter("instances", query, displayName="displayName", lifecycleState="lifecycleState",
                                       availabilityDomain="availabilityDomain"), query)

    def list_vnic_attachments(self, query: dict[str, str], **_: Any) -> Reply:
        return self._page(self._filter("vnicAttachments", query, instanceId="instanceId"), query)

    def capture_console_history(self, body: dict[str, Any], **_: Any) -> Reply:
        self._need(body, "instanceId")
        instance = self._get("instances", body["instanceId"])
        history = {"id": _ocid("consolehistory"), "instanceId": instance["id"], "compartmentId": instance["compartmentId"],
                   "availabilityDomain": instance["availabilityDomain"], "lifecycleState": "SUCCEEDED", "timeCreated": _now()}
        self.store["consoleHistories"][history["id"]] = history
        return Reply(200, copy.deepcopy(history))

    def get_console_history(self, params: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._get("consoleHistories", params["id"])))

    def get_console_history_content(self, params: dict[str, str], **_: Any) -> Reply:
        history = self._get("consoleHistories", params["id"])
        text = self.user_data.get(history["instanceId"], "")
        m = re.search(r"^\s*ed25519_public: (\".*\")\s*$", text, re.M)
        lines = ["[    0.000000] Linux version 6.8.0-1013-oracle", "cloud-init: modules-final"]
        if m:
            lines += ["-----BEGIN SSH HOST KEY KEYS-----", f"{json.loads(m.group(1))} root@matrix", "-----END SSH HOST KEY KEYS-----"]
        return Reply(200, text="\n".join(lines) + "\n")

    # --- dns ------------------------------------------------------------------------------
    def _zone(self, name_or_id: str) -> dict[str, Any]:
        for zone in self.store["zones"].values():
            if name_or_id in (zone["id"], zone["name"]):
                return zone
        raise ApiError(404, "NotAuthorizedOrNotFound", NOT_FOUND)

    def list_zones(self, query: dict[str, str], **_: Any) -> Reply:
        items = [z for z in self._filter("zones", query, name="name", zoneType="zoneType", lifecycleState="lifecycleState")]
        return self._page(items, query)

    def get_zone(self, params: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._zone(params["zone"])))

    def _record(self, zone: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        self._need(item, "domain", "rtype", "rdata", "ttl")
        domain = item["domain"].rstrip(".").lower()
        if domain != zone["name"] and not domain.endswith("." + zone["name"]):
            raise ApiError(400, "InvalidParameter", f"Domain {domain} is not in zone {zone['name']}")
        return {"domain": domain, "rtype": item["rtype"], "rdata": item["rdata"], "ttl": int(item["ttl"]),
                "recordHash": hashlib.md5(f"{domain}{item['rtype']}{item['rdata']}".encode()).hexdigest(),
                "isProtected": False, "rrsetVersion": str(int(zone["version"]) + 1)}

    def get_rr_set(self, params: dict[str, str], **_: Any) -> Reply:
        zone = self._zone(params["zone"])
        items = self.rrsets.get((zone["name"], params["domain"].lower(), params["rtype"]), [])
        return Reply(200, {"items": copy.deepcopy(items)}, {"etag": zone["version"]})

    def update_rr_set(self, params: dict[str, str], body: dict[str, Any], **_: Any) -> Reply:
        zone = self._zone(params["zone"])
        domain, rtype = params["domain"].lower(), params["rtype"]
        items = [self._record(zone, i) for i in body.get("items") or []]
        if any(i["domain"] != domain or i["rtype"] != rtype for i in items):
            raise ApiError(400, "InvalidParameter", "Every record must match the domain and rtype of the path.")
        self.rrsets[(zone["name"], domain, rtype)] = items
        zone["version"] = str(int(zone["version"]) + 1)
        zone["serial"] += 1
        return Reply(200, {"items": copy.deepcopy(items)}, {"etag": zone["version"]})

    def get_zone_records(self, params: dict[str, str], query: dict[str, str], **_: Any) -> Reply:
        zone = self._zone(params["zone"])
        items = [r for (z, _d, _t), rs in sorted(self.rrsets.items()) if z == zone["name"] for r in rs]
        page = self._page(items, query)
        page.body = {"items": page.body}
        return page

    def patch_zone_records(self, params: dict[str, str], body: dict[str, Any], **_: Any) -> Reply:
        zone = self._zone(params["zone"])
        for op in body.get("items") or []:
            record = self._record(zone, op)
            key = (zone["name"], record["domain"], record["rtype"])
            current = self.rrsets.setdefault(key, [])
            if op.get("operation", "ADD") == "ADD":
                if all(r["rdata"] != record["rdata"] for r in current):
                    current.append(record)
            elif op["operation"] == "REMOVE":
                self.rrsets[key] = [r for r in current if r["rdata"] != record["rdata"]]
        zone["version"] = str(int(zone["version"]) + 1)
        return self.get_zone_records(params=params, query={})

    def _routes(self) -> list[tuple[str, re.Pattern[str], str, Callable[..., Reply]]]:
        table = [
            ("GET", CORE + "/availabilityDomains", "list_availability_domains"),
            ("GET", CORE + "/vcns", "list_vcns"),
            ("POST", CORE + "/vcns", "create_vcn"),
            ("GET", CORE + "/vcns/(?P<id>[^/]+)", "get_vcn"),
            ("GET", CORE + "/internetGateways", "list_internet_gateways"),
            ("POST", CORE + "/internetGateways", "create_internet_gateway"),
            ("GET", CORE + "/routeTables/(?P<id>[^/]+)", "get_route_table"),
            ("PUT", CORE + "/routeTables/(?P<id>[^/]+)", "update_route_table"),
            ("GET", CORE + "/subnets", "list_subnets"),
            ("POST", CORE + "/subnets", "create_subnet"),
            ("GET", CORE + "/subnets/(?P<id>[^/]+)", "get_subnet"),
            ("GET", CORE + "/securityLists/(?P<id>[^/]+)", "get_security_list"),
            ("PUT", CORE + "/securityLists/(?P<id>[^/]+)", "update_security_list"),
            ("GET", CORE + "/vnics/(?P<id>[^/]+)", "get_vnic"),
            ("GET", CORE + "/images", "list_images"),
            ("POST", CORE + "/instances", "launch_instance"),
            ("GET", CORE + "/instances", "list_instances"),
            ("GET", CORE + "/instances/(?P<id>[^/]+)", "get_instance"),
            ("GET", CORE + "/vnicAttachments", "list_vnic_attachments"),
            ("POST", CORE + "/instanceConsoleHistories", "capture_console_history"),
            ("GET", CORE + "/instanceConsoleHistories/(?P<id>[^/]+)", "get_console_history"),
            ("GET", CORE + "/instanceConsoleHistories/(?P<id>[^/]+)/data", "get_console_history_content"),
            ("GET", DNS + "/zones", "list_zones"),
            ("GET", DNS + "/zones/(?P<zone>[^/]+)", "get_zone"),
            ("GET", DNS + "/zones/(?P<zone>[^/]+)/records", "get_zone_records"),
            ("PATCH", DNS + "/zones/(?P<zone>[^/]+)/records", "patch_zone_records"),
            ("GET", DNS + "/zones/(?P<zone>[^/]+)/records/(?P<domain>[^/]+)/(?P<rtype>[A-Z]+)", "get_rr_set"),
            ("PUT", DNS + "/zones/(?P<zone>[^/]+)/records/(?P<domain>[^/]+)/(?P<rtype>[A-Z]+)", "update_rr_set"),
        ]
        return [(method, re.compile(pattern), op, getattr(self, op)) for method, pattern, op in table]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    emulator: Emulator

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload = self.emulator.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for key, value in out_headers.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the emulator keeps its own request log
        return


class Server:
    """The emulator on 127.0.0.1, on a free port, served from a daemon thread."""

    def __init__(self, emulator: Emulator) -> None:
        handler = type("Handler", (_Handler,), {"emulator": emulator})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.emulator = emulator
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="oci-emulator", daemon=True)

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
