"""Oracle Cloud stages: a public subnet, ingress 80/443 in its security list, and the VM.

Each stage looks first and changes only what is missing; every OCID is written to state the
moment it exists, so an interrupted run resumes without creating anything twice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from installer import checks
from installer.cloud import CloudError, cloud_for, compartment_of, explain, timing_for
from installer.cloud.api import (
    GATEWAY_NAME,
    PROTOCOL_NUMBERS,
    SUBNET_NAME,
    VCN_NAME,
    DryRunCloud,
    OciCloud,
    RouteRule,
    short,
)
from installer.cloud.limits import metadata_problem
from installer.cloud.resources import remembered, until_available
from installer.cloud.shapes import availability_domains_for
from installer.cloud.userdata import (
    encode_user_data,
    generate_host_key,
    host_key_fingerprint,
    render_user_data,
)
from installer.components.base import Port
from installer.engine import StageContext, StageError
from installer.events import Status

Cloud = OciCloud | DryRunCloud

VCN_CIDR = "10.0.0.0/16"
SUBNET_CIDR = "10.0.0.0/24"
ANYWHERE = "0.0.0.0/0"
_IMAGE_NAME = re.compile(
    r"Canonical-Ubuntu-(?P<version>\d+\.\d+)(?P<arch>-aarch64)?-(?P<date>\d{4}\.\d{2}\.\d{2})-(?P<build>\d+)"
)
ARM_SHAPES = ("VM.Standard.A1.Flex", "VM.Standard.A2.Flex")


# --- network ------------------------------------------------------------------------------
async def ensure_network(ctx: StageContext) -> Status:
    """Use the answers' subnet, else a public subnet found, else create VCN + gateway + route + subnet."""
    cloud = await cloud_for(ctx)
    try:
        return await _ensure_network(ctx, cloud, compartment_of(ctx, cloud))
    except CloudError as exc:
        raise explain(exc, ctx) from None


async def _ensure_network(ctx: StageContext, cloud: Cloud, compartment: str) -> Status:
    given = ctx.answers.cloud.subnet_id
    if given:
        subnet = await cloud.get_subnet(given)
        if subnet.prohibit_public_ip_on_vnic:
            raise StageError(
                f"subnet {given} (cloud.subnet_id) is private: instances in it cannot have a public IP",
                "choose a public subnet, or leave cloud.subnet_id empty to find or create one",
            )
        _remember_subnet(ctx, subnet)
        ctx.log(f"using the subnet from the answers: {subnet.display_name} ({short(subnet.id)})")
        return Status.UNCHANGED

    known = ctx.facts.get("cloud.subnet_id")
    if known:
        try:
            subnet = await cloud.get_subnet(known)
        except CloudError as exc:
            if not exc.not_found:
                raise
            ctx.log(f"the subnet recorded in state ({known}) no longer exists; looking for another")
        else:
            if subnet.lifecycle_state == "AVAILABLE":
                _remember_subnet(ctx, subnet)
                ctx.log(f"subnet {subnet.display_name} ({short(subnet.id)}) is in place")
                return Status.UNCHANGED

    vcns = [v for v in await cloud.list_vcns(compartment) if v.lifecycle_state == "AVAILABLE"]
    vcns.sort(key=lambda v: v.display_name != VCN_NAME)  # ours first
    for vcn in vcns:
        found = await _public_subnet_in(cloud, compartment, vcn)
        if found is not None:
            subnet, gateway_id = found
            _remember_subnet(ctx, subnet)
            ctx.remember("cloud.internet_gateway_id", gateway_id)
            ctx.log(f"found a public subnet: {subnet.display_name} ({short(subnet.id)}) in VCN {vcn.display_name}")
            return Status.UNCHANGED

    await _create_network(ctx, cloud, compartment, vcns)
    return Status.DONE


def _remember_subnet(ctx: StageContext, subnet: Any) -> None:
    for key, value in (
        ("cloud.subnet_id", subnet.id),
        ("cloud.vcn_id", subnet.vcn_id),
        ("cloud.route_table_id", subnet.route_table_id),
        ("cloud.security_list_id", (subnet.security_list_ids or [None])[0]),
    ):
        if value and ctx.facts.get(key) != value:
            ctx.remember(key, value)


def _internet_route(route_table: Any) -> str | None:
    """The internet gateway that 0.0.0.0/0 goes to, if any."""
    for rule in route_table.route_rules or []:
        target = getattr(rule, "network_entity_id", "") or ""
        if rule.destination == ANYWHERE and target.startswith("ocid1.internetgateway."):
            return target
    return None


async def _public_subnet_in(cloud: Cloud, compartment: str, vcn: Any) -> tuple[Any, str] | None:
    """A subnet that gives public IPs and routes 0.0.0.0/0 to an internet gateway."""
    for subnet in await cloud.list_subnets(compartment, vcn.id):
        if subnet.lifecycle_state != "AVAILABLE" or subnet.prohibit_public_ip_on_vnic or not subnet.security_list_ids:
            continue
        gateway = _internet_route(await cloud.get_route_table(subnet.route_table_id))
        if gateway:
            return subnet, gateway
    return None


async def _create_network(ctx: StageContext, cloud: Cloud, compartment: str, vcns: Sequence[Any]) -> None:
    """VCN, internet gateway, default route, public subnet: each reused when a previous run made it."""
    vcn = None
    if vcn_id := ctx.facts.get("cloud.vcn_id"):
        try:
            vcn = await cloud.get_vcn(vcn_id)
        except CloudError as exc:
            if not exc.not_found:
                raise
    vcn = vcn or next((v for v in vcns if v.display_name == VCN_NAME), None)
    if vcn is None:
        ctx.log(f"no public subnet found: creating VCN {VCN_NAME} ({VCN_CIDR}) with a public subnet")
        vcn = await cloud.create_vcn(compartment, VCN_CIDR, VCN_NAME, "matrix")
    ctx.remember("cloud.vcn_id", vcn.id)
    vcn = await until_available(ctx, "VCN", vcn, cloud.get_vcn)

    gateway = await remembered(ctx, "cloud.internet_gateway_id", cloud.get_internet_gateway, vcn.id)
    if gateway is None:
        gateways = [g for g in await cloud.list_internet_gateways(compartment, vcn.id) if g.lifecycle_state in ("PROVISIONING", "AVAILABLE")]
        gateway = next((g for g in gateways if g.is_enabled), None)
    if gateway is None:
        gateway = await cloud.create_internet_gateway(compartment, vcn.id, GATEWAY_NAME)
    ctx.remember("cloud.internet_gateway_id", gateway.id)
    gateway = await until_available(ctx, "internet gateway", gateway, cloud.get_internet_gateway)

    route_table = await cloud.get_route_table(vcn.default_route_table_id)
    if _internet_route(route_table) is None:
        await cloud.add_route_rules(route_table.id, list(route_table.route_rules or []), [RouteRule(ANYWHERE, gateway.id)])
    ctx.remember("cloud.route_table_id", route_table.id)

    subnet = await remembered(ctx, "cloud.subnet_id", cloud.get_subnet, vcn.id)
    if subnet is None:
        subnet = next((s for s in await cloud.list_subnets(compartment, vcn.id) if s.display_name == SUBNET_NAME), None)
    if subnet is None:
        subnet = await cloud.create_subnet(
            compartment, vcn.id, SUBNET_CIDR, SUBNET_NAME, "public", route_table.id, [vcn.default_security_list_id]
        )
    ctx.remember("cloud.subnet_id", subnet.id)
    subnet = await until_available(ctx, "subnet", subnet, cloud.get_subnet)
    _remember_subnet(ctx, subnet)
    ctx.log(f"network ready: VCN {short(vcn.id)}, gateway {short(gateway.id)}, subnet {short(subnet.id)}")


# --- ingress ------------------------------------------------------------------------------
def rule_allows(rule: Any, port: Port) -> bool:
    """Whether an ingress rule already lets new connections to all of `port` (TCP or UDP, one
    port or a range) in from anywhere."""
    if rule.protocol not in (PROTOCOL_NUMBERS[port.protocol], "all") or rule.source != ANYWHERE:
        return False
    if getattr(rule, "source_type", None) not in (None, "CIDR_BLOCK"):
        return False
    options = getattr(rule, f"{port.protocol}_options", None)
    if rule.protocol == "all" or options is None:
        return True
    if getattr(options, "source_port_range", None) is not None:
        return False
    ports = getattr(options, "destination_port_range", None)
    low, high = port.span
    return ports is None or ports.min <= low and high <= ports.max


def _listed(ports: Sequence[Port]) -> str:
    return ", ".join(f"{p.protocol}/{str(p).rsplit('/', 1)[0]}" for p in ports)


async def open_ingress_ports(ctx: StageContext) -> Status:
    """Add the missing ingress rules for the deployment's ports, keeping every rule already there
    (read-modify-write with the etag)."""
    cloud = await cloud_for(ctx)
    sl_id = ctx.facts.get("cloud.security_list_id")
    if not sl_id:
        raise StageError("no security list is known for the subnet", "the cloud.network stage must finish first; rerun")
    wanted = ctx.deployment.ports
    try:
        for attempt in range(1, 6):
            security_list, etag = await cloud.get_security_list(sl_id)
            rules = list(security_list.ingress_security_rules or [])
            missing = [p for p in wanted if not any(rule_allows(r, p) for r in rules)]
            if not missing:
                ctx.log(f"ingress already open: {_listed(wanted)}")
                return Status.UNCHANGED if attempt == 1 else Status.DONE
            try:
                await cloud.add_ingress_rules(sl_id, rules, missing, etag)
            except CloudError as exc:
                if exc.status != 412:
                    raise
                ctx.log("the security list changed while it was being edited (etag mismatch): reading it again")
                continue
            ctx.log(f"opened {_listed(missing)} from anywhere; kept the {len(rules)} rule(s) already there")
            return Status.DONE
    except CloudError as exc:
        raise explain(exc, ctx) from None
    raise StageError("the security list kept changing while it was being edited", "rerun when nobody else is editing it")


# --- the instance -------------------------------------------------------------------------
def image_arch(shape: str) -> str:
    return "aarch64" if shape in ARM_SHAPES else "x86_64"


def pick_image(images: Sequence[Any], version: str, shape: str) -> Any | None:
    """The newest plain Canonical Ubuntu `version` image built for the shape's architecture."""
    want_arm = image_arch(shape) == "aarch64"
    fitting = []
    for image in images:
        m = _IMAGE_NAME.fullmatch(image.display_name or "")
        if not m or m.group("version") != version or bool(m.group("arch")) != want_arm:
            continue
        if getattr(image, "lifecycle_state", "AVAILABLE") != "AVAILABLE":
            continue
        fitting.append(((image.time_created, m.group("date"), int(m.group("build"))), image))
    if not fitting:
        return None
    return max(fitting, key=lambda pair: pair[0])[1]


def _state_file(ctx: StageContext) -> str:
    folder = ctx.session.state.folder
    return str(folder / "state.json") if folder else "the state file"


def _read_ssh_public_key(ctx: StageContext) -> str:
    path = Path(str(Path(ctx.answers.ssh.private_key).expanduser()) + ".pub")
    try:
        line = path.read_text().strip()
    except OSError:
        if ctx.dry_run:
            return "ssh-ed25519 AAAA(dry-run)"
        raise StageError(f"the SSH public key {path} is missing", "the local.ssh_key stage creates it: rerun") from None
    if problem := checks.ssh_public_key(line):
        raise StageError(f"{path}: {problem}", f"replace it with the public half of {ctx.answers.ssh.private_key}")
    return line


def _ad_name(ad: str) -> str:
    return ad.rsplit(":", 1)[-1]


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 1 else f"{value:.2f} s"


async def launch_instance(ctx: StageContext) -> Status:
    """The VM: never a second one. Launch with capacity retries, wait for RUNNING, read the public IP."""
    cloud = await cloud_for(ctx)
    compartment = compartment_of(ctx, cloud)
    try:
        if known := ctx.facts.get("cloud.instance_id"):
            return await _existing_instance(ctx, cloud, compartment, known)
        return await _launch_new(ctx, cloud, compartment)
    except CloudError as exc:
        raise explain(exc, ctx) from None


async def _existing_instance(ctx: StageContext, cloud: Cloud, compartment: str, instance_id: str) -> Status:
    replace_hint = (
        f'if it was terminated on purpose, remove "cloud.instance_id" (and "host.address", "host.host_key") from '
        f"{_state_file(ctx)} and rerun to launch a new one; otherwise check that cloud.oci_profile points at the right "
        "region and tenancy"
    )
    try:
        instance = await cloud.get_instance(instance_id)
    except CloudError as exc:
        if exc.not_found:
            raise StageError(f"the instance recorded in the state ({instance_id}) no longer exists", replace_hint) from None
        raise
    state = instance.lifecycle_state
    if state in ("TERMINATED", "TERMINATING"):
        raise StageError(f"the instance recorded in the state ({instance_id}) is {state}; no new one is launched in its place", replace_hint)
    if state in ("STOPPED", "STOPPING"):
        raise StageError(f"the instance {instance.display_name} ({instance_id}) is {state}",
                         "start it (console: Compute > Instances > Start), then rerun")
    if state != "RUNNING":
        await _wait_running(ctx, cloud, instance_id)
    if ctx.dry_run and ctx.facts.get("host.address"):
        address = str(ctx.facts["host.address"])  # the plan shows the real address, not a placeholder
    else:
        address = await _public_address(ctx, cloud, compartment, instance_id)
    if ctx.facts.get("host.address") != address:
        ctx.remember("host.address", address)
    if not ctx.facts.get("host.host_key"):
        await _host_key_from_console(ctx, cloud, instance_id)
    ctx.log(f"instance {instance.display_name} ({short(instance_id)}) is running at {address}")
    return Status.UNCHANGED


def host_keys_in_console(text: str) -> list[str]:
    """The ed25519 host keys cloud-init printed to the serial console."""
    found = []
    for block in re.findall(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", text, re.S):
        found += re.findall(r"(ssh-ed25519 [A-Za-z0-9+/]+={0,2})", block)
    return found


async def _host_key_from_console(ctx: StageContext, cloud: Cloud, instance_id: str) -> None:
    """The state lost the host key: read it from what cloud-init printed on the serial console."""
    keys = host_keys_in_console(await cloud.console_history(instance_id))
    if len(set(keys)) == 1:
        ctx.remember("host.host_key", keys[0])
        ctx.remember("host.host_key_from", "cloud-init")
        ctx.log(f"SSH host key read from the instance's console history: {host_key_fingerprint(keys[0])}")
    elif not ctx.dry_run:
        ctx.log("the instance's SSH host key is neither in the state nor in its console history: pin it with ssh.host_key")


async def _launch_new(ctx: StageContext, cloud: Cloud, compartment: str) -> Status:
    c = ctx.answers.cloud
    subnet_id = ctx.facts.get("cloud.subnet_id")
    if not subnet_id:
        raise StageError("no subnet is known for the instance", "the cloud.network stage must finish first; rerun")
    ssh_public_key = _read_ssh_public_key(ctx)
    ads = await availability_domains_for(ctx, cloud, compartment)  # asked first: no launch where the shape is not offered

    live = [i for i in await cloud.list_instances(compartment, c.instance_name) if i.lifecycle_state not in ("TERMINATED", "TERMINATING")]
    if live:
        raise StageError(
            f"an instance named {c.instance_name} already exists ({live[0].id}, {live[0].lifecycle_state}) "
            "but this run's state does not know it; a second one is not launched",
            'to use it, set cloud.provider = "existing" and ssh.host (and ssh.host_key) in the answers; '
            "otherwise terminate it or choose another cloud.instance_name",
        )

    images = await cloud.list_images(compartment, c.ubuntu_version, c.shape)
    image = pick_image(images, c.ubuntu_version, c.shape)
    if image is None:
        raise StageError(
            f"no Canonical Ubuntu {c.ubuntu_version} image for {c.shape} ({image_arch(c.shape)}) in this region",
            'choose another cloud.ubuntu_version or cloud.shape',
        )
    ctx.log(f"image: {image.display_name}")

    hostname = ctx.answers.domain.matrix_host.split(".")[0] or "matrix"
    host_key = generate_host_key()
    ctx.secret(host_key.private_openssh)
    user_data = encode_user_data(render_user_data(host_key, hostname))
    ctx.secret(user_data)
    if problem := metadata_problem(ssh_public_key, user_data):
        raise StageError(problem, f"{ctx.answers.ssh.private_key}.pub is unusually long: point ssh.private_key at an ed25519 key pair")
    ctx.log(f"cloud-init user data: the VM's SSH host key pair and host name {hostname} ({len(user_data)} bytes; its "
            "content is not shown: it holds the host's private key)", "file")
    flex = c.shape.endswith(".Flex")

    instance = await _launch_with_retries(
        ctx, cloud, ads,
        lambda ad: cloud.launch_instance(
            compartment_id=compartment, availability_domain=ad, name=c.instance_name, shape=c.shape,
            ocpus=c.ocpus if flex else None, memory_gb=c.memory_gb if flex else None, image_id=image.id,
            subnet_id=subnet_id, ssh_public_key=ssh_public_key, user_data_b64=user_data,
        ),
        lambda: cloud.list_instances(compartment, c.instance_name),
    )
    ctx.remember("cloud.instance_id", instance.id)
    ctx.remember("cloud.availability_domain", instance.availability_domain)
    ctx.remember("host.host_key", host_key.public_line)
    ctx.remember("host.host_key_from", "cloud-init")  # host.ssh replaces it once connected
    ctx.log(f"launched {c.instance_name} in {instance.availability_domain}: {instance.id}")
    ctx.log(f"its SSH host key (set through cloud-init): {host_key_fingerprint(host_key.public_line)}")

    await _wait_running(ctx, cloud, instance.id)
    address = await _public_address(ctx, cloud, compartment, instance.id)
    ctx.remember("host.address", address)
    ctx.log(f"instance running at {address}")
    return Status.DONE


async def _launch_with_retries(ctx: StageContext, cloud: Cloud, ads: list[str], launch: Any, list_named: Any) -> Any:
    """Try each availability domain in turn; back off on capacity and 429 until the deadline; drop a
    domain that cannot take the shape at all (not offered there, or its own limit reached)."""
    timing = timing_for(ctx)
    minutes = getattr(ctx.options, "launch_retry_minutes", None)
    if minutes is None:
        minutes = ctx.answers.cloud.launch_retry_minutes
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + minutes * 60
    attempt = 0
    ad_index = 0
    throttled = 0
    other_failures = 0
    while True:
        ad = ads[ad_index % len(ads)]
        attempt += 1
        try:
            instance = await launch(ad)
        except CloudError as exc:
            if exc.out_of_capacity:
                reason = "out of host capacity"
                ad_index += 1
                # Each full round over the availability domains doubles the wait.
                exponent = (ad_index - 1) // len(ads)
            elif exc.status == 429:
                reason = "too many requests (429)"
                throttled += 1
                exponent = throttled - 1
            elif exc.shape_not_offered or exc.limit_in_this_ad:
                place = ad_index % len(ads)
                ads = [a for a in ads if a != ad]
                if not ads:
                    raise
                ad_index = place % len(ads)  # the next domain has moved into this one's place
                why = "the shape is not offered there" if exc.shape_not_offered else "this domain's service limit is reached"
                ctx.log(f"attempt {attempt} in {_ad_name(ad)} failed: {why} ({exc.status} {exc.code}); "
                        f"trying {_ad_name(ads[ad_index])} instead")
                continue
            elif exc.transient or exc.status == 0:
                other_failures += 1
                if other_failures > 3:
                    raise
                # The launch may have gone through before the error: never launch twice.
                mine = [i for i in await list_named() if i.lifecycle_state not in ("TERMINATED", "TERMINATING")]
                if mine:
                    ctx.log(f"the launch went through despite the error: adopting {mine[0].id}")
                    return mine[0]
                reason = exc.gist
                exponent = other_failures - 1
            else:
                raise
        else:
            if attempt > 1:
                ctx.log(f"launched at attempt {attempt}, after {_seconds(loop.time() - started)} of retries")
            return instance
        delay = min(timing.backoff_max, timing.backoff_base * 2**exponent)
        now = loop.time()
        first_round = reason == "out of host capacity" and ad_index < len(ads)
        if not first_round and now + delay > deadline:
            tried = ", ".join(_ad_name(a) for a in ads)
            raise StageError(
                f"{ctx.answers.cloud.shape} could not be launched: {reason} after {attempt} attempts over "
                f"{(now - started) / 60:.1f} min (availability domains tried: {tried})",
                "Oracle's free capacity comes and goes: rerun later, raise cloud.launch_retry_minutes "
                "(or --launch-retry-minutes), or try shape VM.Standard.E2.1.Micro",
            )
        text = f"attempt {attempt} in {_ad_name(ad)} failed: {reason}; next try in {_seconds(delay)}"
        ctx.progress(text, min(1.0, (now - started) / (deadline - started)) if deadline > started else None)
        await ctx.sleep(delay)


async def _wait_running(ctx: StageContext, cloud: Cloud, instance_id: str) -> None:
    timing = timing_for(ctx)
    waited = 0.0
    while True:
        instance = await cloud.get_instance(instance_id)
        state = instance.lifecycle_state
        if state == "RUNNING":
            return
        if state in ("TERMINATED", "TERMINATING", "STOPPED", "STOPPING"):
            raise StageError(
                f"the instance {instance_id} went {state} while starting",
                f"see its work requests in the console; to launch anew, remove \"cloud.instance_id\" from {_state_file(ctx)} and rerun",
            )
        if waited >= timing.running_timeout:
            raise StageError(f"the instance is still {state} after {waited:.0f} s", "check it in the console, then rerun to keep waiting")
        ctx.progress(f"waiting for the instance to run: {state} ({waited:.0f} s)", None)
        await ctx.sleep(timing.poll_interval)
        waited += timing.poll_interval


async def _public_address(ctx: StageContext, cloud: Cloud, compartment: str, instance_id: str) -> str:
    """The instance's public IPv4, through its VNIC attachments."""
    timing = timing_for(ctx)
    waited = 0.0
    while True:
        attachments = [a for a in await cloud.list_vnic_attachments(compartment, instance_id) if a.lifecycle_state == "ATTACHED"]
        if attachments:
            break
        if waited >= timing.running_timeout:
            raise StageError("the instance's network interface never attached", "check it in the console, then rerun")
        ctx.progress("waiting for the network interface to attach")
        await ctx.sleep(timing.poll_interval)
        waited += timing.poll_interval
    for attachment in attachments:
        vnic = await cloud.get_vnic(attachment.vnic_id)
        if vnic.public_ip and (getattr(vnic, "is_primary", True) or len(attachments) == 1):
            return str(vnic.public_ip)
    raise StageError(
        "the instance has no public IP address",
        "its subnet must allow public IPs: leave cloud.subnet_id empty or give a public subnet, then recreate the instance",
    )
