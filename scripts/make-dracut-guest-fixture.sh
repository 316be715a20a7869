#!/usr/bin/env bash
# make-dracut-guest-fixture.sh OUTDIR — a real Debian 12 guest whose initramfs is made by
# Debian's `dracut` (not initramfs-tools), for the conversion tests (issue 5) of the dracut path:
# OUTDIR/debian12-dracut.raw, a 3 GiB sparse raw disk laid out like make-guest-fixture.sh's
# debian12-physical.raw:
#
#   MBR  boot code = GRUB's boot.img, loading core.img from the gap (LBA 1..2047)
#   p1   1 MiB .. 2561 MiB  ext4 root (/dev/sda1 on the physical machine), UUID $ROOT_UUID
#   p2   2561 MiB .. end    swap (/dev/sda2), UUID $SWAP_UUID
#
# What makes it hardware-dependent (what the conversion must change):
#   - the initramfs /boot/initrd.img-VER (the name Debian's dracut kernel hook uses) is built by
#     dracut with /etc/dracut.conf.d/10-physical.conf: a generic image (hostonly="no", as a
#     chroot cannot probe the machine's hardware) from which the virtual machines' drivers are
#     left out (omit_drivers, and dracut's qemu/virtiofs modules omitted) while the physical
#     machine's SATA controller, disk and file system drivers are forced in (add_drivers). Checked
#     with lsinitrd below: ahci, sd_mod, ext4 present; virtio_blk, virtio_pci, virtio_scsi absent;
#   - fstab names /dev/sda1 and /dev/sda2, grub.cfg says root=/dev/sda1 resume=/dev/sda2.
# The GRUB boot code is installed as in make-guest-fixture.sh, but nothing boots this image yet:
# the tests check the conversion offline.
#
# dracut cannot come from debootstrap --include: debootstrap resolves `initramfs-tools |
# linux-initramfs-tool` (the kernel's dependency) to its first alternative, and dracut conflicts
# with initramfs-tools. So the base system is debootstrapped without a kernel, and the kernel and
# dracut are installed into it with apt-get, the way an administrator switches a Debian machine
# to dracut.
#
# Cached: skipped when the image exists and OUTDIR/debian12-dracut.stamp holds the sha256 of this script
# and lib/guest-disk.sh. The debootstrap download (OUTDIR/cache/*.debs.tgz) and the installed tree with the
# kernel and dracut (OUTDIR/cache/*.tree.tar.zst) are cached by suite and package lists, so a
# change elsewhere in this script rebuilds the image without the network. The image is built
# under a temporary name and renamed at the end: a half-built image is never used.
# Needs root (chroot, bind mounts, one loop device for e2fsck), the network for the first build
# (deb.debian.org, also from inside the chroot) and scripts/setup-host.sh's packages.
set -euo pipefail

OUT=${1:?usage: make-dracut-guest-fixture.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# shellcheck source=lib/guest-disk.sh
source "$HERE/lib/guest-disk.sh"
HASH=$(cat "$(readlink -f "${BASH_SOURCE[0]}")" "$HERE/lib/guest-disk.sh" | sha256sum | cut -d' ' -f1)
export PATH=$PATH:/usr/sbin:/sbin LC_ALL=C TZ=UTC DEBIAN_FRONTEND=noninteractive
umask 022

IMAGE=$OUT/debian12-dracut.raw
STAMP=$OUT/debian12-dracut.stamp
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
INCLUDE=zstd,systemd-sysv,udev,kmod,e2fsprogs,iproute2,netbase,grub-pc-bin,grub2-common
APT_PACKAGES="linux-image-amd64 dracut"
HOSTNAME=p2v-dracut-guest
ROOT_UUID=6e2b8d4f-1c70-4f3b-8d52-803f9b2c4d01
SWAP_UUID=6e2b8d4f-1c70-4f3b-8d52-803f9b2c4d02
MACHINE_ID=6e2b8d4f1c704f3b8d52803f9b2c4d00
DISK_MIB=3072
ROOT_START=2048                              # sectors
ROOT_SECTORS=$((2560 * 2048))
SWAP_START=$((ROOT_START + ROOT_SECTORS))
SWAP_SECTORS=$((DISK_MIB * 2048 - SWAP_START))
CMDLINE="root=/dev/sda1 ro console=ttyS0,115200 resume=/dev/sda2"

log() { echo "make-dracut-guest-fixture: $*"; }
die() { echo "make-dracut-guest-fixture: ERROR: $*" >&2; exit 1; }

up_to_date() { [[ -f $IMAGE && -f $STAMP && $(<"$STAMP") == "$HASH" ]]; }
if up_to_date; then log "up to date: $IMAGE"; exit 0; fi
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, bind mounts)"
command -v lsinitrd >/dev/null || die "lsinitrd not found (dracut-core; run scripts/setup-host.sh)"
# One builder at a time (the lock is shared with make-guest-fixture.sh: same cache directory).
exec 9>"$OUT/.lock"
flock 9
if up_to_date; then log "up to date: $IMAGE (built meanwhile)"; exit 0; fi
rm -f "$STAMP"

CACHE=$OUT/cache
mkdir -p "$CACHE"
DEBKEY=$(printf '%s %s %s\n' "$SUITE" "$MIRROR" "$INCLUDE" | sha256sum | cut -c1-16)
TREEKEY=$(printf '%s %s %s + %s\n' "$SUITE" "$MIRROR" "$INCLUDE" "$APT_PACKAGES" | sha256sum | cut -c1-16)
DEBS=$CACHE/$SUITE-$DEBKEY.debs.tgz
BASE=$CACHE/$SUITE-$TREEKEY-dracut.tree.tar.zst

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
        echo "make-dracut-guest-fixture: mounts remain under $work; not removing it" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

in_guest() { chroot "$tree" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C "$@"; }
bind_pseudo() {
    local fs
    for fs in proc sys dev; do mount --bind "/$fs" "$tree/$fs"; done
    mount --make-rslave "$tree/dev" 2>/dev/null || true
}

# The physical machine's dracut configuration. Written before the kernel is installed, so that
# the image built by dracut's kernel hook already follows it.
write_dracut_conf() {
    mkdir -p "$tree/etc/dracut.conf.d"
    cat > "$tree/etc/dracut.conf.d/10-physical.conf" <<'EOF'
# dracut configuration of the physical machine: a generic image, without the drivers of virtual
# machines, with the SATA controller, the disk driver and the root file system forced in.
hostonly="no"
omit_dracutmodules+=" qemu qemu-net virtiofs "
omit_drivers+=" virtio_blk virtio_scsi virtio_pci virtio_net virtio_console "
add_drivers+=" ahci libahci sd_mod ext4 "
compress="zstd"
EOF
}

# --- base system, kernel and dracut ------------------------------------------------------------
started=$SECONDS
if [[ -f $BASE ]]; then
    log "installed tree from $BASE"
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
    echo "deb $MIRROR $SUITE main" > "$tree/etc/apt/sources.list"
    cp -L /etc/resolv.conf "$tree/etc/resolv.conf"
    write_dracut_conf
    bind_pseudo
    log "apt-get install $APT_PACKAGES (in the guest)"
    in_guest apt-get update -q
    in_guest env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $APT_PACKAGES
    in_guest apt-get clean
    unmount_all
    rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/*.bin
    : > "$tree/etc/resolv.conf"
    tar --zstd -cpf "$BASE.partial" --numeric-owner --xattrs --xattrs-include='*' -C "$tree" .
    mv "$BASE.partial" "$BASE"
fi
log "base system ready in $((SECONDS - started)) s"

[[ -e $tree/usr/bin/dracut || -e $tree/usr/sbin/dracut ]] || die "dracut is not installed"
if [[ -e $tree/usr/sbin/update-initramfs || -e $tree/etc/initramfs-tools ]]; then
    die "initramfs-tools is still installed next to dracut"
fi
KVER=$(basename "$(ls -1 "$tree"/boot/vmlinuz-* | sort -V | tail -1)")
KVER=${KVER#vmlinuz-}
[[ -n $KVER && -f $tree/boot/vmlinuz-$KVER ]] || die "no kernel in the tree"

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
cat > "$tree/etc/fstab" <<'EOF'
# /etc/fstab: static file system information (as installed on the physical machine).
# <file system> <mount point> <type> <options> <dump> <pass>
/dev/sda1 / ext4 errors=remount-ro 0 1
/dev/sda2 none swap sw 0 0
EOF

# --- initramfs: dracut, only the physical machine's storage drivers ----------------------------
write_dracut_conf
[[ ! -e $tree/etc/dracut.conf.d/50-p2v.conf ]] || die "the tree already has the converter's drop-in"
rm -f "$tree"/boot/initrd.img-* "$tree"/boot/initramfs-*
bind_pseudo
in_guest dracut -f "/boot/initrd.img-$KVER" "$KVER"
unmount_all
[[ -f $tree/boot/initrd.img-$KVER ]] || die "dracut made no /boot/initrd.img-$KVER"
listing=$(lsinitrd "$tree/boot/initrd.img-$KVER")
grep -qE '/ahci\.ko' <<<"$listing" || die "initrd.img-$KVER has no ahci"
grep -qE '/sd_mod\.ko' <<<"$listing" || die "initrd.img-$KVER has no sd_mod"
grep -qE '/ext4\.ko' <<<"$listing" || die "initrd.img-$KVER has no ext4"
if grep -E '/virtio_(blk|pci|scsi)\.ko' <<<"$listing"; then
    die "initrd.img-$KVER holds virtio disk drivers"
fi
log "initrd.img-$KVER: $(grep -cE '\.ko(\.[a-z]+)?$' <<<"$listing") modules, ahci yes, virtio_blk/virtio_pci no"

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
cat > "$tree/etc/default/grub" <<'EOF'
# Defaults for grub-mkconfig (update-grub).
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="console=ttyS0,115200 resume=/dev/sda2"
GRUB_CMDLINE_LINUX=""
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF
grub-mkimage -O i386-pc -d "$GRUB_DIR" -o "$work/core.img" -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux configfile search echo serial terminal test gzio boot

# --- the disk ----------------------------------------------------------------------------------
partial=$OUT/.debian12-dracut.raw.partial
guest_disk_assemble "$partial" 0x50325602
mv "$partial" "$IMAGE"
echo "$HASH" > "$STAMP"

log "image:     $IMAGE ($(du -h --apparent-size "$IMAGE" | cut -f1) apparent, $(du -h "$IMAGE" | cut -f1) allocated)"
log "kernel:    $KVER"
log "sha256:    $(sha256sum "$IMAGE" | cut -d' ' -f1)"
log "built in $((SECONDS - started)) s"
