#!/usr/bin/env bash
# run-tests.sh — runs every Rust test of the workspace (unit, server API, end to end) and closes
# with one summary line over all test binaries: "total: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
# In the suite nothing may skip for want of a fixture or a tool: `make test` builds and installs
# them all first (tests skip with a printed reason only when run by hand without them).
export P2V_REQUIRE_GUEST_FIXTURE=1 P2V_REQUIRE_TOOLS=1
cargo test --release --workspace -- --test-threads=2 2>&1 | tee target/test.log
rc=${PIPESTATUS[0]}
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' target/test.log
exit "$rc"
