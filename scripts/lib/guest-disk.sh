# guest-disk.sh — sourced by make-guest-fixture.sh and make-dracut-guest-fixture.sh: lays a
# guest's installed tree out as a BIOS-bootable MBR disk, the same way for both fixtures.
#
# guest_disk_assemble DISK LABEL_ID builds DISK (a new sparse file of DISK_MIB MiB) from the
# caller's variables: an MBR with label-id LABEL_ID, p1 (bootable, type 83) an ext4 made from
# $tree with ROOT_UUID at ROOT_START for ROOT_SECTORS, p2 (type 82) a swap with SWAP_UUID at
# SWAP_START for SWAP_SECTORS; GRUB's boot.img in the MBR code area and $work/core.img (made by
# the caller with grub-mkimage from GRUB_DIR) from LBA 1; then checks the root with e2fsck -fn and
# that the partition table survived. Fails through the caller's die(); sets and clears the
# caller's loopdev.

guest_disk_assemble() {
    local partial=$1 label_id=$2
    rm -f "$partial"
    truncate -s "${DISK_MIB}M" "$partial"
    printf 'label: dos\nlabel-id: %s\nstart=%d, size=%d, type=83, bootable\nstart=%d, size=%d, type=82\n' \
        "$label_id" "$ROOT_START" "$ROOT_SECTORS" "$SWAP_START" "$SWAP_SECTORS" | sfdisk -q "$partial"
    mke2fs -q -F -t ext4 -L root -U "$ROOT_UUID" -E "offset=$((ROOT_START * 512)),nodiscard" \
        -d "$tree" "$partial" "$((ROOT_SECTORS / 2))k"
    truncate -s "$((SWAP_SECTORS * 512))" "$work/swap.img"
    mkswap -q -L swap -U "$SWAP_UUID" "$work/swap.img"
    dd if="$work/swap.img" of="$partial" bs=1M count=1 seek=$((SWAP_START / 2048)) conv=notrunc status=none
    # boot.img into the MBR's code area (the partition table stays), core.img from LBA 1.
    python3 - "$GRUB_DIR/boot.img" "$work/core.img" "$partial" <<'EOF'
import struct, sys
boot = bytearray(open(sys.argv[1], "rb").read())
core = bytearray(open(sys.argv[2], "rb").read())
assert len(boot) == 512 and boot[510:512] == b"\x55\xaa", "boot.img is not a boot sector"
sectors = (len(core) + 511) // 512
assert 2 <= sectors <= 2047, f"core.img ({len(core)} bytes) does not fit the post-MBR gap"
boot[0x5c:0x64] = struct.pack("<Q", 1)   # kernel sector: core.img at LBA 1
boot[0x66:0x68] = b"\x90\x90"            # no drive check (as grub-bios-setup for a hard disk)
core[500:508] = struct.pack("<Q", 2)     # diskboot block list: the rest of core.img from LBA 2
core[508:510] = struct.pack("<H", sectors - 1)
with open(sys.argv[3], "r+b") as disk:
    disk.seek(0); disk.write(boot[:440])
    disk.seek(512); disk.write(core)
EOF
    # loopdev is the caller's global: its exit trap detaches it if e2fsck fails.
    loopdev=$(losetup --find --show --read-only --offset $((ROOT_START * 512)) \
        --sizelimit $((ROOT_SECTORS * 512)) "$partial")
    e2fsck -fn "$loopdev" >/dev/null || die "e2fsck found errors in the root file system"
    losetup -d "$loopdev"; loopdev=
    sfdisk -d "$partial" | grep -q "start=\s*$SWAP_START, size=\s*$SWAP_SECTORS, type=82" \
        || die "partition table was not kept"
}
