#!/opt/venv/bin/python3
"""Entrypoint of the lab's stand-in for the `matrixdotorg/synapse` image (tests/lab).

Same interface as the real image's /start.py, written for the lab:
  generate      write homeserver.yaml, <server_name>.log.config and <server_name>.signing.key
                into /data (needs SYNAPSE_SERVER_NAME and SYNAPSE_REPORT_STATS)
  run [ARGS]    (also: no argument) run Synapse (`-m SYNAPSE_WORKER`, default
                synapse.app.homeserver) with SYNAPSE_CONFIG_PATH (default /data/homeserver.yaml)
                unless ARGS name a config
  anything else refused ("Unknown execution mode", exit 2), as by the real image: run other
                tools with `--entrypoint` (e.g. `--entrypoint synapse_port_db`) or `docker exec`
Runs Synapse as UID:GID (default 991:991) when started as root, as the real image does, with
jemalloc preloaded as the real image's start.py does it (LD_PRELOAD of Debian's libjemalloc2 for
this machine's architecture, when it is there; `run` only).
The lab's copy trusts no key server (nothing outside can be reached from the lab).
"""
import os
import platform
import re
import subprocess
import sys

PYTHON = "/opt/venv/bin/python3"

LOG_CONFIG = """\
# Log configuration for Synapse (matrix-installer lab image): everything to the console.
version: 1

formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'

handlers:
  console:
    class: logging.StreamHandler
    formatter: precise

loggers:
  synapse.storage.SQL:
    level: INFO

root:
  level: {level}
  handlers: [console]

disable_existing_loggers: false
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def error(msg):
    log(msg)
    sys.exit(2)


def ownership_args(environ):
    if os.getuid() != 0:
        return None, []
    ownership = "{}:{}".format(environ.get("UID", 991), environ.get("GID", 991))
    uid, gid = ownership.split(":")
    return ownership, ["setpriv", "--reuid", uid, "--regid", gid, "--clear-groups", "--"]


def paths(environ):
    config_dir = environ.get("SYNAPSE_CONFIG_DIR", "/data")
    config_path = environ.get("SYNAPSE_CONFIG_PATH", config_dir + "/homeserver.yaml")
    data_dir = environ.get("SYNAPSE_DATA_DIR", "/data")
    return config_dir, config_path, data_dir


def no_key_servers(config_path):
    with open(config_path) as f:
        text = f.read()
    # Drop the generated `trusted_key_servers:` block (the key and its indented lines).
    text = re.sub(r"(?m)^trusted_key_servers:.*\n(?:[ \t-].*\n|\n)*", "", text)
    text = re.sub(r"(?m)^suppress_key_server_warning:.*\n", "", text)
    text = text.rstrip("\n") + "\n"
    text += "# matrix-installer lab: no key server is reachable from the lab.\n"
    text += "trusted_key_servers: []\nsuppress_key_server_warning: true\n"
    with open(config_path, "w") as f:
        f.write(text)


def generate(environ):
    for v in ("SYNAPSE_SERVER_NAME", "SYNAPSE_REPORT_STATS"):
        if v not in environ:
            error(
                "Environment variable '%s' is mandatory in `generate` mode.\n"
                "See the lab image's /start.py." % (v,)
            )
    server_name = environ["SYNAPSE_SERVER_NAME"]
    config_dir, config_path, data_dir = paths(environ)
    ownership, drop = ownership_args(environ)
    if os.path.exists(config_path):
        error("Config file '%s' already exists: not generating a new one." % (config_path,))
    os.makedirs(config_dir, exist_ok=True)
    os.makedirs(data_dir, exist_ok=True)
    if ownership is not None:
        log("Setting ownership on %s to %s" % (data_dir, ownership))
        subprocess.run(["chown", ownership, data_dir], check=True)
    log_config_file = "%s/%s.log.config" % (config_dir, server_name)
    if not os.path.exists(log_config_file):
        log("Creating log config %s" % (log_config_file,))
        with open(log_config_file, "w") as f:
            f.write(LOG_CONFIG.format(level=environ.get("SYNAPSE_LOG_LEVEL", "INFO")))
    args = drop + [
        PYTHON, "-m", "synapse.app.homeserver",
        "--server-name", server_name,
        "--report-stats", environ["SYNAPSE_REPORT_STATS"],
        "--config-path", config_path,
        "--config-directory", config_dir,
        "--data-directory", data_dir,
        "--generate-config",
        "--open-private-ports",
    ]
    rc = subprocess.run(args, env=environ).returncode
    if rc != 0:
        sys.exit(rc)
    no_key_servers(config_path)


def start(environ, extra):
    if environ.get("LAB_SYNAPSE_BROKEN"):
        log("matrix-installer lab: this Synapse image is deliberately broken; refusing to start.")
        sys.exit(1)
    args = list(extra)
    if "-m" not in args:
        args = ["-m", environ.get("SYNAPSE_WORKER", "synapse.app.homeserver")] + args
    if not any(a.startswith(("--config-path", "-c")) for a in args):
        _, config_path, _ = paths(environ)
        if not os.path.exists(config_path):
            error(
                "Config file '%s' does not exist.\n\n"
                "Generate one first by running this image with `generate`." % (config_path,)
            )
        args += ["--config-path", config_path]
    # As the real image's start.py: jemalloc for Synapse when the image has it.
    jemallocpath = "/usr/lib/%s-linux-gnu/libjemalloc.so.2" % (platform.machine(),)
    if os.path.isfile(jemallocpath):
        environ["LD_PRELOAD"] = jemallocpath
    else:
        log("Could not find %s, will not use" % (jemallocpath,))
    _, drop = ownership_args(environ)
    args = drop + [PYTHON] + args
    log("Starting synapse with args " + " ".join(args))
    os.execvpe(args[0], args, environ)


def main(args, environ):
    mode = args[1] if len(args) > 1 else "run"
    if mode == "generate":
        return generate(environ)
    if mode == "run":
        return start(environ, args[2:])
    error("Unknown execution mode '%s'" % (mode,))


if __name__ == "__main__":
    main(sys.argv, dict(os.environ))
