#!/usr/bin/env bash
# Structure-aware fuzzing of the store's and the master's request paths (see node/src/fuzz_tests.rs
# and master/src/fuzz_tests.rs): valid frames of every message type with hostile field values and
# mutations of them. Prints the seed and cases per second of each target; exits non-zero on a crash.
# Usage: scripts/fuzz.sh [--release] [CASES] [SEED]   (default 100000 cases per target, random seed)
#   --release  builds the targets optimized (a cold build of RocksDB takes ~11 min more, then
#              cases run many times faster: use it for runs of millions)
# CI runs the same tests with a few thousand cases as part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
profile=()
if [ "${1:-}" = --release ]; then profile=(--release); shift; fi
export VASTO_FUZZ_CASES=${1:-100000}
[ -n "${2:-}" ] && export VASTO_FUZZ_SEED=$2
started=$(date +%s)
log=$(mktemp)
status=0
cargo test --locked "${profile[@]}" -p vasto-node -p vasto-master fuzz -- --nocapture --test-threads 1 >"$log" 2>&1 || status=$?
grep -E "fuzz: |panicked|FAILED|minimal failing" "$log" || tail -20 "$log"
rm -f "$log"
echo "fuzz: $VASTO_FUZZ_CASES cases per target in $(( $(date +%s) - started )) s, exit $status"
exit "$status"
