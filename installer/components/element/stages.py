"""Element Web's stages: element.files (install: a verified release in place, config.json),
element.upgrade (upgrade mode: a newer release, the previous one kept), element.check (the site as
a browser sees it: config.json naming our server, Element's headers)."""

from __future__ import annotations

import json
import shlex

from installer.components.element import CONFIG, CURRENT, HEADERS, HOME, VERSION_FACT, element_host
from installer.components.element import release as r
from installer.engine import StageContext, StageError
from installer.events import Status
from installer.host.apt import apt_install

q = shlex.quote

PREVIOUS_FACT = "element.previous"
"""State fact: the release served before the last upgrade, kept on the host for a rollback."""
CURL = "curl -fsSL --retry 3 --max-time 600"


def release_source(ctx: StageContext) -> r.Source:
    try:
        found = r.source()
    except r.SourceError as exc:
        raise StageError(str(exc), "unset them to use Element's own releases") from None
    if found.overridden:
        ctx.log(f"note: Element Web releases from {found.releases}, signed by key {found.fingerprint} "
                f"(set by {r.RELEASES_ENV})")
    return found


async def current_tag(ctx: StageContext, *, dry: str = "") -> str:
    """The release `current` points at ("" when there is none)."""
    link = await ctx.run(f"readlink {q(CURRENT)}", sudo=True, check=False, dry_output=dry)
    name = link.stdout.strip()
    return name.removeprefix("element-") if link.ok and name.startswith("element-") else ""


async def resolve(ctx: StageContext, source: r.Source, version: str) -> str:
    """The release tag to install: the one the answers pin, or the newest."""
    if version != "latest":
        return version
    if ctx.dry_run:
        await ctx.run(f"curl -fsS --max-time 60 -o /dev/null -w '%{{redirect_url}}' {q(source.latest)}")
        return r.DRY_TAG
    answer = await ctx.run(f"curl -fsS --max-time 60 -o /dev/null -w '%{{redirect_url}}' {q(source.latest)}", check=False)
    tag = r.tag_from_redirect(answer.stdout)
    if not answer.ok or tag is None:
        said = (answer.stderr.strip() or answer.stdout.strip())[-200:]
        raise StageError(f"the newest Element Web release could not be learned from {source.latest} ({said or 'no redirect'})",
                         'check the host reaches it, or pin a release: [element] version = "v1.11.90"')
    return tag


async def _ensure_gpg(ctx: StageContext) -> None:
    """gpg (to unwrap the armoured key) and gpgv (apt's own verifier, always there)."""
    if not await ctx.probe("command -v gpg >/dev/null && command -v gpgv >/dev/null", sudo=True):
        await apt_install(ctx, "gnupg", "gpgv")


async def fetch_verified(ctx: StageContext, source: r.Source, tag: str) -> None:
    """Download the release, its signature and the release key on the host; check the signature
    is a good one by the pinned key, and the archive holds only element-<tag>/; only then unpack
    it to its own folder (readable by Caddy, owned by root), with config.json linked in."""
    work = f"{HOME}/.download-{tag}"
    archive = f"{work}/{r.folder_name(tag)}.tar.gz"
    keys = f"{work}/gnupg"
    folder = r.folder_name(tag)
    await _ensure_gpg(ctx)
    await ctx.run(f"rm -rf {q(work)} && install -d -m 0755 {q(HOME)} && install -d -m 0700 {q(work)} {q(keys)}", sudo=True)
    ctx.progress(f"downloading Element Web {tag}")
    await ctx.run(f"{CURL} -o {q(archive)} {q(source.archive(tag))} && {CURL} -o {q(archive + '.asc')} "
                  f"{q(source.signature(tag))} && {CURL} -o {q(work + '/key.asc')} {q(source.key_url)}",
                  sudo=True, timeout=1800)
    # gpgv checks against this keyring alone (nothing of root's own keys, no agent).
    keyring = f"{keys}/release-key.gpg"
    await ctx.run(f"gpg --batch --no-tty --homedir {q(keys)} --dearmor -o {q(keyring)} {q(work + '/key.asc')}", sudo=True)
    status = await ctx.run(f"gpgv --keyring {q(keyring)} --status-fd 1 {q(archive + '.asc')} {q(archive)}", sudo=True,
                           check=False, dry_output=f"[GNUPG:] VALIDSIG {source.fingerprint} 0 0 0 4 0 22 10 00 {source.fingerprint}")
    good, said = r.good_signature(status.stdout, source.fingerprint)
    if not good:
        await ctx.run(f"rm -rf {q(work)}", sudo=True)
        raise StageError(f"Element Web {tag}: its signature does not check out ({said}); nothing was unpacked",
                         f"the download from {source.releases} is not the release Element signed: try again later, "
                         "and if it persists, report it")
    ctx.log(f"a real run unpacks only after a good signature by Element's release key {source.fingerprint}" if ctx.dry_run
            else f"Element Web {tag}: {said} (Element's release key {source.fingerprint})")
    listing = await ctx.run(f"tar -tvzf {q(archive)}", sudo=True, quiet=True, dry_output=f"drwxr-xr-x 0/0 0 2026-01-01 00:00 {folder}/")
    if problem := r.archive_problem(listing.stdout, tag):
        await ctx.run(f"rm -rf {q(work)}", sudo=True)
        raise StageError(f"Element Web {tag}: the signed archive is not laid out as a release: {problem}; nothing was unpacked")
    unpacked = f"{work}/unpacked"
    await ctx.run(f"install -d -m 0755 {q(unpacked)} && tar -xzf {q(archive)} -C {q(unpacked)} --no-same-owner "
                  f"--no-same-permissions && chmod -R u=rwX,go=rX {q(unpacked + '/' + folder)} && "
                  f"ln -sfn ../config.json {q(unpacked + '/' + folder + '/config.json')} && "
                  f"mv -T {q(unpacked + '/' + folder)} {q(HOME + '/' + folder)} && rm -rf {q(work)}", sudo=True, timeout=600)


async def put_in_place(ctx: StageContext, source: r.Source, tag: str, current: str) -> None:
    """The release `tag` served from now on (fetched and verified unless its folder is there);
    the one served before kept beside it, older ones removed."""
    folder = f"{HOME}/{r.folder_name(tag)}"
    if await ctx.probe(f"test -s {q(folder)}/index.html", sudo=True):
        ctx.log(f"Element Web {tag} is already unpacked in {folder} (verified when it was)")
    else:
        await fetch_verified(ctx, source, tag)
    await ctx.run(f"ln -sfn {q(r.folder_name(tag))} {q(HOME + '/current.new')} && mv -T {q(HOME + '/current.new')} {q(CURRENT)}",
                  sudo=True)
    ctx.remember(VERSION_FACT, tag)
    keep = {r.folder_name(tag)}
    if current and current != tag:
        ctx.remember(PREVIOUS_FACT, current)
        keep.add(r.folder_name(current))
    listed = await ctx.run(f"ls -1 {q(HOME)}", sudo=True, check=False, dry_output="")
    for name in listed.stdout.split():
        if name.startswith("element-v") and name not in keep:
            await ctx.run(f"rm -rf {q(HOME + '/' + name)}", sudo=True)
            ctx.log(f"removed {name}: two releases are kept, the one served and the one before")


async def write_config(ctx: StageContext) -> bool:
    a = ctx.answers
    text = r.client_config(matrix_host=a.domain.matrix_host, server_name=a.domain.server_name)
    return await ctx.put_file(CONFIG, text.encode(), mode=0o644, owner="root:root", backup=False)


async def install_release(ctx: StageContext) -> Status:
    """A verified release in place unless one is (an install keeps the release it finds; upgrade
    mode looks for a newer one), and config.json pointing at this server."""
    a = ctx.answers
    changed = False
    source = release_source(ctx)
    current = await current_tag(ctx)
    if current and a.element.version in ("latest", current):
        ctx.log(f"Element Web {current} is in place" + (" (upgrade mode looks for newer releases)"
                                                        if a.element.version == "latest" else ""))
        if ctx.facts.get(VERSION_FACT) != current:
            ctx.remember(VERSION_FACT, current)
    else:
        tag = await resolve(ctx, source, a.element.version)
        await put_in_place(ctx, source, tag, current)
        ctx.log(f"Element Web {tag} is served from {HOME}/{r.folder_name(tag)}")
        changed = True
    if await write_config(ctx):
        changed = True
    ctx.link("Element Web", f"https://{element_host(a)}")
    return Status.DONE if changed else Status.UNCHANGED


async def upgrade_release(ctx: StageContext) -> Status:
    """The newest release (or the one the answers pin), verified as at install, served instead of
    the one before, which stays on the host for a rollback."""
    a = ctx.answers
    source = release_source(ctx)
    current = await current_tag(ctx, dry="element-vINSTALLED")
    if not current:
        raise StageError(f"Element Web is not in {HOME} any more (no {CURRENT})", "rerun the install to put it back")
    tag = await resolve(ctx, source, a.element.version)
    changed = False
    if tag == current and not ctx.dry_run:
        ctx.log(f"Element Web {current} is the newest release" if a.element.version == "latest"
                else f"Element Web {current} is the release the answers pin")
    else:
        await put_in_place(ctx, source, tag, current)
        ctx.log(f"Element Web {current} -> {tag}; {current} is kept in {HOME}/{r.folder_name(current)}; to go back: "
                f"sudo ln -sfn {r.folder_name(current)} {CURRENT}")
        changed = True
    if await write_config(ctx):
        changed = True
    ctx.link("Element Web", f"https://{element_host(a)}")
    return Status.DONE if changed else Status.UNCHANGED


# --- element.check ---------------------------------------------------------------------------------

def expected_config(ctx: StageContext) -> dict:
    a = ctx.answers
    return json.loads(r.client_config(matrix_host=a.domain.matrix_host, server_name=a.domain.server_name))


def config_problems(found: object, wanted: dict) -> list[str]:
    """What a served config.json lacks of ours (names only: what the network sent is not repeated)."""
    if not isinstance(found, dict):
        return ["config.json is not a JSON object"]
    return [f"config.json's {key} is not ours" for key, value in wanted.items() if found.get(key) != value]


def header_problems(headers: object) -> list[str]:
    problems = []
    for name, value in HEADERS:
        got = headers.get(name) if hasattr(headers, "get") else None  # type: ignore[union-attr]
        if got is None:
            problems.append(f"no {name} header")
        elif got.strip() != value:
            problems.append(f"{name} is not {value!r}")
    return problems


async def check_served(ctx: StageContext) -> Status:
    """https://<element host>/ and /config.json as a browser gets them (through DNS, --connect-to and
    the CAs this machine trusts): config.json naming our server, Element's security headers."""
    from installer.federation.diagnose import connection_problem
    from installer.federation.net import Net, NetError

    host = element_host(ctx.answers)
    options = ctx.options
    if ctx.dry_run:
        for path in ("/", "/config.json"):
            ctx.log(f"GET https://{host}{path}: Element's headers, and config.json naming {ctx.answers.domain.server_name}",
                    "command")
        return Status.PLANNED

    def failed(detail: str, fix: str) -> StageError:
        ctx.report_check("element", False, detail, fix)
        return StageError(f"Element Web: {detail}", fix)

    async with Net(connect_to=options.connect_to, dns_server=options.dns_server, ca_file=options.ca_file) as net:
        found, targets = await net.locate(host, 443)
        if not targets:
            raise failed(found.error or f"{host} has no address", f"point {host}'s A record at this server")
        ip, port = targets[0]
        try:
            page = await net.request_at(ip, port, sni=host, host_header=host, method="GET", path="/")
            config = await net.request_at(ip, port, sni=host, host_header=host, method="GET", path="/config.json")
        except NetError as exc:
            detail, fix = connection_problem(exc, where=f"{host}:443", port=443)
            raise failed(detail, fix) from None
    problems = []
    if page.status != 200 or b"<" not in page.body:
        problems.append(f"https://{host}/ answered {page.reason}, not the app")
    problems += header_problems(page.headers)
    try:
        served = config.json() if config.status == 200 else None
    except ValueError:
        served = None
    problems += config_problems(served, expected_config(ctx)) if served is not None else [
        f"https://{host}/config.json answered {config.reason}, not JSON"]
    if problems:
        raise failed("; ".join(problems), f"rerun the install; on the host: sudo journalctl -u caddy -n 50, ls -l {CURRENT}/")
    detail = (f"https://{host}/ serves Element Web with its config.json for {ctx.answers.domain.server_name} and "
              "the headers X-Frame-Options, X-Content-Type-Options, CSP frame-ancestors")
    ctx.report_check("element", True, detail)
    ctx.log(detail)
    return ctx.proven()
