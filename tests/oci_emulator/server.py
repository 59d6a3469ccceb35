"""A local Oracle Cloud API emulator that the real `oci` SDK talks to through `service_endpoint`.

It implements the routes matrix-installer uses, the way Oracle's API answers them: camelCase
JSON, `opc-request-id` on every response, paging with `opc-next-page`, etags with `if-match`
(412 on a mismatch), lifecycle states that advance as they are polled, and request signatures
verified against the API key's public half (401 NotAuthenticated otherwise). Faults can be
injected per operation: `emulator.inject("launch_instance", 500, "InternalError",
"Out of host capacity.", times=3, availabilityDomain="Uocm:PHX-AD-1")`.

Where each behaviour comes from (SDK paths are in oracle/oci-python-sdk, src/oci/):
- Shapes per availability domain: ComputeClient.list_shapes (core/compute_client.py, GET /shapes
  with `availabilityDomain`) answers Shape objects whose `billing_type` is ALWAYS_FREE,
  LIMITED_FREE or PAID (core/models/shape.py). Micro is offered in one AD of most regions, and a
  launch elsewhere fails with 404 NotAuthorizedOrNotFound "shape VM.Standard.E2.1.Micro not
  found" (oracle-quickstart/oci-cloudnative#19 and #41, MallocArray/Unifi-OracleCloud#2,
  r0b2g1t/k3s-cluster-on-oracle-cloud-infrastructure#2/#3; A1: hitrov/oci-arm-host-capacity#96).
- Always Free limits: 4 A1 OCPUs and 24 GB across the region, two Micro instances, 200 GB of boot
  and block volumes (docs.oracle.com .../FreeTier/freetier_topic-Always_Free_Resources.htm).
  LimitExceeded texts as users report them: "The following service limits were exceeded:
  standard-a1-memory-count, standard-a1-memory-regional-count, standard-a1-core-count,
  standard-a1-core-regional-count. Request a service limit increase from the service limits
  page in the console. " (mohankumarpaluru/oracle-freetier-instance-creation#15 and #56,
  hitrov/oci-arm-host-capacity#55), "... standard-e2-micro-core-count ..."
  (mjtechguy/terransible-wirehole#13), and the AD-scoped one "You have reached your service limit
  of 1 in this Availability Domain for ... Please try launching the instance in a different
  Availability Domain or Region ..." (oracle/terraform-kubernetes-installer#218).
- The metadata cap: "The combined size of the `metadata` and `extendedMetadata` objects can be a
  maximum of 32,000 bytes" (core/models/launch_instance_details.py).
- Transient errors: the SDK's default retry strategy retries 409 IncorrectState/LockConflict,
  429 and any 5xx but 501 (retry/retry_checkers.py RETRYABLE_STATUSES_AND_CODES and
  TimeoutConnectionAndServiceErrorRetryChecker); a gateway's 502 may carry an HTML page instead
  of Oracle's JSON, which the SDK passes on as the message with no code
  (BaseClient.get_deserialized_service_code_and_message). A create carrying `opc-retry-token`
  answers a repeat with the first result (the token's docstring on each create_* method).
- Network resources: VCNs, gateways and subnets come back PROVISIONING and turn AVAILABLE
  (core/models/vcn.py lifecycle states); using a VCN that is not AVAILABLE yet answers 409
  IncorrectState. Lists are eventually consistent: a new resource shows up a moment later.
- Console history: capture_console_history starts an asynchronous capture, REQUESTED ->
  GETTING-HISTORY -> SUCCEEDED (core/models/console_history.py); get_console_history_content
  reads `length` bytes from `offset` (at least 10240, per Terraform's oci_core_console_history_data
  docs) and says what is left in `opc-bytes-remaining` (oracle/oci-go-sdk
  core/get_console_history_content_request_response.go: "The number of bytes remaining in the
  snapshot").
- Object Storage (object_storage/object_storage_client.py): get_namespace is GET /n and answers the
  namespace as a JSON string (response_type "str"); get_bucket/head_bucket are GET/HEAD
  /n/{namespaceName}/b/{bucketName}, create_bucket is POST /n/{namespaceName}/b with
  CreateBucketDetails (name, compartmentId, publicAccessType, storageTier). A bucket name is unique
  in its namespace: creating it again answers 409 BucketAlreadyExists, a missing one 404
  BucketNotFound, in the words of Oracle's docs ("Either the bucket named '...' does not exist in
  the namespace '...' or you are not authorized to access it").
- Customer Secret Keys (identity/identity_client.py, base path /20160918): list, create (with
  `opc-retry-token`) and delete under /users/{userId}/customerSecretKeys. The create's answer is a
  CustomerSecretKey whose `key` is the secret, given this once (identity/models/customer_secret_key.py:
  "The secret key"; lists return CustomerSecretKeySummary, without it); its `id` is the S3 access key
  ID. Each user may have two (docs.oracle.com, Managing User Credentials: "Each user can have up to
  two Customer Secret Keys at a time"); the answer to a third (400 LimitExceeded) is our assumption:
  the installer counts the keys before it asks. `s3_keys` holds every (access key, secret) made, for
  a lab's S3 server to accept (the S3 API itself is rclone's, not this emulator's).
- DNS: list_zones takes `scope` GLOBAL or PRIVATE, and a private zone is addressed by name only
  with its `viewId` (dns/dns_client.py); bad rdata answers 400 CannotParseRequest
  "Invalid value for items[0].rdata: bad A A: ..." (oracle/oci-cli#259).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import email.utils
import hashlib
import ipaddress
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


LIMITS_TAIL = ". Request a service limit increase from the service limits page in the console. "
BAD_GATEWAY_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
A1_FREE_OCPUS = 4
A1_FREE_MEMORY_GB = 24
MICRO_FREE_INSTANCES = 2
FREE_STORAGE_GB = 200
METADATA_MAX_BYTES = 32_000
CONSOLE_MIN_LENGTH = 10240


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, text: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.text = text
        """A body that is not Oracle's JSON error (a gateway's HTML page)."""


@dataclass
class Fault:
    op: str
    status: int
    code: str
    message: str
    times: int
    match: dict[str, Any] = field(default_factory=dict)
    after: bool = False
    """Fail after the operation took effect (the response was lost on the way back)."""
    text: str | None = None


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
    raw: bytes | None = None


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


_HOSTNAME = re.compile(r"(?=.{1,254}$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?")


def _rdata_parses(rtype: str, rdata: str) -> bool:
    """Whether OCI DNS would parse `rdata` for `rtype`: checked for the types the installer sets and a few
    more; any other type is taken as given."""
    try:
        if rtype == "A":
            return isinstance(ipaddress.ip_address(rdata), ipaddress.IPv4Address)
        if rtype == "AAAA":
            return isinstance(ipaddress.ip_address(rdata), ipaddress.IPv6Address)
    except ValueError:
        return False
    if rtype in ("CNAME", "NS"):
        return bool(_HOSTNAME.fullmatch(rdata))
    if rtype == "SRV":
        parts = rdata.split()
        return (len(parts) == 4 and all(p.isdigit() and int(p) <= 65535 for p in parts[:3])
                and bool(_HOSTNAME.fullmatch(parts[3])))
    return bool(rdata)


A1 = "VM.Standard.A1.Flex"
MICRO = "VM.Standard.E2.1.Micro"
SHAPE_CATALOG: dict[str, dict[str, Any]] = {
    A1: {"processorDescription": "3.0 GHz Ampere® Altra™", "isFlexible": True, "ocpus": 1.0, "memoryInGBs": 6.0,
         "ocpuOptions": {"min": 1.0, "max": 80.0}, "memoryOptions": {"minInGBs": 1.0, "maxInGBs": 512.0}},
    MICRO: {"processorDescription": "2.0 GHz AMD EPYC™ 7551 (Naples)", "isFlexible": False, "ocpus": 1.0, "memoryInGBs": 1.0},
    "VM.Standard.E4.Flex": {"processorDescription": "2.55 GHz AMD EPYC™ 7J13 (Milan)", "isFlexible": True, "ocpus": 1.0,
                            "memoryInGBs": 16.0, "ocpuOptions": {"min": 1.0, "max": 64.0}, "memoryOptions": {"minInGBs": 1.0, "maxInGBs": 1024.0}},
}
BILLING = {A1: "LIMITED_FREE", MICRO: "ALWAYS_FREE", "VM.Standard.E4.Flex": "PAID"}
CREATES = {"create_vcn": "vcns", "create_internet_gateway": "internetGateways", "create_subnet": "subnets",
           "launch_instance": "instances", "capture_console_history": "consoleHistories",
           "create_customer_secret_key": "customerSecretKeys"}
SECRET_KEYS_PER_USER = 2
"""Create operations that honour `opc-retry-token`, and the kind of resource each makes."""


def _shape_row(name: str) -> dict[str, Any]:
    return {"shape": name, "billingType": BILLING.get(name, "PAID"), **SHAPE_CATALOG[name]}


def _default_shapes(ads: list[str]) -> dict[str, list[str]]:
    """Like most three-AD regions for an Always Free tenancy: A1 and E4 everywhere, Micro in the last AD only."""
    return {ad: [A1, "VM.Standard.E4.Flex"] + ([MICRO] if ad == ads[-1] else []) for ad in ads}


def _boot_output(size: int) -> str:
    """Kernel and systemd lines, about `size` bytes of them, as a VM prints before cloud-init's keys."""
    lines = ["[    0.000000] Linux version 6.8.0-1013-oracle (buildd@lcy02-amd64-017) #13-Ubuntu SMP"]
    total = len(lines[0]) + 1
    while total < size:
        n = len(lines)
        lines.append(f"[{n * 0.0137:12.6f}] systemd[1]: Started unit-{n:05d}.service - boot step {n} of the matrix VM.")
        total += len(lines[-1]) + 1
    return "\n".join(lines) + "\n"


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
                                  "vnicAttachments", "vnics", "zones", "consoleHistories", "dhcpOptions",
                                  "buckets", "customerSecretKeys")
        }
        self.namespace = "emulatorns"
        self.s3_keys: list[tuple[str, str]] = []
        """(access key ID, secret) of every Customer Secret Key made, in order."""
        self.next_secret_keys: list[tuple[str, str]] = []
        """Keys the next creates hand out (a lab's S3 server was started with them), else random ones."""
        self.images = _default_images()
        self.shapes = _default_shapes(self.ads)
        """Shape names each availability domain offers (`list_shapes`, and where a launch may go)."""
        self.always_free = True
        """Enforce the Always Free limits (a tenancy that has not upgraded to Pay As You Go)."""
        self.list_lag = 1
        """How many list calls miss a network resource after it is created."""
        self.console_boot_bytes = 40_000
        """Boot output before cloud-init's host key block in the console history."""
        self.console_polls = 2
        self.console_capture_fails = False
        """Captures end FAILED instead of SUCCEEDED."""
        self.unlisted: dict[str, int] = {}
        self.retry_tokens: dict[tuple[str, str], tuple[str, str]] = {}
        self.console_text: dict[str, bytes] = {}
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

    def inject_bad_gateway(self, op: str, times: int = 1, *, after: bool = False, **match: Any) -> Fault:
        """502 with a gateway's HTML page; `after`: once the operation took effect (the answer got lost)."""
        fault = Fault(op, 502, "", "Bad Gateway", times, match, after=after, text=BAD_GATEWAY_PAGE)
        with self.lock:
            self.faults.append(fault)
        return fault

    def offer_only(self, shape: str, ads: list[str]) -> None:
        """`shape` is offered in exactly these availability domains."""
        with self.lock:
            for ad in self.ads:
                offered = [s for s in self.shapes[ad] if s != shape]
                self.shapes[ad] = offered + ([shape] if ad in ads else [])

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

    def add_zone(self, name: str, compartment: str | None = None, *, scope: str = "GLOBAL") -> dict[str, Any]:
        """A zone: GLOBAL (public, on Oracle's name servers) or PRIVATE (a VCN resolver's, in a view)."""
        zone = {"id": _ocid("dns-zone"), "name": name, "zoneType": "PRIMARY", "compartmentId": compartment or self.tenancy,
                "scope": scope, "viewId": _ocid("dnsview") if scope == "PRIVATE" else None,
                "self": f"https://dns.{self.region}.oraclecloud.com{DNS}/zones/{name}",
                "timeCreated": _now(), "version": "1", "serial": 1, "lifecycleState": "ACTIVE", "isProtected": False,
                "resolutionMode": "STATIC", "dnssecState": "DISABLED",
                "nameservers": [{"hostname": f"ns{i}.p68.dns.oraclecloud.net"} for i in (1, 2)],
                "externalMasters": [], "externalDownstreams": [], "zoneTransferServers": []}
        with self.lock:
            self.store["zones"][zone["id"]] = zone
        return zone

    def rrset(self, zone: str, domain: str, rtype: str, *, scope: str = "GLOBAL") -> list[dict[str, Any]]:
        """The records of one name and type in a zone given by OCID, or by name and scope."""
        with self.lock:
            return copy.deepcopy(self.rrsets.get((self._zone_of_scope(zone, scope)["id"], domain, rtype), []))

    def set_rrset(self, zone: str, domain: str, rtype: str, rdata: str, ttl: int = 3600) -> None:
        """Seed a record into the GLOBAL zone called `zone`, as the user's console would."""
        with self.lock:
            target = self._zone_of_scope(zone, "GLOBAL")
            self.rrsets[(target["id"], domain, rtype)] = [self._record(target, {"domain": domain, "rtype": rtype, "rdata": rdata, "ttl": ttl})]

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
        path = re.sub(r"/{2,}", "/", unquote(parts.path))
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        op = "unknown"
        try:
            handler, params, op = self._route(method, path)
            self._verify_signature(method, target, headers, body)
            data = json.loads(body) if body else {}
            self._apply_faults(op, data, query, params)
            token = headers.get("opc-retry-token") if op in CREATES else None
            with self.lock:
                reply = self._repeat(op, token) or handler(params=params, query=query, body=data, headers=headers)
                if token and reply.status == 200:
                    self.retry_tokens[(op, token)] = (CREATES[op], reply.body["id"])
                self._run_hooks(op)
            self._apply_faults(op, data, query, params, after=True)
        except ApiError as exc:
            reply = Reply(exc.status, {"code": exc.code, "message": exc.message}, text=exc.text)
        except (ValueError, KeyError, TypeError) as exc:
            reply = Reply(400, {"code": "InvalidParameter", "message": f"Invalid request: {exc}"})
        with self.lock:
            self.requests.append(Logged(method, path, op, reply.status))
        out_headers.update(reply.headers)
        if reply.raw is not None:
            out_headers["content-type"] = "application/octet-stream"
            payload = reply.raw
        elif reply.text is not None:
            out_headers["content-type"] = "text/html" if reply.text.startswith("<html") else "text/plain"
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

    def _apply_faults(self, op: str, body: dict[str, Any], query: dict[str, str], params: dict[str, str], *, after: bool = False) -> None:
        with self.lock:
            for fault in self.faults:
                if fault.op != op or fault.times <= 0 or fault.after != after:
                    continue
                seen = {**query, **params, **(body if isinstance(body, dict) else {})}
                if all(seen.get(k) == v for k, v in fault.match.items()):
                    fault.times -= 1
                    raise ApiError(fault.status, fault.code, fault.message, fault.text)

    def _repeat(self, op: str, token: str | None) -> Reply | None:
        """A create repeated with its `opc-retry-token`: the resource the first one made, as it is now."""
        made = self.retry_tokens.get((op, token)) if token else None
        if made is None:
            return None
        kind, rid = made
        return Reply(200, copy.deepcopy(self.store[kind][rid]), {"etag": self.etags.get(rid, "x")})

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
            if self.unlisted.get(item["id"], 0) > 0:  # made a moment ago: lists catch up later
                self.unlisted[item["id"]] -= 1
                continue
            out.append(item)
        return out

    def _made_over_the_api(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A network resource a create call made: PROVISIONING for a few polls, missing from lists at first."""
        resource["lifecycleState"] = "PROVISIONING"
        self.polls[resource["id"]] = 0
        self.unlisted[resource["id"]] = self.list_lag
        return resource

    def _settle(self, resource: dict[str, Any]) -> dict[str, Any]:
        """PROVISIONING -> AVAILABLE after `provision_polls` reads."""
        if resource["lifecycleState"] == "PROVISIONING":
            self.polls[resource["id"]] = self.polls.get(resource["id"], 0) + 1
            if self.polls[resource["id"]] > self.provision_polls:
                resource["lifecycleState"] = "AVAILABLE"
        return resource

    def _usable_vcn(self, vcn_id: str) -> dict[str, Any]:
        vcn = self._get("vcns", vcn_id)
        if vcn["lifecycleState"] != "AVAILABLE":
            raise ApiError(409, "IncorrectState", f"VCN {vcn_id} is {vcn['lifecycleState']}; it must be AVAILABLE for this operation.")
        return vcn

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
        return Reply(200, copy.deepcopy(self._made_over_the_api(self._create_vcn(body))))

    def list_vcns(self, query: dict[str, str], **_: Any) -> Reply:
        return self._page(self._filter("vcns", query, displayName="displayName", lifecycleState="lifecycleState"), query)

    def get_vcn(self, params: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._settle(self._get("vcns", params["id"]))))

    def _create_igw(self, body: dict[str, Any]) -> dict[str, Any]:
        self._need(body, "compartmentId", "vcnId")
        self._get("vcns", body["vcnId"])
        igw = {"id": _ocid("internetgateway"), "compartmentId": body["compartmentId"], "vcnId": body["vcnId"],
               "isEnabled": body.get("isEnabled", True), "displayName": body.get("displayName") or "igw",
               "lifecycleState": "AVAILABLE", "timeCreated": _now()}
        self.store["internetGateways"][igw["id"]] = igw
        return igw

    def create_internet_gateway(self, body: dict[str, Any], **_: Any) -> Reply:
        self._need(body, "vcnId")
        self._usable_vcn(body["vcnId"])
        return Reply(200, copy.deepcopy(self._made_over_the_api(self._create_igw(body))))

    def get_internet_gateway(self, params: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._settle(self._get("internetGateways", params["id"]))))

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
        self._need(body, "vcnId")
        self._usable_vcn(body["vcnId"])
        return Reply(200, copy.deepcopy(self._made_over_the_api(self._create_subnet(body))))

    def list_subnets(self, query: dict[str, str], **_: Any) -> Reply:
        return self._page(self._filter("subnets", query, vcnId="vcnId"), query)

    def get_subnet(self, params: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._settle(self._get("subnets", params["id"]))))

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

    def list_shapes(self, query: dict[str, str], **_: Any) -> Reply:
        """The shapes offered in one AD (or, without `availabilityDomain`, in any AD of the region)."""
        self._compartment(query)
        ad = query.get("availabilityDomain")
        if ad and ad not in self.ads:
            raise ApiError(400, "InvalidParameter", f"Invalid availabilityDomain {ad}")
        names = self.shapes[ad] if ad else list(dict.fromkeys(n for a in self.ads for n in self.shapes[a]))
        rows = [_shape_row(n) for n in names if not query.get("shape") or n == query["shape"]]
        return self._page(rows, query)

    def launch_instance(self, body: dict[str, Any], **_: Any) -> Reply:
        self._need(body, "compartmentId", "availabilityDomain", "shape")
        if body["availabilityDomain"] not in self.ads:
            raise ApiError(400, "InvalidParameter", f"Invalid availabilityDomain {body['availabilityDomain']}")
        shape = body["shape"]
        if shape not in self.shapes[body["availabilityDomain"]]:
            raise ApiError(404, "NotAuthorizedOrNotFound", f"shape {shape} not found")
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
        size = len(json.dumps(metadata, separators=(",", ":")).encode()) + len(json.dumps(body.get("extendedMetadata") or {}).encode())
        if size > METADATA_MAX_BYTES:
            raise ApiError(400, "InvalidParameter", f"The combined size of metadata and extendedMetadata ({size} bytes) "
                                                    f"exceeds the maximum of {METADATA_MAX_BYTES} bytes.")
        boot_gb = int(source.get("bootVolumeSizeInGBs") or -(-image["sizeInMBs"] // 1024))
        if self.always_free:
            self._within_free_limits(shape, config, boot_gb)
        user_data = base64.b64decode(metadata["user_data"], validate=True).decode() if "user_data" in metadata else None
        instance = {"id": _ocid("instance"), "compartmentId": body["compartmentId"], "availabilityDomain": body["availabilityDomain"],
                    "displayName": body.get("displayName") or "instance", "shape": shape, "region": self.region,
                    "lifecycleState": "PROVISIONING", "timeCreated": _now(), "imageId": image_id, "faultDomain": "FAULT-DOMAIN-1",
                    "shapeConfig": {"ocpus": config.get("ocpus", 1), "memoryInGBs": config.get("memoryInGBs", 1)} if config else None,
                    "sourceDetails": {"sourceType": "image", "imageId": image_id, "bootVolumeSizeInGBs": boot_gb},
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

    def _live_instances(self) -> list[dict[str, Any]]:
        return [i for i in self.store["instances"].values() if i["lifecycleState"] != "TERMINATED"]

    def _within_free_limits(self, shape: str, config: dict[str, Any], boot_gb: int) -> None:
        """Always Free: 4 A1 OCPUs and 24 GB in the region, two Micro instances, 200 GB of volumes."""
        live = self._live_instances()
        if shape == A1:
            a1 = [i for i in live if i["shape"] == A1]
            ocpus = sum(float(i["shapeConfig"]["ocpus"]) for i in a1) + float(config["ocpus"])
            memory = sum(float(i["shapeConfig"]["memoryInGBs"]) for i in a1) + float(config["memoryInGBs"])
            exceeded = (["standard-a1-memory-count", "standard-a1-memory-regional-count"] if memory > A1_FREE_MEMORY_GB else []) \
                + (["standard-a1-core-count", "standard-a1-core-regional-count"] if ocpus > A1_FREE_OCPUS else [])
            if exceeded:
                raise ApiError(400, "LimitExceeded", "The following service limits were exceeded: " + ", ".join(exceeded) + LIMITS_TAIL)
        if shape == MICRO and sum(1 for i in live if i["shape"] == MICRO) >= MICRO_FREE_INSTANCES:
            raise ApiError(400, "LimitExceeded", "The following service limits were exceeded: standard-e2-micro-core-count" + LIMITS_TAIL)
        used = sum(int(i["sourceDetails"]["bootVolumeSizeInGBs"]) for i in live)
        if used + boot_gb > FREE_STORAGE_GB:
            # Block Volume's limit; the wording follows the compute limits' (not seen verbatim).
            raise ApiError(400, "LimitExceeded", "The following service limits were exceeded: total-storage-gb" + LIMITS_TAIL)

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
        """Starts an asynchronous capture: REQUESTED, then GETTING-HISTORY, then SUCCEEDED as it is polled."""
        self._need(body, "instanceId")
        instance = self._get("instances", body["instanceId"])
        history = {"id": _ocid("consolehistory"), "instanceId": instance["id"], "compartmentId": instance["compartmentId"],
                   "availabilityDomain": instance["availabilityDomain"], "lifecycleState": "REQUESTED", "timeCreated": _now()}
        self.store["consoleHistories"][history["id"]] = history
        self.polls[history["id"]] = 0
        return Reply(200, copy.deepcopy(history))

    def get_console_history(self, params: dict[str, str], **_: Any) -> Reply:
        history = self._get("consoleHistories", params["id"])
        if history["lifecycleState"] in ("REQUESTED", "GETTING-HISTORY"):
            self.polls[history["id"]] += 1
            done = self.polls[history["id"]] >= self.console_polls
            history["lifecycleState"] = ("FAILED" if self.console_capture_fails else "SUCCEEDED") if done else "GETTING-HISTORY"
            if done and not self.console_capture_fails:
                self.console_text[history["id"]] = self._console_output(history["instanceId"]).encode()
        return Reply(200, copy.deepcopy(history))

    def _console_output(self, instance_id: str) -> str:
        """Boot messages, then the host key block cloud-init prints from its `ssh_keys`, then the login prompt."""
        text = self.user_data.get(instance_id, "")
        m = re.search(r"^\s*ed25519_public: (\".*\")\s*$", text, re.M)
        lines = [_boot_output(self.console_boot_bytes).rstrip("\n"), "cloud-init: modules-final"]
        if m:
            lines += ["-----BEGIN SSH HOST KEY KEYS-----", f"{json.loads(m.group(1))} root@matrix", "-----END SSH HOST KEY KEYS-----"]
        lines += ["", "Ubuntu 24.04.1 LTS matrix ttyS0", "", "matrix login: "]
        return "\n".join(lines) + "\n"

    def get_console_history_content(self, params: dict[str, str], query: dict[str, str], **_: Any) -> Reply:
        """`length` bytes from `offset` (10240 when not asked, never fewer); the rest in `opc-bytes-remaining`."""
        history = self._get("consoleHistories", params["id"])
        if history["lifecycleState"] != "SUCCEEDED":
            raise ApiError(409, "IncorrectState", f"Console history {history['id']} is {history['lifecycleState']}.")
        offset = int(query.get("offset") or 0)
        length = int(query.get("length") or CONSOLE_MIN_LENGTH)
        if length < CONSOLE_MIN_LENGTH or offset < 0:
            raise ApiError(400, "InvalidParameter", f"length must be at least {CONSOLE_MIN_LENGTH} and offset not negative.")
        data = self.console_text[history["id"]]
        chunk = data[offset : offset + length]
        return Reply(200, raw=chunk, headers={"opc-bytes-remaining": str(max(0, len(data) - offset - len(chunk)))})

    # --- dns ------------------------------------------------------------------------------
    def _zone_of_scope(self, name_or_id: str, scope: str, view_id: str | None = None) -> dict[str, Any]:
        for zone in self.store["zones"].values():
            if zone["id"] == name_or_id:
                return zone
        for zone in self.store["zones"].values():
            if zone["name"] == name_or_id and zone["scope"] == scope and (scope == "GLOBAL" or zone["viewId"] == view_id):
                return zone
        raise ApiError(404, "NotAuthorizedOrNotFound", NOT_FOUND)

    def _zone(self, name_or_id: str, query: dict[str, str]) -> dict[str, Any]:
        """A zone by OCID, or by name: a GLOBAL one unless `scope=PRIVATE` with its `viewId`."""
        return self._zone_of_scope(name_or_id, query.get("scope") or "GLOBAL", query.get("viewId"))

    def list_zones(self, query: dict[str, str], **_: Any) -> Reply:
        """Every zone of the compartment, GLOBAL and PRIVATE alike unless `scope` narrows it."""
        items = self._filter("zones", query, name="name", zoneType="zoneType", lifecycleState="lifecycleState",
                             scope="scope", viewId="viewId")
        return self._page(items, query)

    def get_zone(self, params: dict[str, str], query: dict[str, str], **_: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._zone(params["zone"], query)))

    def _record(self, zone: dict[str, Any], item: dict[str, Any], index: int = 0) -> dict[str, Any]:
        self._need(item, "domain", "rtype", "rdata", "ttl")
        domain = item["domain"].rstrip(".").lower()
        if domain != zone["name"] and not domain.endswith("." + zone["name"]):
            raise ApiError(400, "InvalidParameter", f"Domain {domain} is not in zone {zone['name']}")
        rtype, rdata = item["rtype"], str(item["rdata"])
        if not _rdata_parses(rtype, rdata):
            raise ApiError(400, "CannotParseRequest", f'Invalid value for items[{index}].rdata: bad {rtype} {rtype}: "{rdata}"')
        return {"domain": domain, "rtype": rtype, "rdata": rdata, "ttl": int(item["ttl"]),
                "recordHash": hashlib.md5(f"{domain}{rtype}{rdata}".encode()).hexdigest(),
                "isProtected": False, "rrsetVersion": str(int(zone["version"]) + 1)}

    def get_rr_set(self, params: dict[str, str], query: dict[str, str], **_: Any) -> Reply:
        zone = self._zone(params["zone"], query)
        items = self.rrsets.get((zone["id"], params["domain"].lower(), params["rtype"]), [])
        return Reply(200, {"items": copy.deepcopy(items)}, {"etag": zone["version"]})

    def update_rr_set(self, params: dict[str, str], query: dict[str, str], body: dict[str, Any], **_: Any) -> Reply:
        zone = self._zone(params["zone"], query)
        domain, rtype = params["domain"].lower(), params["rtype"]
        items = [self._record(zone, item, i) for i, item in enumerate(body.get("items") or [])]
        if any(i["domain"] != domain or i["rtype"] != rtype for i in items):
            raise ApiError(400, "InvalidParameter", "Every record must match the domain and rtype of the path.")
        self.rrsets[(zone["id"], domain, rtype)] = items
        zone["version"] = str(int(zone["version"]) + 1)
        zone["serial"] += 1
        return Reply(200, {"items": copy.deepcopy(items)}, {"etag": zone["version"]})

    def get_zone_records(self, params: dict[str, str], query: dict[str, str], **_: Any) -> Reply:
        zone = self._zone(params["zone"], query)
        items = [r for (z, _d, _t), rs in sorted(self.rrsets.items()) if z == zone["id"] for r in rs]
        page = self._page(items, query)
        page.body = {"items": page.body}
        return page

    def patch_zone_records(self, params: dict[str, str], query: dict[str, str], body: dict[str, Any], **_: Any) -> Reply:
        zone = self._zone(params["zone"], query)
        for i, op in enumerate(body.get("items") or []):
            record = self._record(zone, op, i)
            key = (zone["id"], record["domain"], record["rtype"])
            current = self.rrsets.setdefault(key, [])
            if op.get("operation", "ADD") == "ADD":
                if all(r["rdata"] != record["rdata"] for r in current):
                    current.append(record)
            elif op["operation"] == "REMOVE":
                self.rrsets[key] = [r for r in current if r["rdata"] != record["rdata"]]
        zone["version"] = str(int(zone["version"]) + 1)
        return self.get_zone_records(params=params, query=query)

    # --- object storage ---------------------------------------------------------------------
    def _namespace(self, params: dict[str, str]) -> None:
        if params["ns"] != self.namespace:
            raise ApiError(404, "NamespaceNotFound", f"You do not have authorization to perform this request, or the "
                                                     f"requested resource could not be found.")

    def _bucket(self, params: dict[str, str]) -> dict[str, Any]:
        self._namespace(params)
        bucket = self.store["buckets"].get(params["bucket"])
        if bucket is None:
            raise ApiError(404, "BucketNotFound", f"Either the bucket named '{params['bucket']}' does not exist in the "
                                                  f"namespace '{self.namespace}' or you are not authorized to access it")
        return bucket

    def get_namespace(self, **_: Any) -> Reply:
        return Reply(200, self.namespace)

    def get_bucket(self, params: dict[str, str], **_: Any) -> Reply:
        bucket = self._bucket(params)
        return Reply(200, copy.deepcopy(bucket), {"etag": bucket["etag"]})

    def head_bucket(self, params: dict[str, str], **_: Any) -> Reply:
        bucket = self._bucket(params)
        return Reply(200, None, {"etag": bucket["etag"]})

    def create_bucket(self, params: dict[str, str], body: dict[str, Any], **_: Any) -> Reply:
        self._namespace(params)
        self._need(body, "name", "compartmentId")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,256}", body["name"]):
            raise ApiError(400, "InvalidBucketName", f"The bucket name '{body['name']}' is not valid")
        if body["name"] in self.store["buckets"]:
            raise ApiError(409, "BucketAlreadyExists", f"Either the bucket '{body['name']}' in namespace "
                                                       f"'{self.namespace}' already exists or you are not authorized to create it")
        bucket = {"namespace": self.namespace, "name": body["name"], "compartmentId": body["compartmentId"],
                  "createdBy": "ocid1.user.oc1..emulator", "timeCreated": _now(), "etag": uuid.uuid4().hex,
                  "publicAccessType": body.get("publicAccessType") or "NoPublicAccess",
                  "storageTier": body.get("storageTier") or "Standard", "versioning": "Disabled",
                  "id": _ocid("bucket"), "metadata": {}, "freeformTags": {}, "definedTags": {}}
        self.store["buckets"][body["name"]] = bucket
        return Reply(200, copy.deepcopy(bucket), {"etag": bucket["etag"]})

    # --- customer secret keys -------------------------------------------------------------------
    def _user_keys(self, user: str) -> list[dict[str, Any]]:
        return [k for k in self.store["customerSecretKeys"].values() if k["userId"] == user and k["lifecycleState"] != "DELETED"]

    def list_customer_secret_keys(self, params: dict[str, str], **_: Any) -> Reply:
        keys = [{k: v for k, v in key.items() if k != "key"} for key in self._user_keys(params["user"])]
        return Reply(200, keys)

    def create_customer_secret_key(self, params: dict[str, str], body: dict[str, Any], **_: Any) -> Reply:
        self._need(body, "displayName")
        if len(self._user_keys(params["user"])) >= SECRET_KEYS_PER_USER:
            raise ApiError(400, "LimitExceeded", f"User {params['user']} already has the maximum number of customer "
                                                 f"secret keys ({SECRET_KEYS_PER_USER})")
        if self.next_secret_keys:
            access, secret = self.next_secret_keys.pop(0)
        else:
            access, secret = uuid.uuid4().hex + uuid.uuid4().hex[:8], base64.b64encode(uuid.uuid4().bytes * 2).decode()[:44]
        key = {"id": access, "key": secret, "userId": params["user"], "displayName": body["displayName"],
               "timeCreated": _now(), "timeExpires": None, "lifecycleState": "ACTIVE", "inactiveStatus": None}
        self.store["customerSecretKeys"][access] = key
        self.s3_keys.append((access, secret))
        return Reply(200, copy.deepcopy(key))

    def delete_customer_secret_key(self, params: dict[str, str], **_: Any) -> Reply:
        key = self.store["customerSecretKeys"].get(params["id"])
        if key is None or key["userId"] != params["user"]:
            raise ApiError(404, "NotAuthorizedOrNotFound", NOT_FOUND)
        del self.store["customerSecretKeys"][params["id"]]
        return Reply(204)

    def _routes(self) -> list[tuple[str, re.Pattern[str], str, Callable[..., Reply]]]:
        table = [
            ("GET", CORE + "/availabilityDomains", "list_availability_domains"),
            ("GET", CORE + "/vcns", "list_vcns"),
            ("POST", CORE + "/vcns", "create_vcn"),
            ("GET", CORE + "/vcns/(?P<id>[^/]+)", "get_vcn"),
            ("GET", CORE + "/internetGateways", "list_internet_gateways"),
            ("POST", CORE + "/internetGateways", "create_internet_gateway"),
            ("GET", CORE + "/internetGateways/(?P<id>[^/]+)", "get_internet_gateway"),
            ("GET", CORE + "/routeTables/(?P<id>[^/]+)", "get_route_table"),
            ("PUT", CORE + "/routeTables/(?P<id>[^/]+)", "update_route_table"),
            ("GET", CORE + "/subnets", "list_subnets"),
            ("POST", CORE + "/subnets", "create_subnet"),
            ("GET", CORE + "/subnets/(?P<id>[^/]+)", "get_subnet"),
            ("GET", CORE + "/securityLists/(?P<id>[^/]+)", "get_security_list"),
            ("PUT", CORE + "/securityLists/(?P<id>[^/]+)", "update_security_list"),
            ("GET", CORE + "/vnics/(?P<id>[^/]+)", "get_vnic"),
            ("GET", CORE + "/images", "list_images"),
            ("GET", CORE + "/shapes", "list_shapes"),
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
            ("GET", "/n/?", "get_namespace"),
            ("GET", "/n/(?P<ns>[^/]+)/b/(?P<bucket>[^/]+)/?", "get_bucket"),
            ("HEAD", "/n/(?P<ns>[^/]+)/b/(?P<bucket>[^/]+)/?", "head_bucket"),
            ("POST", "/n/(?P<ns>[^/]+)/b/?", "create_bucket"),
            ("GET", CORE + "/users/(?P<user>[^/]+)/customerSecretKeys/?", "list_customer_secret_keys"),
            ("POST", CORE + "/users/(?P<user>[^/]+)/customerSecretKeys/?", "create_customer_secret_key"),
            ("DELETE", CORE + "/users/(?P<user>[^/]+)/customerSecretKeys/(?P<id>[^/]+)", "delete_customer_secret_key"),
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

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

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
