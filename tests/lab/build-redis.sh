#!/bin/sh
# Build the root filesystem of the lab's stand-in for `redis:7-alpine` (Debian's redis-server on
# the lab's trixie base) and write it as a tar archive. Called by tests/lab/lab.py
# (build_redis_image) as root; its text is part of the image's cache key.
# Environment: ROOTFS (work dir, wiped), OUT (tar to write), OUT_VERSION (file to write the
# installed Redis version to, e.g. 8.0.2), BASE (the base tar made by build-base.sh), SUITE,
# MIRROR, ENTRYPOINT (the image's docker-entrypoint.sh).
set -eu
: "${ROOTFS:?}" "${OUT:?}" "${OUT_VERSION:?}" "${BASE:?}" "${SUITE:?}" "${MIRROR:?}" "${ENTRYPOINT:?}"

cleanup() {
    if mountpoint -q "$ROOTFS/proc" 2>/dev/null; then umount -l "$ROOTFS/proc"; fi
}
trap cleanup EXIT INT TERM

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
tar --numeric-owner -C "$ROOTFS" -xf "$BASE"

# No service may start inside the chroot (it shares the runner's network and processes).
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOTFS/proc"
[ -s "$ROOTFS/etc/resolv.conf" ] || cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cat > "$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
install -m 0755 "$ENTRYPOINT" "$ROOTFS/usr/local/bin/docker-entrypoint.sh"

chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive /bin/sh -eu <<'CHROOT'
# The official alpine image's redis user: uid 999, group redis (gid 1000), made before the
# package, whose maintainer scripts would otherwise pick a free system id.
groupadd --system --gid 1000 redis
useradd --system --uid 999 --gid 1000 --home-dir /data --no-create-home --shell /usr/sbin/nologin redis
cat > /etc/dpkg/dpkg.cfg.d/lab-slim <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*/LC_MESSAGES/*.mo
DPKG
apt-get update -q
apt-get install -y -q --no-install-recommends redis-server redis-tools
# What the base brought for the Synapse image, which the real redis image does not have.
apt-get purge -y -q python3 python3-minimal python3-venv python3.13 python3.13-minimal \
    python3.13-venv libpython3-stdlib libpython3.13-minimal libpython3.13-stdlib \
    python3-pip-whl python3-setuptools-whl media-types curl libcurl4t64
rm -rf /usr/lib/python3 /usr/lib/python3.13 /usr/share/doc/python3*
install -d -o redis -g redis -m 0755 /data
install -d -m 0755 /usr/local/etc/redis
redis-server --version
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/apt
CHROOT

dpkg-query --admindir="$ROOTFS/var/lib/dpkg" -W -f '${Version}' redis-server \
    | sed -E 's/^[0-9]+://; s/[-+~].*$//' > "$OUT_VERSION.tmp"
grep -Eq '^[0-9]+\.[0-9]+(\.[0-9]+)?$' "$OUT_VERSION.tmp"

umount "$ROOTFS/proc"
rm -f "$ROOTFS/usr/sbin/policy-rc.d"
: > "$ROOTFS/etc/resolv.conf"
tar --numeric-owner -C "$ROOTFS" -cf "$OUT.tmp" .
mv "$OUT_VERSION.tmp" "$OUT_VERSION"
mv "$OUT.tmp" "$OUT"
rm -rf "$ROOTFS"
