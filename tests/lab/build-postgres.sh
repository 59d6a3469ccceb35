#!/bin/sh
# Build the root filesystem of the lab's stand-in for `postgres:17-alpine` (Debian's
# postgresql-17 on the lab's trixie base) and write it as a tar archive. Called by
# tests/lab/lab.py (build_postgres_image) as root; its text is part of the image's cache key.
# Environment: ROOTFS (work dir, wiped), OUT (tar to write), OUT_VERSION (file to write the
# installed PostgreSQL version to, e.g. 17.6), BASE (the base tar made by build-base.sh),
# SUITE, MIRROR, PG_MAJOR, ENTRYPOINT (the image's docker-entrypoint.sh).
set -eu
: "${ROOTFS:?}" "${OUT:?}" "${OUT_VERSION:?}" "${BASE:?}" "${SUITE:?}" "${MIRROR:?}"
: "${PG_MAJOR:?}" "${ENTRYPOINT:?}"

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
# The stable point releases and security fixes of postgresql-17 come from these.
cat > "$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
install -m 0755 "$ENTRYPOINT" "$ROOTFS/usr/local/bin/docker-entrypoint.sh"

chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive /bin/sh -eu -s "$PG_MAJOR" <<'CHROOT'
major=$1
# The official alpine image's postgres user and group: uid 70, gid 70, home /var/lib/postgresql.
# Made before the package, whose maintainer scripts would otherwise pick a free system id.
groupadd --system --gid 70 postgres
useradd --system --uid 70 --gid 70 --home-dir /var/lib/postgresql --no-create-home \
    --shell /bin/sh postgres
# Debian's packaging would create a cluster (/etc/postgresql/17/main) at install time: the
# image initializes its own data directory at first start instead.
mkdir -p /etc/postgresql-common
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf

# Like Debian's slim images: no documentation or message translations from packages (the
# official image has neither: it is built without NLS and deletes its docs).
cat > /etc/dpkg/dpkg.cfg.d/lab-slim <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*/LC_MESSAGES/*.mo
DPKG
apt-get update -q
apt-get install -y -q --no-install-recommends "postgresql-$major" locales
# What the base brought for the Synapse image, which the real postgres image does not have.
apt-get purge -y -q python3 python3-minimal python3-venv python3.13 python3.13-minimal \
    python3.13-venv libpython3-stdlib libpython3.13-minimal libpython3.13-stdlib \
    python3-pip-whl python3-setuptools-whl media-types curl libcurl4t64
rm -rf /usr/lib/python3 /usr/lib/python3.13 /usr/share/doc/python3*

# The real image's LANG is en_US.utf8: databases made without --locale get that.
localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8

# As the real image does to its sample: every initdb writes listen_addresses = '*'.
sample=/usr/share/postgresql/$major/postgresql.conf.sample
sed -i -E "s/^#?listen_addresses[[:space:]]*=[[:space:]]*[^[:space:]]+/listen_addresses = '*'/" "$sample"
grep -q "^listen_addresses = '\*'" "$sample"

install -d -o postgres -g postgres -m 1777 /var/lib/postgresql /var/lib/postgresql/data
install -d -o postgres -g postgres -m 3777 /var/run/postgresql
install -d -m 0755 /docker-entrypoint-initdb.d
/usr/lib/postgresql/$major/bin/postgres --version

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/apt
CHROOT

dpkg-query --admindir="$ROOTFS/var/lib/dpkg" -W -f '${Version}' "postgresql-$PG_MAJOR" \
    | sed -E 's/^[0-9]+://; s/[-+~].*$//' > "$OUT_VERSION.tmp"
grep -Eq "^$PG_MAJOR\.[0-9]+$" "$OUT_VERSION.tmp"

umount "$ROOTFS/proc"
rm -f "$ROOTFS/usr/sbin/policy-rc.d"
: > "$ROOTFS/etc/resolv.conf"
tar --numeric-owner -C "$ROOTFS" -cf "$OUT.tmp" .
mv "$OUT_VERSION.tmp" "$OUT_VERSION"
mv "$OUT.tmp" "$OUT"
rm -rf "$ROOTFS"
