#!/usr/bin/env bash
# make-guest-fixture.sh OUTDIR — the real Debian 12 guest that the conversion tests (issue 5)
# convert: OUTDIR/debian12-physical.raw, a 3 GiB sparse raw disk installed the way it would be on
# the "physical" machine of tests/src/guest.rs (AHCI disk with serial P2VPHYS0001, an e1000 NIC
# with MAC 52:54:00:50:56:01 at PCI 00:05.0 of a q35 machine).
#
#   MBR  boot code = GRUB's boot.img, loading core.img from the gap (LBA 1..2047)
#   p1   1 MiB .. 2561 MiB  ext4 root (/dev/sda1 on the physical machine), UUID $ROOT_UUID
#   p2   2561 MiB .. end    swap, UUID $SWAP_UUID
#
# What makes it hardware-dependent (what the conversion must change):
#   - the initramfs (initramfs-tools, MODULES=list) holds ahci, libahci, sd_mod, ext4 and their
#     dependencies, and no virtio driver: checked with lsinitramfs below;
#   - fstab names /dev/sda1 and /dev/disk/by-id/ata-QEMU_HARDDISK_P2VPHYS0001-part2, grub.cfg says
#     root=/dev/sda1 and resume=/dev/disk/by-id/..., /etc/default/grub and
#     /etc/initramfs-tools/conf.d/resume name the same by-id swap;
#   - ifupdown configures the static address 10.0.2.15/24 on $IFNAME, the name systemd's
#     predictable naming gives the e1000 at 00:05.0 of q35 (enp0s5);
#   - ipmievd.service (ipmitool), a platform agent that needs a BMC, is enabled.
# p2v-guest-ready.service prints `P2V-GUEST-READY host= if= addr= state=` for every non-lo
# interface on ttyS0 once multi-user and network-online are reached, sends the same lines to
# 10.0.2.100:4444 (a QEMU guestfwd to the test's listener) and prints P2V-GUEST-NET-OK when that
# worked (P2V-GUEST-NET-FAILED otherwise).
#
# Cached: skipped when the image exists and OUTDIR/debian12-physical.stamp holds the sha256 of this script
# and lib/guest-disk.sh. The debootstrap download (OUTDIR/cache/*.debs.tgz) and the installed base tree
# (OUTDIR/cache/*.tree.tar.zst) are cached by suite and package list, so a change elsewhere in
# this script rebuilds the image in about a minute without the network. The image is built
# under a temporary name and renamed at the end: a half-built image is never used.
# Needs root (chroot, bind mounts, one loop device for e2fsck) and scripts/setup-host.sh's packages.
set -euo pipefail

OUT=${1:?usage: make-guest-fixture.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# shellcheck source=lib/guest-disk.sh
source "$HERE/lib/guest-disk.sh"
HASH=$(cat "$(readlink -f "${BASH_SOURCE[0]}")" "$HERE/lib/guest-disk.sh" | sha256sum | cut -d' ' -f1)
export PATH=$PATH:/usr/sbin:/sbin LC_ALL=C TZ=UTC DEBIAN_FRONTEND=noninteractive
umask 022

IMAGE=$OUT/debian12-physical.raw
STAMP=$OUT/debian12-physical.stamp
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
INCLUDE=linux-image-amd64,initramfs-tools,zstd,busybox,systemd-sysv,udev,ifupdown,iproute2,netbase,grub-pc-bin,grub2-common,ipmitool,kmod,e2fsprogs
HOSTNAME=p2v-guest
IFNAME=enp0s5                # e1000 at 00:05.0 of q35 (tests/src/guest.rs physical_machine)
DISK_SERIAL=P2VPHYS0001
SWAP_BYID=/dev/disk/by-id/ata-QEMU_HARDDISK_${DISK_SERIAL}-part2
ROOT_UUID=5d1a7c3e-0b6f-4e2a-9c41-7f2e8a1b3c01
SWAP_UUID=5d1a7c3e-0b6f-4e2a-9c41-7f2e8a1b3c02
MACHINE_ID=5d1a7c3e0b6f4e2a9c417f2e8a1b3c00
DISK_MIB=3072
ROOT_START=2048                              # sectors
ROOT_SECTORS=$((2560 * 2048))
SWAP_START=$((ROOT_START + ROOT_SECTORS))
SWAP_SECTORS=$((DISK_MIB * 2048 - SWAP_START))
ROOTDELAY=20   # initramfs-tools gives up on a missing root after this many seconds (default 180)
CMDLINE="root=/dev/sda1 ro console=ttyS0,115200 resume=$SWAP_BYID rootdelay=$ROOTDELAY"

log() { echo "make-guest-fixture: $*"; }
die() { echo "make-guest-fixture: ERROR: $*" >&2; exit 1; }

up_to_date() { [[ -f $IMAGE && -f $STAMP && $(<"$STAMP") == "$HASH" ]]; }
if up_to_date; then log "up to date: $IMAGE"; exit 0; fi
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, bind mounts)"
# One builder at a time (tests of several checkouts or target dirs may ask at once).
exec 9>"$OUT/.lock"
flock 9
if up_to_date; then log "up to date: $IMAGE (built meanwhile)"; exit 0; fi
rm -f "$STAMP"

CACHE=$OUT/cache
mkdir -p "$CACHE"
KEY=$(printf '%s %s %s\n' "$SUITE" "$MIRROR" "$INCLUDE" | sha256sum | cut -c1-16)
DEBS=$CACHE/$SUITE-$KEY.debs.tgz
BASE=$CACHE/$SUITE-$KEY.tree.tar.zst

work=$(mktemp -d "$OUT/.work.XXXXXX")
tree=$work/tree
loopdev=
unmount_all() {
    local m
    # Deepest first; -l so a busy /dev does not stop the cleanup.
    for m in $(findmnt -rn -o TARGET | grep -F "$work/" | sort -r); do umount -l "$m" || true; done
}
cleanup() {
    [[ -n $loopdev ]] && losetup -d "$loopdev" 2>/dev/null || true
    unmount_all
    if findmnt -rn -o TARGET | grep -qF "$work/"; then
        echo "make-guest-fixture: mounts remain under $work; not removing it" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- base system -------------------------------------------------------------------------------
started=$SECONDS
if [[ -f $BASE ]]; then
    log "base tree from $BASE"
    mkdir -p "$tree"
    tar --zstd -xpf "$BASE" --numeric-owner --xattrs --xattrs-include='*' -C "$tree"
else
    if [[ ! -f $DEBS ]]; then
        log "downloading $SUITE packages ($INCLUDE)"
        debootstrap --variant=minbase --include="$INCLUDE" --make-tarball="$DEBS.partial" \
            "$SUITE" "$work/dl" "$MIRROR"
        mv "$DEBS.partial" "$DEBS"
        rm -rf "$work/dl"
    fi
    log "debootstrap $SUITE from $DEBS"
    debootstrap --variant=minbase --include="$INCLUDE" --unpack-tarball="$DEBS" \
        "$SUITE" "$tree" "$MIRROR"
    unmount_all
    rm -f "$tree"/var/cache/apt/archives/*.deb
    tar --zstd -cpf "$BASE.partial" --numeric-owner --xattrs --xattrs-include='*' -C "$tree" .
    mv "$BASE.partial" "$BASE"
fi
log "base system ready in $((SECONDS - started)) s"

KVER=$(basename "$(ls -1 "$tree"/boot/vmlinuz-* | sort -V | tail -1)")
KVER=${KVER#vmlinuz-}
[[ -n $KVER && -f $tree/boot/vmlinuz-$KVER ]] || die "no kernel in the tree"

in_guest() { chroot "$tree" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C "$@"; }

# --- identity, accounts, consoles --------------------------------------------------------------
echo "$HOSTNAME" > "$tree/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    "$HOSTNAME" > "$tree/etc/hosts"
echo "$MACHINE_ID" > "$tree/etc/machine-id"
in_guest passwd -d root >/dev/null
mkdir -p "$tree/etc/systemd/system/getty.target.wants"
ln -sf /lib/systemd/system/serial-getty@.service \
    "$tree/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"

# --- mounts ------------------------------------------------------------------------------------
cat > "$tree/etc/fstab" <<EOF
# /etc/fstab: static file system information (as installed on the physical machine).
# <file system> <mount point> <type> <options> <dump> <pass>
/dev/sda1 / ext4 errors=remount-ro 0 1
$SWAP_BYID none swap sw 0 0
EOF

# --- initramfs: only the physical machine's storage drivers ------------------------------------
conf=$tree/etc/initramfs-tools/initramfs.conf
grep -q '^MODULES=' "$conf" || die "no MODULES= in initramfs.conf"
sed -i 's/^MODULES=.*/MODULES=list/' "$conf"
# The root file system type, which the fsck hook cannot probe from inside the chroot (a machine
# building its own initramfs finds it; the initramfs then carries fsck.ext4).
if grep -q '^FSTYPE=' "$conf"; then sed -i 's/^FSTYPE=.*/FSTYPE=ext4/' "$conf"; else echo 'FSTYPE=ext4' >> "$conf"; fi
cat > "$tree/etc/initramfs-tools/modules" <<'EOF'
# Modules for the initramfs (MODULES=list in initramfs.conf): the physical machine's
# SATA controller, the disk driver and the root file system.
ahci
libahci
sd_mod
ext4
EOF
mkdir -p "$tree/etc/initramfs-tools/conf.d"
echo "RESUME=$SWAP_BYID" > "$tree/etc/initramfs-tools/conf.d/resume"
for fs in proc sys dev; do mount --bind "/$fs" "$tree/$fs"; done
mount --make-rslave "$tree/dev" 2>/dev/null || true
in_guest update-initramfs -u -k all
unmount_all
listing=$(in_guest lsinitramfs "/boot/initrd.img-$KVER")
grep -qE '/ahci\.ko' <<<"$listing" || die "initrd.img-$KVER has no ahci"
grep -qE '/sd_mod\.ko' <<<"$listing" || die "initrd.img-$KVER has no sd_mod"
grep -qE '/ext4\.ko' <<<"$listing" || die "initrd.img-$KVER has no ext4"
grep -qE '/sbin/fsck\.ext4$' <<<"$listing" || die "initrd.img-$KVER has no fsck.ext4"
if grep -E '/virtio[^/]*\.ko' <<<"$listing"; then die "initrd.img-$KVER holds virtio drivers"; fi
log "initrd.img-$KVER: $(grep -cE '\.ko(\.[a-z]+)?$' <<<"$listing") modules, ahci yes, virtio no"

# --- network: static address on the physical NIC's name ----------------------------------------
cat > "$tree/etc/network/interfaces" <<EOF
# interfaces(5) file used by ifup(8) and ifdown(8)
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

# Intel server NIC, onboard port 1
auto $IFNAME
iface $IFNAME inet static
    address 10.0.2.15/24
    gateway 10.0.2.2
EOF
rm -f "$tree/etc/udev/rules.d/70-persistent-net.rules"

# --- the test's marker -------------------------------------------------------------------------
cat > "$tree/usr/local/sbin/p2v-guest-ready" <<'EOF'
#!/bin/bash
# Test marker of the P2V guest fixture: one line per non-loopback interface on the serial
# console, then the same lines to 10.0.2.100:4444 (QEMU guestfwd to the test) to prove that the
# static address works.
host=$(hostname)
lines=()
while read -r name state _; do
    name=${name%%@*}
    [[ -z $name || $name == lo ]] && continue
    addr=$(ip -4 -br addr show dev "$name" 2>/dev/null | awk '{print $3; exit}')
    lines+=("P2V-GUEST-READY host=$host if=$name addr=${addr:-none} state=$state")
done < <(ip -br link)
(( ${#lines[@]} )) || lines=("P2V-GUEST-READY host=$host if=none addr=none state=DOWN")
printf '%s\n' "${lines[@]}" > /dev/ttyS0
for _ in $(seq 1 15); do
    if timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.100/4444 && printf "%s\n" "$@" >&3' _ "${lines[@]}"; then
        echo "P2V-GUEST-NET-OK" > /dev/ttyS0
        exit 0
    fi
    sleep 1
done
echo "P2V-GUEST-NET-FAILED" > /dev/ttyS0
EOF
chmod 755 "$tree/usr/local/sbin/p2v-guest-ready"
cat > "$tree/etc/systemd/system/p2v-guest-ready.service" <<'EOF'
[Unit]
Description=P2V test marker: interfaces and addresses on the serial console
Wants=network-online.target
After=network-online.target multi-user.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/p2v-guest-ready

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$tree/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/p2v-guest-ready.service \
    "$tree/etc/systemd/system/multi-user.target.wants/p2v-guest-ready.service"

# --- platform agent: ipmievd, enabled as a vendor install leaves it ----------------------------
unit=$(ls "$tree"/lib/systemd/system/ipmievd.service "$tree"/usr/lib/systemd/system/ipmievd.service 2>/dev/null | head -1)
[[ -n $unit ]] || die "ipmitool ships no ipmievd.service"
wants=$tree/etc/systemd/system/multi-user.target.wants/ipmievd.service
if [[ -e $wants || -L $wants ]]; then
    log "ipmievd.service: enabled by the package"
else
    ln -s "${unit#"$tree"}" "$wants"
    log "ipmievd.service: enabled by this script"
fi
for svc in networking.service; do
    ls "$tree"/etc/systemd/system/*.wants/$svc >/dev/null 2>&1 || die "$svc is not enabled"
done

# --- GRUB (BIOS) -------------------------------------------------------------------------------
GRUB_DIR=$tree/usr/lib/grub/i386-pc
mkdir -p "$tree/boot/grub/i386-pc"
cp "$GRUB_DIR"/*.mod "$GRUB_DIR"/*.lst "$tree/boot/grub/i386-pc/"
cat > "$tree/boot/grub/grub.cfg" <<EOF
# GRUB configuration of the physical machine (BIOS, MBR, core.img in the post-MBR gap).
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
insmod part_msdos
insmod ext2
set root='hd0,msdos1'
menuentry 'Debian GNU/Linux 12, with Linux $KVER' {
    insmod gzio
    insmod part_msdos
    insmod ext2
    set root='hd0,msdos1'
    echo 'Loading Linux $KVER ...'
    linux /boot/vmlinuz-$KVER $CMDLINE
    echo 'Loading initial ramdisk ...'
    initrd /boot/initrd.img-$KVER
}
EOF
cat > "$tree/etc/default/grub" <<EOF
# Defaults for grub-mkconfig (update-grub).
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=\`lsb_release -i -s 2> /dev/null || echo Debian\`
GRUB_CMDLINE_LINUX_DEFAULT="console=ttyS0,115200 resume=$SWAP_BYID"
GRUB_CMDLINE_LINUX="rootdelay=$ROOTDELAY"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF
grub-mkimage -O i386-pc -d "$GRUB_DIR" -o "$work/core.img" -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux configfile search echo serial terminal test gzio boot

# --- the disk ----------------------------------------------------------------------------------
partial=$OUT/.debian12-physical.raw.partial
guest_disk_assemble "$partial" 0x50325601
mv "$partial" "$IMAGE"
echo "$HASH" > "$STAMP"

log "image:     $IMAGE ($(du -h --apparent-size "$IMAGE" | cut -f1) apparent, $(du -h "$IMAGE" | cut -f1) allocated)"
log "kernel:    $KVER"
log "interface: $IFNAME (10.0.2.15/24 via 10.0.2.2)"
log "sha256:    $(sha256sum "$IMAGE" | cut -d' ' -f1)"
log "built in $((SECONDS - started)) s"
