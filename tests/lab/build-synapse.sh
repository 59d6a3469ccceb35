#!/bin/sh
# Build the root filesystem of the lab's stand-in for `matrixdotorg/synapse` and write it as a
# tar archive for `docker import`. Called by tests/lab/lab.py (build_synapse_image) as root; its
# text is part of the image's cache key.
# Environment: ROOTFS (work dir, wiped), OUT (tar to write), BASE (the base tar made by
# build-base.sh), SYNAPSE_VERSION, PSYCOPG2_VERSION, START_PY (the entrypoint), PIP_CACHE (a
# directory to keep pip's downloads in between builds), SUITE and MIRROR (for libjemalloc2).
set -eu
: "${ROOTFS:?}" "${OUT:?}" "${BASE:?}" "${SYNAPSE_VERSION:?}" "${PSYCOPG2_VERSION:?}"
: "${START_PY:?}" "${PIP_CACHE:?}" "${SUITE:?}" "${MIRROR:?}"

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
install -m 0755 "$START_PY" "$ROOTFS/start.py"
# jemalloc, as the real image has it (its start.py preloads it; so does ours).
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
cat > "$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
SOURCES
chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive /bin/sh -eu -c \
    'apt-get update -q && apt-get install -y -q --no-install-recommends libjemalloc2 && apt-get clean && rm -rf /var/lib/apt/lists/*'
rm -f "$ROOTFS/usr/sbin/policy-rc.d"
# pip in the chroot trusts what the runner trusts (the runner may sit behind a TLS proxy).
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/tmp/runner-ca.crt"

chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    PIP_CERT=/tmp/runner-ca.crt PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} \
    /bin/sh -eu -s "$SYNAPSE_VERSION" "$PSYCOPG2_VERSION" <<'CHROOT'
python3 -m venv /opt/venv
# The real image's extras: Postgres (psycopg2) and Redis (txredisapi, hiredis, for workers).
# Its psycopg2 is built from source against Debian's libpq5; here psycopg2-binary, the same
# `psycopg2` module in a wheel that carries its own libpq (no compiler in the lab build).
/opt/venv/bin/pip install -q "matrix-synapse[redis]==$1" "psycopg2-binary==$2"
groupadd --system --gid 991 synapse
useradd --system --uid 991 --gid 991 --no-create-home --home-dir /data synapse
mkdir -p /data
# The package's scripts on PATH, as in the real image (which installs them in /usr/local/bin).
for tool in register_new_matrix_user synctl hash_password generate_signing_key \
        export_signing_key generate_config generate_log_config synapse_homeserver \
        synapse_port_db synapse_review_recent_signups synapse_worker update_synapse_database; do
    ln -sf /opt/venv/bin/$tool /usr/local/bin/$tool
done
/opt/venv/bin/python3 -c 'import synapse, psycopg2, txredisapi, hiredis; print("synapse", synapse.__version__, "psycopg2", psycopg2.__version__)'
CHROOT

umount "$ROOTFS/root/.cache/pip"
umount "$ROOTFS/proc"
rm -rf "$ROOTFS/root/.cache" "$ROOTFS/tmp/runner-ca.crt"
: > "$ROOTFS/etc/resolv.conf"
tar --numeric-owner -C "$ROOTFS" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
rm -rf "$ROOTFS"
