#!/bin/sh
# Build the root filesystem the lab's stand-in images start from (Debian minbase with
# BASE_PACKAGES) and write it as a tar archive. Called by tests/lab/lab.py as root, once per
# cache key: build-synapse.sh and build-postgres.sh unpack it instead of running debootstrap
# again. Its text is part of the cache key of the base and of every image built on it.
# Environment: ROOTFS (work dir, wiped), OUT (tar to write), SUITE, MIRROR, BASE_PACKAGES.
set -eu
: "${ROOTFS:?}" "${OUT:?}" "${SUITE:?}" "${MIRROR:?}" "${BASE_PACKAGES:?}"

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar --numeric-owner -C "$ROOTFS" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
rm -rf "$ROOTFS"
