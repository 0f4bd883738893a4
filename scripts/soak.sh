#!/usr/bin/env bash
# Runs many randomized operation sequences (tests/sequences) with fresh random seeds and prints
# the seeds of the failing ones. Usage: scripts/soak.sh SEQUENCES [FIRST_SEED]
#   SEQUENCES   how many sequences to run (each 8-15 steps, drawn from its seed)
#   FIRST_SEED  run seeds FIRST_SEED, FIRST_SEED+1, ... instead of random ones
# Each failure's output is kept in target/soak/seed-N.log; re-run one with
#   VASTO_SEQ_SEEDS=N cargo test --test sequences -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:?usage: scripts/soak.sh SEQUENCES [FIRST_SEED]}
first=${2:-}
./scripts/setup.sh
# Run copies of the test and vasto binaries, so rebuilding the tree during a soak changes nothing
# under it.
test_bin=$(cargo test --locked --test sequences --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*sequences-[^"]*\)".*/\1/p' | tail -1)
[ -x "$test_bin" ] || { echo "could not build the sequences test" >&2; exit 1; }
mkdir -p target/soak/bin
cp "$test_bin" target/soak/bin/sequences
cp target/debug/vasto target/soak/bin/vasto
export VASTO_BIN=$PWD/target/soak/bin/vasto
passed=0 failed=0 steps=0 failures=()
started=$(date +%s)
for i in $(seq 0 $((count - 1))); do
  if [ -n "$first" ]; then seed=$((first + i)); else seed=$(od -An -N6 -tu8 /dev/urandom | tr -d ' '); fi
  log="target/soak/seed-$seed.log"
  if VASTO_SEQ_SEEDS=$seed timeout 1800 target/soak/bin/sequences --nocapture >"$log" 2>&1; then
    passed=$((passed + 1))
    n=$(sed -n 's/^SEQUENCE seed=[0-9]* steps=\([0-9]*\).*/\1/p' "$log" | tail -1)
    steps=$((steps + ${n:-0}))
    rm -f "$log"
  else
    failed=$((failed + 1))
    failures+=("$seed")
    echo "FAILED seed $seed (log: $log): $(grep -m1 -E 'panicked|timed out' "$log" | cut -c1-300)"
  fi
  echo "[$((i + 1))/$count] passed $passed, failed $failed, steps $steps, $(( $(date +%s) - started )) s"
done
echo "soak: $passed of $count sequences passed ($steps steps in the passing ones) in $(( $(date +%s) - started )) s"
if [ "$failed" -gt 0 ]; then
  echo "failing seeds: ${failures[*]}"
  exit 1
fi
