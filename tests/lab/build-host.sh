#!/bin/sh
# Build the lab host's root filesystem (a systemd Debian machine that looks like Oracle's Ubuntu
# image where it matters) and write it as a tar archive for `docker import`.
# Called by tests/lab/lab.py (build_host_image) as root; its text is part of the image's cache key.
# Environment: ROOTFS (work dir, wiped), OUT (tar to write), SUITE, MIRROR, PACKAGES (comma list).
set -eu
: "${ROOTFS:?}" "${OUT:?}" "${SUITE:?}" "${MIRROR:?}" "${PACKAGES:?}"

cleanup() {
    for m in proc; do
        if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then umount -l "$ROOTFS/$m"; fi
    done
}
trap cleanup EXIT INT TERM

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR"

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

chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive /bin/sh -eu <<'CHROOT'
# iptables-persistent asks whether to save the current rules: answer no (the chroot would save
# the runner's rules); the lab's rules are written below.
debconf-set-selections <<'DEBCONF'
iptables-persistent iptables-persistent/autosave_v4 boolean false
iptables-persistent iptables-persistent/autosave_v6 boolean false
DEBCONF
apt-get update -q
apt-get install -y -q --no-install-recommends iptables-persistent netfilter-persistent

# The default user of Oracle's Ubuntu image: no password (but not locked, so sshd lets keys in),
# passwordless sudo as cloud-init writes it. The session's key is authorized at container start.
useradd --create-home --shell /bin/bash --groups sudo,adm ubuntu
usermod -p '*' ubuntu
printf 'ubuntu ALL=(ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
install -d -m 0700 -o ubuntu -g ubuntu /home/ubuntu/.ssh

# Oracle's default Ubuntu ruleset (without its InstanceServices chain for the metadata service):
# only SSH comes in; everything else is rejected until someone opens it.
mkdir -p /etc/iptables
cat > /etc/iptables/rules.v4 <<'RULES'
# Oracle Cloud's default Ubuntu INPUT ruleset (lab copy, see tests/lab/build-host.sh)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p udp --sport 123 -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
COMMIT
RULES
cat > /etc/iptables/rules.v6 <<'RULES'
# The same policy for IPv6 (lab copy, see tests/lab/build-host.sh)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p ipv6-icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p udp --sport 123 -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp6-adm-prohibited
-A FORWARD -j REJECT --reject-with icmp6-adm-prohibited
COMMIT
RULES
chmod 0640 /etc/iptables/rules.v4 /etc/iptables/rules.v6
systemctl enable netfilter-persistent.service ssh.service
# A container cannot load kernel modules: the unit would only fail and degrade the boot.
systemctl mask systemd-modules-load.service
# Docker mounts /proc/sys read-only in containers. A nested dockerd must write its containers'
# network sysctls (it fails with "failed to disable IPv6 on container's interface eth0"), as it
# can on a VM: make /proc/sys/net writable. It is per network namespace, so only the lab host's
# own network is affected (the rest of /proc/sys stays read-only: it is the runner's kernel).
cat > /etc/systemd/system/lab-proc-sys-net.service <<'UNIT'
[Unit]
Description=matrix-installer lab: writable /proc/sys/net (Docker mounts /proc/sys read-only)
DefaultDependencies=no
Before=sysinit.target systemd-sysctl.service
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mount --bind /proc/sys/net /proc/sys/net && mount -o remount,bind,rw /proc/sys/net'

[Install]
WantedBy=sysinit.target
UNIT
systemctl enable lab-proc-sys-net.service

# A machine in a container: every container gets its own machine id at boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
CHROOT

umount "$ROOTFS/proc"
rm -f "$ROOTFS/usr/sbin/policy-rc.d"
# Docker supplies /etc/resolv.conf, /etc/hosts and /etc/hostname at run time.
tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
rm -rf "$ROOTFS"
