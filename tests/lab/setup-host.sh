#!/bin/sh
# Prepare the test runner for the lab host (tests/lab): Docker's engine and debootstrap.
# Idempotent; run as root before pytest. Installs packages only: starting dockerd is left to
# tests/lab/lab.py (ensure_docker_engine), which also stops it again at the end of the session.
set -eu
if [ "$(id -u)" != 0 ]; then
    echo "setup-host.sh: must run as root" >&2
    exit 1
fi
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
# debootstrap needs these to fetch and check trixie's packages from the bookworm runner.
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need="$need debian-archive-keyring"
command -v zstd >/dev/null 2>&1 || need="$need zstd"
if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $need
fi
