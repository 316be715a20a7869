#!/usr/bin/env bash
# bench.sh — capture throughput against the obvious baselines, in one run, on one machine
# (run through `make bench`). Prints figures; asserts nothing about speed.
#
# The disk: a 2 GiB GPT image with one ext4 partition, about a quarter used by real files, whose
# free space holds old data (earlier contents of the disk, not zeros), as on a used server. Cached
# under target/bench.
#
# Compared, each on the same image:
#   p2v      p2v-capture (static agent) -> p2v-server over TLS on loopback, zstd level 3, with the
#            server decompressing, verifying and writing on the same two cores
#   dd|zstd  dd bs=4M | zstd -T0 -3 > file
#   zstd     zstd -T0 -3 image -o file
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
server=target/release/p2v-server
agent=target/x86_64-unknown-linux-musl/release/p2v-capture
dir=target/bench
img=$dir/disk-2g.img
mkdir -p "$dir"

make_image() {
    local tmp=$dir/build; rm -rf "$tmp"; mkdir -p "$tmp/files"
    echo "bench: building $img (2 GiB, ~25% used, old data in free space)"
    # A 256 MiB pool of real system bytes (libraries, binaries, docs), repeated as "old data".
    find /usr/lib /usr/bin /usr/share/doc -type f -size +4k -print0 2>/dev/null \
        | sort -z | xargs -0 cat 2>/dev/null | head -c $((256 << 20)) > "$tmp/pool" || true
    for _ in 1 2 3 4 5 6 7 8; do cat "$tmp/pool"; done 2>/dev/null | head -c $(( (2048 - 2) << 20 )) > "$tmp/part.img" || true
    [[ $(stat -c %s "$tmp/part.img") == $(( (2048 - 2) << 20 )) ]] || { echo "bench: could not gather old data" >&2; exit 1; }
    # About 512 MiB of files: real system files plus some incompressible ones.
    local n=0 total=0
    while IFS= read -r -d '' f; do
        cp "$f" "$tmp/files/$n.bin" 2>/dev/null || continue
        n=$((n + 1)); total=$((total + $(stat -c %s "$f")))
        (( total < (448 << 20) )) || break
    done < <(find /usr/lib /usr/share -type f -size +64k -print0 2>/dev/null | sort -z)
    head -c $((64 << 20)) /dev/urandom > "$tmp/files/random.bin"
    mkfs.ext4 -q -F -E nodiscard -d "$tmp/files" "$tmp/part.img"
    truncate -s 2G "$tmp/disk.img"
    printf 'label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' | sfdisk -q "$tmp/disk.img"
    dd if="$tmp/part.img" of="$tmp/disk.img" bs=1M seek=1 conv=notrunc status=none
    mv "$tmp/disk.img" "$img"; rm -rf "$tmp"
}
[[ -f $img ]] || make_image

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s%N; }
size=$(stat -c %s "$img")

# p2v over TLS
rm -rf "$dir/data"
"$server" serve --data-dir "$dir/data" --listen 127.0.0.1:0 >"$dir/server.out" 2>"$dir/server.log" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^listening on ' "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$dir/server.out")
fp=$(sed -n 's/^fingerprint //p' "$dir/server.out")
token=$("$server" token create --name bench --data-dir "$dir/data")
drop_caches
t0=$(now)
"$agent" --server "$url" --fingerprint "$fp" --token "$token" --no-progress --json "$img" > "$dir/report.json"
t1=$(now)
p2v_time=$(( t1 - t0 ))
p2v_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["disks"][0]["wire_bytes"])' "$dir/report.json")
kill $server_pid; wait $server_pid 2>/dev/null || true

drop_caches
t0=$(now); dd if="$img" bs=4M status=none | zstd -q -T0 -3 > "$dir/dd.zst"; t1=$(now)
dd_time=$(( t1 - t0 )); dd_bytes=$(stat -c %s "$dir/dd.zst")

drop_caches
t0=$(now); zstd -q -f -T0 -3 "$img" -o "$dir/plain.zst"; t1=$(now)
zs_time=$(( t1 - t0 )); zs_bytes=$(stat -c %s "$dir/plain.zst")
rm -f "$dir/dd.zst" "$dir/plain.zst"; rm -rf "$dir/data"

python3 - "$size" "$p2v_time" "$p2v_bytes" "$dd_time" "$dd_bytes" "$zs_time" "$zs_bytes" <<'PY'
import sys
size, pt, pb, dt, db, zt, zb = (float(x) for x in sys.argv[1:])
pt, dt, zt = pt / 1e9, dt / 1e9, zt / 1e9
print(f"image: {size/2**30:.2f} GiB, {int(__import__('os').cpu_count())} CPUs")
print(f"{'method':<34} {'wall s':>8} {'MiB/s':>8} {'bytes out':>14} {'vs p2v time':>12} {'vs p2v bytes':>13}")
for name, t, b in [("p2v capture over TLS (zstd -3)", pt, pb), ("dd bs=4M | zstd -T0 -3", dt, db), ("zstd -T0 -3", zt, zb)]:
    print(f"{name:<34} {t:8.2f} {size/2**20/t:8.1f} {int(b):14d} {t/pt:12.2f} {b/pb:13.3f}")
PY
