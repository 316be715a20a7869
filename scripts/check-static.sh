#!/usr/bin/env bash
# check-static.sh BINARY — fails unless BINARY is a statically linked executable (the agent must
# run inside a minimal initramfs with no C library).
set -euo pipefail
bin=${1:?usage: check-static.sh BINARY}
desc=$(file -b "$bin")
case "$desc" in
    *"statically linked"*|*"static-pie linked"*) echo "check-static: $bin is static ($(du -h "$bin" | cut -f1))" ;;
    *) echo "check-static: $bin is not static: $desc" >&2; exit 1 ;;
esac
if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "check-static: ldd lists shared libraries for $bin" >&2; exit 1
fi
