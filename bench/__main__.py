"""Run the benchmarks: `python -m bench [startup ssh logs run memory server]` (default: all)."""

from __future__ import annotations

import importlib
import sys

ALL = ["startup", "ssh", "logs", "run", "memory", "server", "workers"]


def main(names: list[str]) -> None:
    for name in names or ALL:
        importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
