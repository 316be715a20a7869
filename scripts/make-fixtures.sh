#!/usr/bin/env bash
# make-fixtures.sh OUTDIR — build the test fixture disk images into OUTDIR.
#
# Fixtures (details in OUTDIR/manifest.txt): gpt.img, mbr.img, gpt-4k.img,
# big-random.img, blank.img. Intended consumers: the partition-table /
# filesystem / used-block tests of the capture agent (capture/), the capture ->
# server end-to-end tests, and the interrupted/resumed capture tests
# (big-random.img). Run by CI on every run (e.g. OUTDIR=target/fixtures); the
# work is skipped when OUTDIR/.stamp matches this script's sha256.
#
# No mounts, no loop devices: each filesystem is built in its own image file
# (mkfs.ext4 -d, mkfs.vfat + mcopy, mkswap) and dd'ed into the disk image at the
# partition offset. 512-byte-sector tables are written by sfdisk; the 4Kn table
# by `fdisk -b 4096` loading an sfdisk script (sfdisk 2.38 in bookworm has no
# --sector-size). UUIDs, volume ids, timestamps and file contents are derived
# from fixed seeds, so output is reproducible with the same tool versions.
# Every filesystem holds hello.txt, marker.txt ("P2V-FIXTURE-MARKER <image>-p<N>"),
# docs/notes.txt, docs/nested/lines.txt, docs/nested/deeper/deep.txt, etc/fstab and
# random.bin (2 MiB); the ESP adds EFI/BOOT/BOOTX64.EFI, big-random.img adds data/.
# Needs the packages installed by scripts/setup-host.sh (plus perl-base).
set -euo pipefail

OUT=${1:?usage: make-fixtures.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)   # absolute: the steps below cd around
HASH=$(sha256sum "$(readlink -f "${BASH_SOURCE[0]}")" | cut -d' ' -f1)
FIXTURES=(gpt.img mbr.img gpt-4k.img big-random.img blank.img)
EPOCH=1700000000
export PATH=$PATH:/usr/sbin:/sbin LC_ALL=C TZ=UTC MTOOLS_SKIP_CHECK=1
export E2FSPROGS_FAKE_TIME=$EPOCH SOURCE_DATE_EPOCH=$EPOCH
umask 022

log() { echo "make-fixtures: $*"; }
die() { echo "make-fixtures: ERROR: $*" >&2; exit 1; }

mkdir -p "$OUT"
up_to_date=1
for f in "${FIXTURES[@]}" manifest.txt; do [[ -f $OUT/$f ]] || up_to_date=0; done
if [[ $up_to_date == 1 && -f $OUT/.stamp && $(<"$OUT/.stamp") == "$HASH" ]]; then
    log "fixtures in $OUT are up to date (stamp $HASH)"; exit 0
fi
for c in sfdisk fdisk mkfs.ext4 mkfs.ext2 mkfs.vfat mcopy mtype mkswap e2fsck \
         debugfs fsck.vfat blkid perl sha256sum; do
    command -v "$c" >/dev/null || die "missing '$c' (run scripts/setup-host.sh)"
done
rm -f "$OUT/.stamp" "$OUT"/.tmp.*
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

hexid() { printf %s "$1" | sha256sum | cut -c1-32; }
uuid() { local h; h=$(hexid "$1"); echo "${h:0:8}-${h:8:4}-4${h:13:3}-a${h:17:3}-${h:20:12}"; }
seed() { echo $((16#$(hexid "$1" | cut -c1-8))); }
# prng bin|text BYTES SEEDSTR > file: deterministic pseudo-random bytes, or text
# lines of random words (zstd compresses it ~2.5x).
prng() {
    perl -e 'my ($mode, $n, $seed) = @ARGV; srand($seed); my $o = "";
        if ($mode eq "bin") { $o .= pack("L<", int rand 2**32) while length($o) < $n }
        else { my @w = map { join "", map { chr(97 + int rand 26) } 0 .. 1 + rand 9 } 1 .. 8192;
               $o .= sprintf("%08x %s\n", int rand 2**32, join " ", map { $w[rand @w] } 1 .. 10)
                   while length($o) < $n }
        print substr($o, 0, $n)' "$1" "$2" "$(seed "$3")"
}

# populate DIR KIND TAG: a small file tree; the marker line is checked later.
populate() {
    local d=$1 kind=$2 tag=$3 i
    mkdir -p "$d/docs/nested/deeper" "$d/etc"
    printf 'Hello from %s.\n' "$tag" >"$d/hello.txt"
    printf 'P2V-FIXTURE-MARKER %s\n' "$tag" >"$d/marker.txt"
    printf 'line %04d\n' $(seq 1 500) >"$d/docs/nested/lines.txt"
    printf 'deep file of %s\n' "$tag" >"$d/docs/nested/deeper/deep.txt"
    printf 'UUID=%s / auto defaults 0 1\n' "$(uuid "$tag")" >"$d/etc/fstab"
    prng text 65536 "$tag-notes" >"$d/docs/notes.txt"
    prng bin $((2 * 1024 * 1024)) "$tag-random" >"$d/random.bin"
    if [[ $kind == vfat32 ]]; then
        mkdir -p "$d/EFI/BOOT"
        { printf 'MZ'; prng bin 65534 "$tag-efi"; } >"$d/EFI/BOOT/BOOTX64.EFI"
    fi
    if [[ $kind == ext4-big ]]; then            # 30 x 2 MiB = 60 MiB of text
        for i in $(seq -w 0 29); do
            mkdir -p "$d/data/${i:0:1}"
            prng text $((2 * 1024 * 1024)) "$tag-data-$i" >"$d/data/${i:0:1}/chunk-$i.txt"
        done
    fi
    find "$d" -exec touch -h -d "@$EPOCH" {} +
}

# make_fs KIND IMG BYTES TAG: build one filesystem image of exactly BYTES.
make_fs() {
    local kind=$1 img=$2 bytes=$3 tag=$4 src=$WORK/src u
    u=$(uuid "$tag")
    rm -rf "$img" "$src"; truncate -s "$bytes" "$img"
    if [[ $kind == swap ]]; then mkswap -U "$u" -L swap "$img" >/dev/null 2>&1; return; fi
    populate "$src" "$kind" "$tag"
    case $kind in
        ext2|ext4|ext4-4k|ext4-big)
            local fs=${kind%%-*} opts=(); [[ $kind == ext4-4k ]] && opts=(-b 4096)
            mkfs."$fs" -q -F "${opts[@]}" -U "$u" -E "hash_seed=$u,root_owner=0:0" \
                -L "$fs-${tag##*-}" -d "$src" "$img"
            # mkfs -d copies the source ctime (touch cannot set it) and counts bytes
            # written (differs between tmpfs and ext4 staging dirs): pin both.
            { find "$src" -mindepth 1 -printf "sif /%P ctime @$EPOCH\n"; echo "ssv kbytes_written 0"; } |
                debugfs -w -f - "$img" >/dev/null 2>&1 ;;
        vfat16|vfat32)
            local extra=(); [[ $kind == vfat32 ]] && extra=(-s 1)  # >= 65525 clusters
            mkfs.vfat --invariant -i "${u:0:8}" -F "${kind#vfat}" -S 512 "${extra[@]}" \
                -n "FAT${kind#vfat}" "$img" >/dev/null
            ( cd "$src"   # sorted, not readdir order (tmpfs lists newest first)
            find . -mindepth 1 -type d | sort | sed "s|^\.|::|" | xargs -r mmd -i "$img"
            find . -type f | sort | while read -r f; do mcopy -m -i "$img" "$f" "::${f#.}"; done ) ;;
        *) die "unknown fs kind $kind" ;;
    esac
}

# dump_table IMG SECTOR_SIZE: the partition table as an sfdisk script.
dump_table() {
    if [[ $2 == 512 ]]; then sfdisk -d "$1"; return; fi
    printf 'O\n%s\nq\n' "$WORK/dump" | fdisk -b "$2" "$1" >/dev/null
    cat "$WORK/dump"
}
part_geom() {  # IMG SS N -> "START SIZE" in sectors
    dump_table "$1" "$2" | sed -n "s/^.*img$3 *: start= *\([0-9]*\), size= *\([0-9]*\),.*/\1 \2/p"
}

# check_disk IMG SS LABEL SPECS...: print the table, fsck every filesystem.
check_disk() {
    local img=$1 ss=$2 label=$3 spec n kind start len p=$WORK/check want got; shift 3
    dump_table "$img" "$ss" | tee "$WORK/table" | sed 's/^/    /'
    grep -qx "label: $label" "$WORK/table" || die "$img: expected a $label label"
    grep -qx "sector-size: $ss" "$WORK/table" || die "$img: expected sector size $ss"
    for spec; do
        n=${spec%%:*} kind=${spec#*:}
        read -r start len < <(part_geom "$img" "$ss" "$n") || die "$img: no partition $n"
        dd if="$img" of="$p" bs=1M iflag=skip_bytes,count_bytes status=none \
            skip=$((start * ss)) count=$((len * ss))
        want=${kind%%-*}; want=${want%[0-9][0-9]}; got=$(blkid -p -o value -s TYPE "$p" || true)
        [[ $got == "$want" ]] || die "$img p$n: blkid says '$got', expected '$want'"
        case $want in
            ext*) e2fsck -fn "$p" >/dev/null 2>&1 || { e2fsck -fn "$p" || :; die "$img p$n: e2fsck failed"; }
                  debugfs -R 'cat /marker.txt' "$p" 2>/dev/null | grep -q P2V-FIXTURE-MARKER \
                      || die "$img p$n: marker.txt missing" ;;
            vfat) fsck.vfat -n "$p" >/dev/null || { fsck.vfat -n "$p" || :; die "$img p$n: fsck.vfat failed"; }
                  [[ $(blkid -p -o value -s VERSION "$p") == "FAT${kind#vfat}" ]] \
                      || die "$img p$n: not FAT${kind#vfat}"
                  mtype -i "$p" ::/marker.txt | grep -q P2V-FIXTURE-MARKER \
                      || die "$img p$n: marker.txt missing" ;;
        esac
        log "  $img p$n ($kind): ok"
    done
}

# build_disk NAME SIZE SS LABEL SFDISK_SCRIPT N:KIND...
build_disk() {
    local name=$1 size=$2 ss=$3 label=$4 script=$5 img=$OUT/.tmp.$1 spec n start len; shift 5
    log "building $name"
    truncate -s "$size" "$img"
    if [[ $ss == 512 ]]; then
        sfdisk -q "$img" <<<"$script"
    else  # 4Kn: fdisk's 'I' command loads an sfdisk script
        printf '%s\n' "$script" >"$WORK/script"
        printf 'I\n%s\nw\n' "$WORK/script" | fdisk -b "$ss" "$img" >/dev/null
    fi
    for spec; do
        n=${spec%%:*}
        read -r start len < <(part_geom "$img" "$ss" "$n") || die "$name: no partition $n"
        make_fs "${spec#*:}" "$WORK/fs" $((len * ss)) "$name-p$n"
        dd if="$WORK/fs" of="$img" bs=1M oflag=seek_bytes seek=$((start * ss)) \
            conv=notrunc,sparse status=none
    done
    check_disk "$img" "$ss" "$label" "$@"
    mv -f "$img" "$OUT/$name"
}

ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B SWAP=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F
LINUX=0FC63DAF-8483-4772-8E79-3D69D8477DE4

build_disk gpt.img 64MiB 512 gpt "label: gpt
label-id: $(uuid gpt.img)
start=1MiB, size=34MiB, type=$ESP, uuid=$(uuid gpt.img-1), name=\"EFI System Partition\"
size=24MiB, type=$LINUX, uuid=$(uuid gpt.img-2), name=\"root\"
type=$SWAP, uuid=$(uuid gpt.img-3), name=\"swap\"" 1:vfat32 2:ext4 3:swap

build_disk mbr.img 64MiB 512 dos "label: dos
label-id: 0x$(hexid mbr.img | cut -c1-8)
start=1MiB, size=16MiB, type=83, bootable
start=17MiB, type=5
size=16MiB, type=e
type=83" 1:ext4 5:vfat16 6:ext2

build_disk gpt-4k.img 64MiB 4096 gpt "label: gpt
label-id: $(uuid gpt-4k.img)
start=1MiB, type=$LINUX, uuid=$(uuid gpt-4k.img-1), name=\"root\"" 1:ext4-4k

build_disk big-random.img 96MiB 512 gpt "label: gpt
label-id: $(uuid big-random.img)
start=1MiB, type=$LINUX, uuid=$(uuid big-random.img-1), name=\"data\"" 1:ext4-big

log "building blank.img"
truncate -s 8MiB "$OUT/.tmp.blank.img"
mv -f "$OUT/.tmp.blank.img" "$OUT/blank.img"

declare -A DESC=(
    [gpt.img]="GPT, 512 B sectors: p1 ESP FAT32 (EFI/BOOT/BOOTX64.EFI), p2 ext4, p3 Linux swap"
    [mbr.img]="MBR/dos: p1 ext4 (bootable), p2 extended (0x05) with logical p5 FAT16 (0x0e) and p6 ext2"
    [gpt-4k.img]="GPT on 4Kn disk (4096 B logical sectors, header at byte 4096): p1 ext4 -b 4096"
    [big-random.img]="GPT, p1 ext4 with ~60 MiB of compressible (~2.5x zstd) text: interrupted/resumed capture"
    [blank.img]="8 MiB of zeros, no partition table: unpartitioned / empty-disk handling"
)
{
    echo "# name size_bytes sha256 description  (generated by scripts/make-fixtures.sh)"
    for f in "${FIXTURES[@]}"; do
        printf '%s %s %s %s\n' "$f" "$(stat -c %s "$OUT/$f")" \
            "$(sha256sum "$OUT/$f" | cut -d' ' -f1)" "${DESC[$f]}"
    done
} >"$OUT/.tmp.manifest.txt"
mv -f "$OUT/.tmp.manifest.txt" "$OUT/manifest.txt"
echo "$HASH" >"$OUT/.stamp"
log "done: $OUT"
