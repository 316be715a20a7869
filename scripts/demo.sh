#!/usr/bin/env bash
# demo.sh — the main job end to end on this machine (run through `make demo`, which installs and
# builds first): start a P2V server on loopback, enroll, capture a sample disk (the GPT fixture:
# ESP + ext4 + swap) with the static agent over TLS, export it as qcow2 and check the result.
set -euo pipefail
cd "$(dirname "$0")/.."
server=target/release/p2v-server
agent=target/x86_64-unknown-linux-musl/release/p2v-capture
demo=target/demo
sample=target/fixtures/gpt.img
rm -rf "$demo"; mkdir -p "$demo"

"$server" serve --data-dir "$demo/data" --listen 127.0.0.1:0 >"$demo/server.out" 2>"$demo/server.log" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true; wait $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^listening on ' "$demo/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$demo/server.out")
fingerprint=$(sed -n 's/^fingerprint //p' "$demo/server.out")
[[ -n $url && -n $fingerprint ]] || { cat "$demo/server.out" "$demo/server.log"; exit 1; }
echo "== server"; cat "$demo/server.out"

token=$("$server" token create --name demo --data-dir "$demo/data")
echo "== capture $sample"
"$agent" --server "$url" --fingerprint "$fingerprint" --token "$token" "$sample"

echo "== disks on the server"
"$server" disks --data-dir "$demo/data"
disk=$("$server" disks --json --data-dir "$demo/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["disk_id"])')

echo "== export $disk as qcow2"
"$server" export "$disk" --format qcow2 --output "$demo/sample.qcow2" --data-dir "$demo/data"
qemu-img info "$demo/sample.qcow2"
qemu-img compare -f raw -F qcow2 "$sample" "$demo/sample.qcow2"
echo "demo: $demo/sample.qcow2 is identical to $sample"
