#!/opt/venv/bin/python3
"""`synapse_auto_compressor` as the real image's binary takes it (-p POSTGRES_LOCATION -c CHUNK_SIZE
-n CHUNKS_TO_COMPRESS [-l LEVELS]), over the package index's wheel of the same Rust code (0.1.2:
compress_state_events_table(db_url, chunk_size, default_levels, number_of_chunks)). Lab only."""
import argparse
import logging
import sys

import synapse_auto_compressor

parser = argparse.ArgumentParser(prog="synapse_auto_compressor")
parser.add_argument("-p", dest="postgres", required=True)
parser.add_argument("-c", dest="chunk_size", type=int, required=True)
parser.add_argument("-n", dest="chunks", type=int, required=True)
parser.add_argument("-l", dest="levels", default="100,50,25")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
try:
    synapse_auto_compressor.compress_state_events_table(args.postgres, args.chunk_size, args.levels, args.chunks)
except Exception as exc:  # the binary exits 1 with the error
    print(f"synapse_auto_compressor failed: {exc}", file=sys.stderr)
    sys.exit(1)
