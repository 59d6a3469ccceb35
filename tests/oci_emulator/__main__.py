"""Run the emulator by hand: `python -m tests.oci_emulator DIR [--zone example.org] [--capacity AD:N ...]`.

Writes an API key and an OCI config into DIR, serves until Ctrl-C, and prints what to export.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tests.oci_emulator.fixtures import TENANCY, make_api_key, write_config
from tests.oci_emulator.server import Emulator, Server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.oci_emulator")
    parser.add_argument("folder", type=Path, help="where the API key and config file are written")
    parser.add_argument("--zone", action="append", default=[], help="an OCI DNS zone to create (repeatable)")
    parser.add_argument("--capacity", action="append", default=[], metavar="AD:N",
                        help='answer "Out of host capacity" N times in AD (e.g. Uocm:PHX-AD-1:3)')
    parser.add_argument("--public-ip-prefix", default="129.146.7.", help="instances get PREFIX<n>")
    parser.add_argument("--public-ip", help="every instance gets this address (a lab host, e.g. 127.0.0.1)")
    args = parser.parse_args()
    key = make_api_key(args.folder, "oci_api_key")
    config = write_config(args.folder / "config", key)
    emulator = Emulator(tenancy=TENANCY, keys={key.key_id: key.public_key}, public_ip_prefix=args.public_ip_prefix,
                        public_ip=args.public_ip)
    for zone in args.zone:
        emulator.add_zone(zone)
    for spec in args.capacity:
        ad, _, times = spec.rpartition(":")
        emulator.inject_capacity(ad, int(times))
    server = Server(emulator).start()
    print(f"export MATRIX_INSTALLER_OCI_ENDPOINT={server.url}")
    print(f"# answers: [cloud] oci_config = \"{config}\"  oci_profile = \"DEFAULT\"", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
