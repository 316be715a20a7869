#!/usr/bin/env bash
# make-fs-fixtures.sh OUTDIR — one GPT disk per filesystem type for the file-system-aware capture
# tests (tests/tests/fs_capture.rs), cached like make-fixtures.sh (OUTDIR/.stamp = this script's
# sha256).
#
# Each disk: GPT, one partition from 1 MiB to the end. Before mkfs the partition is filled with
# "old data" (bytes of system files), mkfs runs without discard, and then real files go in
# through a loop mount (ext2/3/4, XFS, btrfs: the host kernel mounts these), FUSE (ntfs-3g,
# exfat-fuse) or mtools (FAT): a large file, a sparse file, a hard link, an extended attribute, a
# directory tree, and files that are deleted again so that free space holds their old data.
# fs-<name>.sha256 lists the SHA-256 of every file (sha256sum format, paths relative to the root).
set -euo pipefail
OUT=${1:?usage: make-fs-fixtures.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)   # absolute: the steps below cd around
HASH=$(sha256sum "$(readlink -f "${BASH_SOURCE[0]}")" | cut -d' ' -f1)
export PATH=$PATH:/usr/sbin:/sbin LC_ALL=C
NAMES=(ext2 ext3 ext4 ext4-bigalloc xfs btrfs ntfs fat12 fat16 fat32 exfat swap luks lvm)
mkdir -p "$OUT"
if [[ -f $OUT/.stamp && $(<"$OUT/.stamp") == "$HASH" ]]; then
    echo "make-fs-fixtures: up to date in $OUT"; exit 0
fi
work=$(mktemp -d); mnt=$work/mnt; mkdir -p "$mnt"
cleanup() { mountpoint -q "$mnt" && umount -l "$mnt"; rm -rf "$work"; }
trap cleanup EXIT

# A pool of old data: real bytes, reproducible from this machine's files.
find /usr/lib /usr/share/doc -type f -size +8k -print0 2>/dev/null | sort -z | xargs -0 cat 2>/dev/null \
    | head -c $((64 << 20)) > "$work/pool" || true
old_data() { # FILE SIZE_MIB
    : > "$1"; while (( $(stat -c %s "$1") < ($2 << 20) )); do cat "$work/pool" >> "$1"; done
    truncate -s "$2M" "$1"
}

populate() { # DIR [posix]
    local d=$1
    mkdir -p "$d/docs/nested/deeper"
    printf 'P2V-FS-MARKER\n' > "$d/marker.txt"
    for i in $(seq 1 20); do printf 'line %d of a small file\n' $(seq 1 $((i * 10))) > "$d/docs/nested/small-$i.txt"; done
    head -c $((6 << 20)) "$work/pool" > "$d/large.bin"
    head -c $((3 << 20)) /dev/urandom > "$d/docs/deeper-random.bin" 2>/dev/null || true
    mv "$d/docs/deeper-random.bin" "$d/docs/nested/deeper/random.bin"
    # Written, then deleted: its blocks are free but hold its bytes.
    head -c $((4 << 20)) /dev/urandom > "$d/deleted.bin"; sync; rm "$d/deleted.bin"
    if [[ ${2:-} == posix ]]; then
        truncate -s 24M "$d/sparse.bin"; printf 'data in the middle' | dd of="$d/sparse.bin" bs=1 seek=$((12 << 20)) conv=notrunc status=none
        ln "$d/large.bin" "$d/large-hardlink.bin"
        python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.p2v", b"extended attribute")' "$d/marker.txt" 2>/dev/null || true
    fi
    sync
}

manifest() { # DIR OUTFILE
    (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$2"
}

make_disk() { # NAME PART_IMG
    local disk=$work/$1.img size=$(( $(stat -c %s "$2") + (2 << 20) ))
    truncate -s "$size" "$disk"
    printf 'label: gpt\nstart=2048, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' $(( $(stat -c %s "$2") / 512 )) \
        | sfdisk -q "$disk"
    dd if="$2" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
    mv "$disk" "$OUT/fs-$1.img"
}

# Builds a populated filesystem image $work/NAME.part and its manifest.
fs_image() { # NAME SIZE_MIB MKFS...
    local name=$1 size=$2; shift 2
    local part=$work/$name.part
    old_data "$part" "$size"
    "$@" "$part" >/dev/null
    mount -o loop "$part" "$mnt"
    populate "$mnt" posix
    [[ $name == btrfs ]] && { btrfs subvolume create "$mnt/subvol" >/dev/null; populate "$mnt/subvol" posix; }
    manifest "$mnt" "$OUT/fs-$name.sha256"
    umount "$mnt"
}

kernel_fs() { # NAME SIZE_MIB MKFS...
    fs_image "$@"
    make_disk "$1" "$work/$1.part"
}

fuse_fs() { # NAME SIZE_MIB MOUNT_CMD MKFS...
    local name=$1 size=$2 mount_cmd=$3; shift 3
    local part=$work/$name.part
    old_data "$part" "$size"
    "$@" "$part" >/dev/null 2>&1
    local dev; dev=$(losetup --find --show "$part")   # FUSE drivers want a block device
    $mount_cmd "$dev" "$mnt" >/dev/null
    populate "$mnt"
    manifest "$mnt" "$OUT/fs-$name.sha256"
    umount "$mnt"; losetup -d "$dev"
    make_disk "$name" "$part"
}

fat_fs() { # NAME SIZE_MIB BITS [MKFS_OPTIONS...]
    local name=$1 part=$work/$1.part size=$2 bits=$3; shift 3
    old_data "$part" "$size"
    mkfs.vfat -F "$bits" -n P2VFAT "$@" "$part" >/dev/null
    local src=$work/src-$name; mkdir -p "$src"; populate "$src"
    # A file copied in and deleted again, so free clusters hold old data.
    head -c $((1 << 20)) /dev/urandom > "$work/gone.bin"
    MTOOLS_SKIP_CHECK=1 mcopy -i "$part" "$work/gone.bin" ::/gone.bin
    MTOOLS_SKIP_CHECK=1 mdel -i "$part" ::/gone.bin
    (cd "$src" && for f in $(find . -mindepth 1 | sort); do
        if [[ -d $f ]]; then MTOOLS_SKIP_CHECK=1 mmd -i "$part" "::/${f#./}"
        else MTOOLS_SKIP_CHECK=1 mcopy -i "$part" "$f" "::/${f#./}"; fi
    done)
    manifest "$src" "$OUT/fs-$name.sha256"
    make_disk "$name" "$part"
}

kernel_fs ext2 64 mkfs.ext2 -q -F -E nodiscard
kernel_fs ext3 64 mkfs.ext3 -q -F -E nodiscard
kernel_fs ext4 64 mkfs.ext4 -q -F -E nodiscard
kernel_fs ext4-bigalloc 128 mkfs.ext4 -q -F -E nodiscard -O bigalloc -C 16384
kernel_fs xfs 320 mkfs.xfs -q -f -K
kernel_fs btrfs 256 mkfs.btrfs -q -f -K
fuse_fs ntfs 64 "ntfs-3g" mkntfs -q -F -Q
fuse_fs exfat 64 "mount.exfat-fuse" mkfs.exfat
fat_fs fat12 16 12 -s 16
fat_fs fat16 32 16
fat_fs fat32 64 32

# swap: only the header page matters.
old_data "$work/swap.part" 32; mkswap "$work/swap.part" >/dev/null; : > "$OUT/fs-swap.sha256"; make_disk swap "$work/swap.part"
# LUKS: encrypted, captured whole (and there is no device-mapper here to open it).
old_data "$work/luks.part" 32
printf 'p2v-test-passphrase' | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file - "$work/luks.part"
: > "$OUT/fs-luks.sha256"; make_disk luks "$work/luks.part"

# LVM2: a volume group with two linear LVs, root (ext4, 64 MiB) and data (XFS, 320 MiB), and
# unallocated space at the end. No device-mapper here, so the LVs are written into the VG
# metadata with vgcfgrestore and the filesystems are placed at their extents with dd.
lvm_fixture() {
    local pv=$work/lvm.part; old_data "$pv" 448
    local dev; dev=$(losetup --find --show "$pv")
    local lvmconf=(--config 'devices { filter = [ "a|/dev/loop.*|", "r|.*|" ] }')
    pvcreate -q -ff -y "${lvmconf[@]}" "$dev" >/dev/null 2>&1
    vgcreate -q "${lvmconf[@]}" p2vtest "$dev" >/dev/null 2>&1
    vgcfgbackup -q "${lvmconf[@]}" -f "$work/vg.txt" p2vtest >/dev/null 2>&1
    python3 - "$work/vg.txt" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
def lv(name, uuid, start, count):
    return f"""
\t\t{name} {{
\t\t\tid = "{uuid}"
\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]
\t\t\tflags = []
\t\t\tsegment_count = 1
\t\t\tsegment1 {{
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = {count}
\t\t\t\ttype = "striped"
\t\t\t\tstripe_count = 1
\t\t\t\tstripes = ["pv0", {start}]
\t\t\t}}
\t\t}}
"""
block = "\n\tlogical_volumes {" + lv("root", "p2vroo-t000-0000-0000-0000-0000-000001", 0, 16) \
    + lv("data", "p2vdat-a000-0000-0000-0000-0000-000002", 16, 80) + "\t}\n"
end = text.rindex("}")
open(path, "w").write(text[:end] + block + text[end:])
PY
    vgcfgrestore -q "${lvmconf[@]}" -f "$work/vg.txt" p2vtest >/dev/null 2>&1
    local pe_start; pe_start=$(pvs --noheadings --units b --nosuffix -o pe_start "${lvmconf[@]}" "$dev" 2>/dev/null | tr -d ' ')
    losetup -d "$dev"
    fs_image lvm-root 64 mkfs.ext4 -q -F -E nodiscard
    fs_image lvm-data 320 mkfs.xfs -q -f -K
    dd if="$work/lvm-root.part" of="$pv" bs=1M seek=$(( pe_start >> 20 )) conv=notrunc status=none
    dd if="$work/lvm-data.part" of="$pv" bs=1M seek=$(( (pe_start >> 20) + 64 )) conv=notrunc status=none
    printf '%s\n' "$pe_start" > "$OUT/fs-lvm.pe_start"; : > "$OUT/fs-lvm.sha256"
    make_disk lvm "$pv"
}
lvm_fixture

for n in "${NAMES[@]}"; do [[ -f $OUT/fs-$n.img ]] || { echo "make-fs-fixtures: fs-$n.img missing" >&2; exit 1; }; done
echo "$HASH" > "$OUT/.stamp"
echo "make-fs-fixtures: built ${#NAMES[@]} disks in $OUT"
