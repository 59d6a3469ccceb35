"""Worker hosts on Oracle Cloud: `hosts = ["new"]` makes an instance in the main host's subnet (the
same shape, image and SSH key; its host key given through cloud-init, as the main host's first
one), and the subnet's security list lets the hosts reach each other's private ports, from their
private addresses only (the cloud's half of "both firewalls"; DOCKER-USER on each host is the other).
"""

from __future__ import annotations

from typing import Any

from installer.cloud import CloudError, cloud_for, compartment_of, explain, timing_for
from installer.cloud.api import PROTOCOL_NUMBERS, short
from installer.components.base import Port
from installer.components.workers import VMS, layout_of
from installer.components.workers.layout import NEW_HOST
from installer.components.workers.services import reached_from_worker_hosts
from installer.engine import StageContext, StageError
from installer.events import Status


def _wanted(ctx: StageContext) -> int:
    return sum(1 for h in ctx.answers.workers.hosts if h.strip() == NEW_HOST)


async def launch_worker_vms(ctx: StageContext) -> Status:
    """One instance per "new" entry, never a second one: each id is kept the moment it exists, so
    a rerun (or a run that stopped) finds it instead of launching again."""
    from installer.cloud.shapes import availability_domains_for
    from installer.cloud.userdata import encode_user_data, generate_host_key, host_key_fingerprint, render_user_data
    from installer.providers.oci.stages import _launch_with_retries, _read_ssh_public_key, _wait_running, pick_image

    cloud = await cloud_for(ctx)
    compartment = compartment_of(ctx, cloud)
    made: list[dict[str, Any]] = [dict(vm) for vm in ctx.facts.get(VMS) or []]
    c = ctx.answers.cloud
    changed = False
    try:
        for number, vm in enumerate(made, start=1):  # those made before: still there, and their address
            instance = await cloud.get_instance(vm["id"])
            if instance.lifecycle_state in ("TERMINATED", "TERMINATING", "STOPPED", "STOPPING"):
                raise StageError(f"the worker instance {vm['id']} is {instance.lifecycle_state}",
                                 "start it in the console (a stopped one), or remove it from workers.vms in the state file "
                                 "and rerun to make a new one")
            if instance.lifecycle_state != "RUNNING":
                await _wait_running(ctx, cloud, vm["id"])
            if not vm.get("private_ip"):
                vm["private_ip"] = await private_address(ctx, cloud, compartment, vm["id"])
                ctx.remember(VMS, made)
                changed = True
        while len(made) < _wanted(ctx):
            number = len(made) + 1
            name = f"{c.instance_name}-worker{number}"
            subnet_id = ctx.facts.get("cloud.subnet_id")
            if not subnet_id:
                raise StageError("no subnet is known for the worker instance", "the cloud.network stage must finish first")
            ads = await availability_domains_for(ctx, cloud, compartment)
            main_ad = ctx.facts.get("cloud.availability_domain")
            ads.sort(key=lambda ad: ad != main_ad)  # beside the main host first
            image = pick_image(await cloud.list_images(compartment, c.ubuntu_version, c.shape), c.ubuntu_version, c.shape)
            if image is None:
                raise StageError(f"no Canonical Ubuntu {c.ubuntu_version} image for {c.shape}", "choose another cloud.shape")
            host_key = generate_host_key()
            ctx.secret(host_key.private_openssh)
            user_data = ctx.secret(encode_user_data(render_user_data(host_key, f"worker{number}")))
            ctx.log(f"cloud-init user data for {name}: its SSH host key pair ({len(user_data)} bytes; not shown: it holds "
                    "the host's private key)", "file")
            flex = c.shape.endswith(".Flex")
            ssh_public_key = _read_ssh_public_key(ctx)
            instance = await _launch_with_retries(
                ctx, cloud, ads,
                lambda ad: cloud.launch_instance(
                    compartment_id=compartment, availability_domain=ad, name=name, shape=c.shape,
                    ocpus=c.ocpus if flex else None, memory_gb=c.memory_gb if flex else None, image_id=image.id,
                    subnet_id=subnet_id, ssh_public_key=ssh_public_key, user_data_b64=user_data),
                lambda: cloud.list_instances(compartment, name),
            )
            made.append({"id": instance.id, "private_ip": "", "host_key": host_key.public_line})
            ctx.remember(VMS, made)
            ctx.log(f"launched {name} in the main host's subnet: {instance.id}; its host key (through cloud-init) "
                    f"{host_key_fingerprint(host_key.public_line)}")
            await _wait_running(ctx, cloud, instance.id)
            made[-1]["private_ip"] = await private_address(ctx, cloud, compartment, instance.id)
            ctx.remember(VMS, made)
            ctx.log(f"{name} runs at the private address {made[-1]['private_ip']}")
            changed = True
    except CloudError as exc:
        raise explain(exc, ctx) from None
    if not changed:
        ctx.log(f"the worker instance(s) run: {', '.join(short(vm['id']) + ' at ' + vm['private_ip'] for vm in made)}")
    return Status.DONE if changed else Status.UNCHANGED


async def private_address(ctx: StageContext, cloud: Any, compartment: str, instance_id: str) -> str:
    """The instance's private IPv4 in the subnet, through its primary VNIC."""
    timing = timing_for(ctx)
    waited = 0.0
    while True:
        attachments = [a for a in await cloud.list_vnic_attachments(compartment, instance_id) if a.lifecycle_state == "ATTACHED"]
        for attachment in attachments:
            vnic = await cloud.get_vnic(attachment.vnic_id)
            if vnic.private_ip and getattr(vnic, "is_primary", True):
                return str(vnic.private_ip)
        if waited >= timing.running_timeout:
            raise StageError("the worker instance's network interface never attached", "check it in the console, then rerun")
        await ctx.sleep(timing.poll_interval)
        waited += timing.poll_interval


def rule_admits(rule: Any, port: int, source: str) -> bool:
    """Whether an ingress rule lets new TCP connections to `port` in from `source` (a /32 or wider)."""
    import ipaddress

    if rule.protocol not in (PROTOCOL_NUMBERS["tcp"], "all") or getattr(rule, "source_type", None) not in (None, "CIDR_BLOCK"):
        return False
    try:
        if not ipaddress.ip_network(source).subnet_of(ipaddress.ip_network(rule.source)):
            return False
    except (ValueError, TypeError):
        return False
    options = getattr(rule, "tcp_options", None)
    ports = getattr(options, "destination_port_range", None) if options is not None else None
    return ports is None or ports.min <= port <= ports.max


async def open_private_ingress(ctx: StageContext) -> Status:
    """The subnet's security list: each worker host reaches the main host's private ports (Postgres,
    Redis, replication), the main host reaches each worker host's workers; from those /32 addresses
    alone. Every rule already there is kept (read-modify-write with the etag)."""
    cloud = await cloud_for(ctx)
    d = ctx.deployment
    layout = layout_of(d)
    sl_id = ctx.facts.get("cloud.security_list_id")
    if not sl_id:
        raise StageError("no security list is known for the subnet", "the cloud.network stage must finish first; rerun")
    wanted: list[tuple[str, int]] = []
    for host in layout.hosts:
        wanted += [(f"{host.address}/32", port) for port in reached_from_worker_hosts(d, layout)]
        wanted += [(f"{layout.main_private}/32", w.port) for w in layout.on(host.address)]
    try:
        for _ in range(5):
            security_list, etag = await cloud.get_security_list(sl_id)
            rules = list(security_list.ingress_security_rules or [])
            missing = [(source, port) for source, port in wanted if not any(rule_admits(r, port, source) for r in rules)]
            if not missing:
                ctx.log(f"the security list already lets the hosts reach each other ({len(wanted)} rule(s))")
                return Status.UNCHANGED
            by_source: dict[str, list[Port]] = {}
            for source, port in missing:
                by_source.setdefault(source, []).append(Port(port, "tcp", "workers"))
            try:
                for source, ports in by_source.items():  # one source per update; the etag moves on each
                    await cloud.add_ingress_rules(sl_id, rules, ports, etag, source=source)
                    security_list, etag = await cloud.get_security_list(sl_id)
                    rules = list(security_list.ingress_security_rules or [])
            except CloudError as exc:
                if exc.status != 412:
                    raise
                ctx.log("the security list changed while it was being edited (etag mismatch): reading it again")
                continue
            ctx.log("opened " + "; ".join(f"TCP {', '.join(str(p.number) for p in ports)} from {source}"
                                          for source, ports in by_source.items()))
            return Status.DONE
    except CloudError as exc:
        raise explain(exc, ctx) from None
    raise StageError("the security list kept changing while it was being edited", "rerun when nobody else is editing it")
