#!/bin/sh
# Build the root filesystem of the lab's stand-in for the state compressor's image
# (ghcr.io/matrix-org/rust-synapse-compress-state): the `synapse_auto_compressor` command, here
# the package index's synapse-auto-compressor wheel (the same Rust code as a Python extension,
# x86_64 only) behind a small CLI of the binary's flags (compressor-cli.py). Called by
# tests/lab/lab.py (build_compressor_image) as root; its text is part of the image's cache key.
# Environment: ROOTFS (work dir, wiped), OUT (tar to write), BASE (the base tar made by
# build-base.sh), COMPRESSOR_VERSION, CLI (the command), PIP_CACHE.
set -eu
: "${ROOTFS:?}" "${OUT:?}" "${BASE:?}" "${COMPRESSOR_VERSION:?}" "${CLI:?}" "${PIP_CACHE:?}"

cleanup() {
    for m in root/.cache/pip proc; do
        if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then umount -l "$ROOTFS/$m"; fi
    done
}
trap cleanup EXIT INT TERM

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
tar --numeric-owner -C "$ROOTFS" -xf "$BASE"
mount -t proc proc "$ROOTFS/proc"
mkdir -p "$PIP_CACHE" "$ROOTFS/root/.cache/pip"
mount --bind "$PIP_CACHE" "$ROOTFS/root/.cache/pip"
[ -s "$ROOTFS/etc/resolv.conf" ] || cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
install -m 0755 "$CLI" "$ROOTFS/usr/local/bin/synapse_auto_compressor"
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/tmp/runner-ca.crt"

chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    PIP_CERT=/tmp/runner-ca.crt PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} \
    /bin/sh -eu -s "$COMPRESSOR_VERSION" <<'CHROOT'
python3 -m venv /opt/venv
/opt/venv/bin/pip install -q --only-binary=:all: "synapse-auto-compressor==$1"
/opt/venv/bin/python3 -c 'import synapse_auto_compressor as s; assert s.compress_state_events_table'
CHROOT

umount "$ROOTFS/root/.cache/pip"
umount "$ROOTFS/proc"
rm -rf "$ROOTFS/root/.cache" "$ROOTFS/tmp/runner-ca.crt"
: > "$ROOTFS/etc/resolv.conf"
tar --numeric-owner -C "$ROOTFS" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
rm -rf "$ROOTFS"
