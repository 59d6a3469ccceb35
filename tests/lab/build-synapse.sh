#!/bin/sh
# Build the root filesystem of the lab's stand-in for `matrixdotorg/synapse` and write it as a
# tar archive for `docker import`. Called by tests/lab/lab.py (build_synapse_image) as root; its
# text is part of the image's cache key.
# Environment: ROOTFS (work dir, wiped), OUT (tar to write), BASE (cached base tar: made by
# debootstrap with BASE_PACKAGES when missing), SUITE, MIRROR, SYNAPSE_VERSION, START_PY (the entrypoint),
# PIP_CACHE (a directory to keep pip's downloads in between builds).
set -eu
: "${ROOTFS:?}" "${OUT:?}" "${BASE:?}" "${SUITE:?}" "${MIRROR:?}" "${SYNAPSE_VERSION:?}"
: "${START_PY:?}" "${PIP_CACHE:?}" "${BASE_PACKAGES:?}"

cleanup() {
    for m in root/.cache/pip proc; do
        if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then umount -l "$ROOTFS/$m"; fi
    done
}
trap cleanup EXIT INT TERM

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
if [ ! -s "$BASE" ]; then
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar --numeric-owner -C "$ROOTFS" -cf "$BASE.tmp" .
    mv "$BASE.tmp" "$BASE"
else
    tar --numeric-owner -C "$ROOTFS" -xf "$BASE"
fi

mount -t proc proc "$ROOTFS/proc"
mkdir -p "$PIP_CACHE" "$ROOTFS/root/.cache/pip"
mount --bind "$PIP_CACHE" "$ROOTFS/root/.cache/pip"
[ -s "$ROOTFS/etc/resolv.conf" ] || cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
install -m 0755 "$START_PY" "$ROOTFS/start.py"
# pip in the chroot trusts what the runner trusts (the runner may sit behind a TLS proxy).
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/tmp/runner-ca.crt"

chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    PIP_CERT=/tmp/runner-ca.crt PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} \
    /bin/sh -eu -s "$SYNAPSE_VERSION" <<'CHROOT'
python3 -m venv /opt/venv
/opt/venv/bin/pip install -q "matrix-synapse==$1"
groupadd --system --gid 991 synapse
useradd --system --uid 991 --gid 991 --no-create-home --home-dir /data synapse
mkdir -p /data
for tool in register_new_matrix_user synctl hash_password generate_signing_key; do
    ln -sf /opt/venv/bin/$tool /usr/local/bin/$tool
done
/opt/venv/bin/python3 -c 'import synapse; print("synapse", synapse.__version__)'
CHROOT

umount "$ROOTFS/root/.cache/pip"
umount "$ROOTFS/proc"
rm -rf "$ROOTFS/root/.cache" "$ROOTFS/tmp/runner-ca.crt"
: > "$ROOTFS/etc/resolv.conf"
tar --numeric-owner -C "$ROOTFS" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
rm -rf "$ROOTFS"
