#!/usr/bin/env bash
# setup-host.sh — idempotent host setup for a fresh Debian 12 (bookworm) machine.
#
# Installs the Debian tools needed to build the static (musl) capture agent and
# the test fixture disk images (scripts/make-fixtures.sh: partitioning, mkfs,
# mtools, fsck), and adds the x86_64-unknown-linux-musl rustup target.
# Used by CI before `cargo test` and by developers once per machine; the
# fixture-based tests (partition/filesystem parsing in capture/, end-to-end
# capture and interrupted-capture tests) need what this installs.
# Safe to re-run: each step is skipped quickly when already done.
set -euo pipefail

PACKAGES=(musl-tools dosfstools mtools fdisk gdisk e2fsprogs zstd file
          qemu-utils util-linux xxd coreutils iproute2 make python3 perl
          xfsprogs btrfs-progs ntfs-3g exfatprogs exfat-fuse lvm2 cryptsetup-bin partclone
          linux-image-amd64 kmod busybox-static grub-pc-bin grub-efi-amd64-bin cpio binutils
          qemu-system-x86 ovmf ipxe-qemu debootstrap libvirt-daemon-system libvirt-clients
          libxml2-utils initramfs-tools-core dracut-core)
MUSL_TARGET=x86_64-unknown-linux-musl

log() { echo "setup-host: $*"; }

# --- Debian packages -------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    log "all ${#PACKAGES[@]} apt packages already installed"
else
    log "installing: ${missing[*]}"
    SUDO=()   # root needed only for apt
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { log "ERROR: not root and sudo not found"; exit 1; }
        SUDO=(sudo)
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # Install the whole list in one transaction, not only the missing ones: a package can
    # conflict with a preinstalled version of another (qemu-system-x86 from bookworm replaces a
    # backported qemu-utils), and apt then keeps the set consistent.
    # qemu-system-x86 needs qemu-utils of its own version; a machine that comes with a
    # backported qemu-utils must step down to it, which apt does only when told the version.
    install=("${PACKAGES[@]}")
    qemu_common=$(apt-cache policy qemu-system-common | awk '/Candidate:/ {print $2}')
    if [[ -n $qemu_common && $qemu_common != "(none)" ]]; then
        for i in "${!install[@]}"; do
            [[ ${install[$i]} == qemu-utils ]] && install[$i]="qemu-utils=$qemu_common"
        done
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends --allow-downgrades "${install[@]}"
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [[ $status == installed ]] || { log "ERROR: $pkg is not installed after apt-get"; exit 1; }
    done
fi

# --- Rust musl target ------------------------------------------------------
if ! command -v rustup >/dev/null; then
    log "WARNING: rustup not found on PATH; skipping '$MUSL_TARGET' target"
elif rustup target list --installed | grep -qx "$MUSL_TARGET"; then
    log "rustup target $MUSL_TARGET already installed"
else
    log "adding rustup target $MUSL_TARGET"
    rustup target add "$MUSL_TARGET"
fi

log "done"
