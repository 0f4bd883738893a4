#!/usr/bin/env bash
# Online resize benchmark: RESIZE_KEYS keys of VALUE bytes in a keyspace of 2 shards x 2 replicas
# on 2 stores, grown to 4 shards while a mixed:80 load runs at concurrency 16. Measures the
# resize time, the data that changes shard, and the foreground p99 during exactly the resize
# (loadgen is stopped with SIGINT when the resize returns) against the p99 of the same load just
# before, and in the window after it (when the stores compact the moved keys away). Prints a
# markdown section. Usage: benches/resize.sh [SECONDS_BEFORE] (default 10);
# MAX_MBPS caps each copy stream on the stores (default 0: unlimited); FIXED_PACE=1 moves at
# exactly that instead of the pace the stores set from their foreground latency. CONTROL=S
# runs no resize and waits S seconds instead: the same windows on an unchanged cluster, to show
# how far this machine's p99 drifts by itself over a window that long.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
VALUE=${VALUE:-100}
RESIZE_KEYS=${RESIZE_KEYS:-1000000}
MAX_MBPS=${MAX_MBPS:-0}
CONTROL=${CONTROL:-0}
PACE_FLAGS=()
[ "${FIXED_PACE:-0}" = 1 ] && PACE_FLAGS=(--fixed-pace)
. benches/common.sh

MPORT=$(port)
$VASTO master --listen 127.0.0.1:$MPORT --dir "$WORK/master" >"$WORK/master.log" 2>&1 & PIDS+=($!)
sleep 0.3
for i in 0 1; do
  $VASTO store --master 127.0.0.1:$MPORT --listen 127.0.0.1:$(port) --dir "$WORK/store$i" --max-mbps "$MAX_MBPS" "${PACE_FLAGS[@]}" >"$WORK/store$i.log" 2>&1 & PIDS+=($!)
done
for _ in $(seq 100); do
  [ "$($VASTO admin --master 127.0.0.1:$MPORT status --json 2>/dev/null | grep -o '"up":true' | wc -l)" -ge 2 ] && break
  sleep 0.1
done
$VASTO admin --master 127.0.0.1:$MPORT create-keyspace rs --shards 2 --replicas 2 >/dev/null
# Load every key once, named as loadgen names them (a TSV through the bulk import; LOAD=put
# writes them with loadgen puts instead).
if [ "${LOAD:-import}" = put ]; then
  $VASTO loadgen --master 127.0.0.1:$MPORT --keyspace rs --workload put --keys "$RESIZE_KEYS" --value-size "$VALUE" \
    --concurrency 64 --pipeline 16 --duration 20s >/dev/null 2>&1
else
awk -v n="$RESIZE_KEYS" -v v="$VALUE" 'BEGIN { pad = sprintf("%" v "s", ""); gsub(/ /, "x", pad); for (i = 0; i < n; i++) printf "key:%012d\t%s\n", i, pad }' >"$WORK/keys.tsv"
$VASTO import --master 127.0.0.1:$MPORT --keyspace rs --input "$WORK/keys.tsv" >&2
fi
load() { # json-path duration
  $VASTO loadgen --master 127.0.0.1:$MPORT --keyspace rs --workload mixed:80 --keys "$RESIZE_KEYS" --value-size "$VALUE" \
    --concurrency 16 --pipeline 1 --duration "$2" --json "$1" >/dev/null 2>>"$WORK/load.err"
}
before="$WORK/before.json"; during="$WORK/during.json"; after="$WORK/after.json"
load "$WORK/warmup.json" "${SECS}s"
load "$before" "${SECS}s"
# exec: the background job is loadgen itself, so SIGINT reaches it.
(exec $VASTO loadgen --master 127.0.0.1:$MPORT --keyspace rs --workload mixed:80 --keys "$RESIZE_KEYS" --value-size "$VALUE" \
  --concurrency 16 --pipeline 1 --duration 10m --json "$during" >/dev/null 2>>"$WORK/load.err") & LOADPID=$!
sleep 1
t0=$(date +%s.%N)
if [ "$CONTROL" != 0 ]; then sleep "$CONTROL"; else $VASTO admin --master 127.0.0.1:$MPORT resize rs --shards 4 >/dev/null; fi
t1=$(date +%s.%N)
kill -INT "$LOADPID"
wait "$LOADPID" || true
load "$after" "${SECS}s"
rsecs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
# By jump hashing, growing 2 -> 4 moves half the keys; each moved key lands on 2 replicas.
# Stored size per key: key (~10 B) + 17 B header + value.
moved_mb=$(awk -v k="$RESIZE_KEYS" -v v="$VALUE" 'BEGIN { printf "%.0f", k / 2 * 2 * (v + 10 + 17) / 1e6 }')
p99b=$(json_field "$before" p99_us); p99d=$(json_field "$during" p99_us); p99a=$(json_field "$after" p99_us)
cap=$([ "$MAX_MBPS" = 0 ] && echo "no --max-mbps cap" || echo "--max-mbps $MAX_MBPS per copy stream")
cap="$cap, $([ "${FIXED_PACE:-0}" = 1 ] && echo "--fixed-pace" || echo "pace set by the stores from foreground latency (the default)")"
after_what="background compaction of the moved keys"
if [ "$CONTROL" != 0 ]; then cap="CONTROL: no resize, a wait of ${CONTROL} s in its place"; after_what="no resize ran"; fi
echo "## Online resize (2 -> 4 shards, 2 replicas, ${RESIZE_KEYS} keys of ${VALUE} B, mixed:80 load at concurrency 16, ${cap})"
echo
if [ "$CONTROL" != 0 ]; then
echo "No resize: the same load ran on through a wait of ${rsecs} s, measured as a resize would be."
echo "Foreground p99 before: ${p99b} us; during the wait: ${p99d} us"
else
echo "Resize took ${rsecs} s. Data that changes shard, counted once per replica: about ${moved_mb} MB"
echo "($(awk -v m="$moved_mb" -v s="$rsecs" 'BEGIN { printf "%.0f", m / s }') MB/s of useful movement). Each new replica receives only the keys that move to it, from"
echo "both replicas of their old shard (each replica's change log holds only its own writes), so about twice that crosses the network."
echo "Foreground p99 before: ${p99b} us; during the resize (load stopped when it returned): ${p99d} us"
fi
echo "(ratio $(ratio "$p99d" "$p99b")); in the ${SECS} s after it (${after_what}): ${p99a} us"
echo "(ratio $(ratio "$p99a" "$p99b")). Ops/s before $(json_field "$before" ops_per_sec | cut -d. -f1), during $(json_field "$during" ops_per_sec | cut -d. -f1), after $(json_field "$after" ops_per_sec | cut -d. -f1). Errors during: $(json_field "$during" errors)."
