#!/usr/bin/env bash
# bench.sh — capture throughput against the tools people use today, in one run, on one machine
# (run through `make bench`). Prints figures; asserts nothing about speed.
#
# Disks: 2 GiB GPT images with one partition (ext4, and NTFS), about a quarter used by real
# files, whose free space holds old data (earlier contents of the disk, not zeros), as on a used
# server. Cached under target/bench.
#
# Compared, each on the same image, page cache dropped before each:
#   p2v            p2v-capture (static agent) -> p2v-server over TLS on loopback, zstd -3,
#                  reading only the blocks the filesystem uses; the server decompresses, verifies,
#                  writes and re-reads on the same two cores
#   p2v --whole    the same, every block
#   partclone|zstd partclone.<fs> -c -s PARTITION -o - | zstd -T0 -3 > file
#   dd|zstd        dd bs=4M | zstd -T0 -3 > file
#   zstd           zstd -T0 -3 image -o file
#
# Bytes: "bytes out" is the payload (p2v: the chunk bodies its report counts; the others: the
# output file). For p2v the bench also counts every byte that crossed the loopback interface
# during the capture (/proc/net/dev, both directions: TLS records, HTTP, TCP/IP headers, acks),
# which is what a network would carry.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
server=target/release/p2v-server
agent=target/x86_64-unknown-linux-musl/release/p2v-capture
dir=target/bench
mkdir -p "$dir"
mnt=$dir/mnt

pool() {
    [[ -f $dir/pool ]] && return
    find /usr/lib /usr/bin /usr/share/doc -type f -size +4k -print0 2>/dev/null \
        | sort -z | xargs -0 cat 2>/dev/null | head -c $((256 << 20)) > "$dir/pool" || true
}

# make_image FS IMG: old data everywhere, mkfs without discard, ~512 MiB of files.
make_image() {
    local fs=$1 img=$2 tmp=$dir/build; rm -rf "$tmp"; mkdir -p "$tmp/files" "$mnt"
    echo "bench: building $img (2 GiB $fs, ~25% used, old data in free space)"
    pool
    for _ in 1 2 3 4 5 6 7 8; do cat "$dir/pool"; done 2>/dev/null | head -c $(( (2048 - 2) << 20 )) > "$tmp/part.img" || true
    [[ $(stat -c %s "$tmp/part.img") == $(( (2048 - 2) << 20 )) ]] || { echo "bench: could not gather old data" >&2; exit 1; }
    local n=0 total=0
    while IFS= read -r -d '' f; do
        cp "$f" "$tmp/files/$n.bin" 2>/dev/null || continue
        n=$((n + 1)); total=$((total + $(stat -c %s "$f")))
        (( total < (448 << 20) )) || break
    done < <(find /usr/lib /usr/share -type f -size +64k -print0 2>/dev/null | sort -z)
    head -c $((64 << 20)) /dev/urandom > "$tmp/files/random.bin"
    local type
    if [[ $fs == ext4 ]]; then
        mkfs.ext4 -q -F -E nodiscard -d "$tmp/files" "$tmp/part.img"
        type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
    else
        mkntfs -q -F -Q "$tmp/part.img" >/dev/null 2>&1
        local dev; dev=$(losetup --find --show "$tmp/part.img")
        ntfs-3g "$dev" "$mnt"; cp -r "$tmp/files/." "$mnt/"; umount "$mnt"; losetup -d "$dev"
        type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
    fi
    truncate -s 2G "$tmp/disk.img"
    printf 'label: gpt\nstart=2048, type=%s\n' "$type" | sfdisk -q "$tmp/disk.img"
    dd if="$tmp/part.img" of="$tmp/disk.img" bs=1M seek=1 conv=notrunc status=none
    mv "$tmp/disk.img" "$img"; rm -rf "$tmp"
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s%N; }
loopback_bytes() { awk '$1 == "lo:" { print $10 }' /proc/net/dev; }

start_server() {
    rm -rf "$dir/data"
    "$server" serve --data-dir "$dir/data" --listen 127.0.0.1:0 >"$dir/server.out" 2>"$dir/server.log" &
    server_pid=$!
    for _ in $(seq 100); do grep -q '^listening on ' "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
    url=$(sed -n 's/^listening on //p' "$dir/server.out")
    fp=$(sed -n 's/^fingerprint //p' "$dir/server.out")
    token=$("$server" token create --name bench --data-dir "$dir/data")
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; rm -rf "$dir/data"; }
trap 'kill ${server_pid:-} 2>/dev/null || true' EXIT

results=()
record() { results+=("$1	$2	$3	$4	${5:--}"); }   # image, method, ns, bytes, loopback bytes (tab-separated)

bench_image() { # FS
    local fs=$1 img=$dir/disk-2g-$1.img
    [[ -f $img ]] || make_image "$fs" "$img"
    local t0 t1 bytes lo0 lo1
    for mode in used whole; do
        start_server
        local extra=(); [[ $mode == whole ]] && extra=(--whole-disk)
        drop_caches; lo0=$(loopback_bytes); t0=$(now)
        "$agent" --server "$url" --fingerprint "$fp" --token "$token" --no-progress --json "${extra[@]}" "$img" > "$dir/report.json" 2>/dev/null
        t1=$(now); lo1=$(loopback_bytes)
        bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["disks"][0]["wire_bytes"])' "$dir/report.json")
        record "$fs" "p2v over TLS ($mode blocks)" $((t1 - t0)) "$bytes" $((lo1 - lo0))
        stop_server
    done
    local dev; dev=$(losetup --find --show --read-only -o $((1 << 20)) "$img")
    drop_caches; t0=$(now)
    "partclone.$fs" -q -c -s "$dev" -o - 2>/dev/null | zstd -q -T0 -3 > "$dir/pc.zst"; t1=$(now)
    losetup -d "$dev"
    record "$fs" "partclone.$fs | zstd -T0 -3" $((t1 - t0)) "$(stat -c %s "$dir/pc.zst")"
    drop_caches; t0=$(now); dd if="$img" bs=4M status=none | zstd -q -T0 -3 > "$dir/dd.zst"; t1=$(now)
    record "$fs" "dd bs=4M | zstd -T0 -3" $((t1 - t0)) "$(stat -c %s "$dir/dd.zst")"
    drop_caches; t0=$(now); zstd -q -f -T0 -3 "$img" -o "$dir/plain.zst"; t1=$(now)
    record "$fs" "zstd -T0 -3" $((t1 - t0)) "$(stat -c %s "$dir/plain.zst")"
    rm -f "$dir"/*.zst
}

bench_image ext4
bench_image ntfs

printf "%b\n" "${results[@]}" | python3 -c '
import sys, os
rows = [l.rstrip("\n").split("\t") for l in sys.stdin if l.strip()]
size = 2 << 30
print(f"2.00 GiB images, {os.cpu_count()} CPUs; ratios against p2v (used blocks) on the same image")
print(f"| image | method | wall s | MiB/s of disk | bytes out | on loopback | time / p2v | bytes / p2v |")
print(f"|-------|--------|-------:|------:|----------:|------------:|-----------:|------------:|")
base = {}
for img, method, ns, b, lo in rows:
    t, b = int(ns) / 1e9, int(b)
    lo = f"{int(lo):,}" if lo != "-" else "-"
    if method.startswith("p2v over TLS (used"):
        base[img] = (t, b)
    bt, bb = base[img]
    print(f"| {img} | {method} | {t:.2f} | {size / 2**20 / t:.1f} | {b:,} | {lo} | {t / bt:.2f} | {b / bb:.3f} |")
'

# --- conversion (issue 5): the Debian 12 guest, converted by the server's appliance VM, against
# virt-v2v -i disk ... -o local on the same image (both under TCG here: no KVM). virt-v2v is
# installed only for the benchmark; the figures are printed by the test as "bench-convert ...".
if ! command -v virt-v2v >/dev/null; then
    echo "bench: installing virt-v2v for the conversion comparison"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends virt-v2v libguestfs-tools \
        >/dev/null || echo "bench: virt-v2v is not installable here; p2v figures only"
fi
bash scripts/make-guest-fixture.sh target/guest-fixtures
cargo test --release -q -p p2v-tests --test conversion -- --ignored --nocapture \
    bench_conversion_against_virt_v2v 2>&1 | grep -E "^bench-convert|capture of the physical|panicked|FAILED" || true
