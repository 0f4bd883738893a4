#!/usr/bin/env bash
# A data set larger than the memory the store may use, written to benches/RESULTS-disk.md.
#
# One store runs under a memory cgroup limit (MEM_MB, default 2048: the page cache counts), its
# keyspace loaded by `vasto import` with DATA_GB (default 11, over 5x the limit) of records whose VALUE-byte values
# (default 1000) LZ4 cannot shrink. For each load (gets uniform and zipfian, YCSB B and A on
# zipfian keys), with the page cache dropped before each run:
# * the store, driven by `vasto loadgen` with CONC (default 16) connections of P requests each,
#   for each P in PIPELINES (default "1 4");
# * the floor: the storage engine in-process (RocksDB, no value cache, no network) opened on the
#   store's own data directory once the store has stopped, under the same limit, CONC x P
#   threads (the same requests in flight) with one request each and exactly loadgen's mix and
#   keys (benches/disk_floor.rs).
# * the request path's ceiling: the store under the same load shape with HOT_KEYS (default
#   100000) keys, which the value cache holds whole: what the network, the cores and loadgen
#   allow on this machine with no disk at all.
# Each run is preceded by a warm-up of WARMUP seconds (default 30) of the same load: both sides
# start with the page cache dropped and their own caches empty, and a shorter warm-up measures
# mostly how fast they fill (zipfian gets 16x4 ran at 48.5K after 5 s and 71.3K on the next run
# with the store's caches warm; 75.9K after 30 s).
# ROUNDS (default 1) repeats each pair of runs (store, then floor) and reports medians, with the
# lowest and highest ratio: this VM's disk drifts by a third between runs.
# Usage: benches/disk.sh [SECONDS_PER_RUN] (default 20). DISK_DIR: where the data goes (default
# a temp dir; it needs about 2.2 x DATA_GB free).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
DATA_GB=${DATA_GB:-11}
MEM_MB=${MEM_MB:-2048}
VALUE=${VALUE:-1000}
CONC=${CONC:-16}
PIPELINES=${PIPELINES:-1 4}
WARMUP=${WARMUP:-30}
ROUNDS=${ROUNDS:-1}
HOT_KEYS=${HOT_KEYS:-100000}
SHARDS=${SHARDS:-2}
KEYS=$(awk -v g="$DATA_GB" -v v="$VALUE" 'BEGIN { printf "%d", g * 1e9 / (v + 18) }')
. benches/common.sh
OUT=benches/RESULTS-disk.md
if [ -n "${DISK_DIR:-}" ]; then rm -rf "$WORK"; WORK=$(mktemp -d -p "$DISK_DIR"); fi
FLOOR=$(cargo bench --locked --bench disk_floor --no-run --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*disk_floor[^"]*\)".*/\1/p' | tail -1)
[ -x "$FLOOR" ] || { echo "disk.sh: could not build benches/disk_floor.rs" >&2; exit 1; }

# ---- the memory limit: a cgroup (v2 or v1) that every measured process starts in ----
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  CG=/sys/fs/cgroup/vasto-disk-$$
  mkdir "$CG" && echo $((MEM_MB << 20)) >"$CG/memory.max" && echo 0 >"$CG/memory.swap.max" 2>/dev/null || true
  PEAK=memory.peak
else
  CG=/sys/fs/cgroup/memory/vasto-disk-$$
  mkdir "$CG" && echo $((MEM_MB << 20)) >"$CG/memory.limit_in_bytes"
  PEAK=memory.max_usage_in_bytes
fi
[ -d "$CG" ] || { echo "disk.sh: cannot create a memory cgroup (needs root and the memory controller)" >&2; exit 1; }
trap 'cleanup; for _ in $(seq 50); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done' EXIT
# Replaces the calling (sub)shell with the command, inside the cgroup: run it as `limited ... &`
# (then $! is the command's PID) or in a subshell.
limited() { exec sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" "$@"; }
peak_mb() { awk '{ printf "%.0f", $1 / 1048576 }' "$CG/$PEAK" 2>/dev/null || echo "-"; }
reset_peak() { echo 0 >"$CG/$PEAK" 2>/dev/null || true; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || echo "disk.sh: cannot drop the page cache; runs start warm" >&2; }

# ---- the cluster: a master outside the limit, one store inside it ----
MPORT=$(port)
SPORT=$(port)
$VASTO master --listen 127.0.0.1:$MPORT --dir "$WORK/master" >"$WORK/master.log" 2>&1 & PIDS+=($!)
STORE=
start_store() { # [extra store flags...]
  limited $VASTO store --master 127.0.0.1:$MPORT --listen 127.0.0.1:$SPORT --dir "$WORK/store" "$@" >>"$WORK/store.log" 2>&1 & STORE=$!; PIDS+=($STORE)
  for _ in $(seq 300); do
    $VASTO admin --master 127.0.0.1:$MPORT status --json 2>/dev/null | grep -q '"up":true' && return
    sleep 0.1
  done
  echo "disk.sh: the store did not come up" >&2; tail -20 "$WORK/store.log" >&2; exit 1
}
stop_store() { # a clean stop (SIGTERM), so the floor opens the data as the store left it
  kill "$STORE" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$STORE" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$STORE" 2>/dev/null || true
}
start_store

# ---- the data ----
python3 - "$KEYS" "$VALUE" "$WORK/records.tsv" <<'EOF'
import base64, os, sys
n, v, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
# 64 MiB of random text; values are slices 103 KiB apart, so no two values within LZ4's 64 KiB
# window share bytes and the data stays its size on disk.
pool = base64.b64encode(os.urandom(48 << 20))
span, step, off = len(pool) - v, 105_467, 0
with open(path, "wb", buffering=1 << 22) as out:
    for i in range(n):
        out.write(b"key:%012d\t%s\n" % (i, pool[off:off + v]))
        off = (off + step) % span
EOF
FILE_GB=$(awk -v b="$(stat -c %s "$WORK/records.tsv")" 'BEGIN { printf "%.1f", b / 1e9 }')
$VASTO admin --master 127.0.0.1:$MPORT create-keyspace disk --shards "$SHARDS" --replicas 1 >/dev/null
reset_peak
T0=$(date +%s.%N)
$VASTO import --master 127.0.0.1:$MPORT --keyspace disk --input "$WORK/records.tsv" --work-dir "$WORK" >"$WORK/import.out" 2>&1 \
  || { cat "$WORK/import.out" >&2; exit 1; }
IMPORT_S=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
IMPORT_PEAK=$(peak_mb)
rm -f "$WORK/records.tsv"
STORE_GB=$(du -sb "$WORK/store" | awk '{ printf "%.1f", $1 / 1e9 }')

# ---- the runs ----
# Each run writes "ops p50 p99 not_found peak_mb" to $WORK/row (not through $(...), so that a
# failure stops the script).
row() { # json-file
  printf '%.0f %s %s %s %s\n' "$(json_field "$1" ops_per_sec)" "$(json_field "$1" p50_us)" "$(json_field "$1" p99_us)" "$(json_field "$1" not_found)" "$(peak_mb)" >"$WORK/row"
}
vasto_run() { # workload distribution pipeline [keys]
  local out="$WORK/vasto-$1-$2-$3-${4:-$KEYS}.json"
  drop_caches; reset_peak
  local common=(--master 127.0.0.1:$MPORT --keyspace disk --workload "$1" --distribution "$2" --keys "${4:-$KEYS}" --value-size "$VALUE" --concurrency "$CONC" --pipeline "$3")
  $VASTO loadgen "${common[@]}" --duration "${WARMUP}s" >/dev/null 2>&1
  $VASTO loadgen "${common[@]}" --duration "${SECS}s" --json "$out" >/dev/null 2>"$WORK/loadgen.err" || { cat "$WORK/loadgen.err" >&2; exit 1; }
  row "$out"
}
floor_run() { # workload distribution threads
  drop_caches; reset_peak
  (limited "$FLOOR" --dir "$WORK/store" --keyspace disk --keys "$KEYS" --value-size "$VALUE" --workload "$1" --distribution "$2" \
    --threads "$3" --secs "$SECS" --warmup "$WARMUP") >"$WORK/floor.json" 2>"$WORK/floor.err" \
    || { echo "disk.sh: the floor failed (killed by the memory limit?)" >&2; cat "$WORK/floor.err" >&2; exit 1; }
  row "$WORK/floor.json"
}

# The median of column $1 of $WORK/rounds (one line per round); with "range", followed by the
# lowest and highest when there are several rounds.
summary() {
  sort -g -k "$1,$1" "$WORK/rounds" | awk -v c="$1" -v r="${2:-}" '{ v[NR] = $c } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    s = (m > 100) ? sprintf("%.0f", m) : sprintf("%.2f", m)
    if (r != "" && NR > 1) s = s sprintf(" (%s-%s)", v[1], v[NR]); print s }'
}
ROWS=()
CEILING=()
for pipeline in $PIPELINES; do
echo "disk.sh: the request path's ceiling ($HOT_KEYS keys), pipeline $pipeline" >&2
vasto_run ycsb-c uniform "$pipeline" "$HOT_KEYS"
read -r cops cp50 cp99 cnf cpeak <"$WORK/row"
CEILING+=("| ${CONC}x$pipeline | $cops | $cp50 | $cp99 |")
for load in "ycsb-c uniform" "ycsb-c zipfian:0.99" "ycsb-b zipfian:0.99" "ycsb-a zipfian:0.99"; do
  set -- $load
  echo "disk.sh: $1 $2, pipeline $pipeline" >&2
  : >"$WORK/rounds"
  for _ in $(seq "$ROUNDS"); do
    vasto_run "$1" "$2" "$pipeline"
    read -r vops vp50 vp99 vnf vpeak <"$WORK/row"
    stop_store
    floor_run "$1" "$2" $((CONC * pipeline))
    read -r fops fp50 fp99 fnf fpeak <"$WORK/row"
    start_store
    echo "$vops $vp50 $vp99 $vpeak $fops $fp50 $fp99 $fpeak $(ratio "$vops" "$fops") $(ratio "$vp99" "$fp99")" >>"$WORK/rounds"
    [ "$vnf" = 0 ] && [ "$fnf" = 0 ] || echo "disk.sh: $1 $2: gets found nothing (store $vnf, floor $fnf times): the data is incomplete" >&2
  done
  ROWS+=("| $1 | $2 | ${CONC}x$pipeline | $(summary 1) | $(summary 2) | $(summary 3) | $(summary 4) | $(summary 5) | $(summary 6) | $(summary 7) | $(summary 8) | $(summary 9 range) | $(summary 10 range) |")
done
done

{
  echo "# On-disk benchmark (data set larger than memory)"
  echo
  echo "Run on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r); clients and servers share the machine."
  echo "One store (release build) under a memory cgroup limit of $MEM_MB MiB (page cache included), keyspace of $SHARDS shards, 1 replica."
  echo "Data: $KEYS records of $VALUE-byte values that LZ4 cannot shrink ($FILE_GB GB of TSV), loaded by \`vasto import\` in $IMPORT_S s"
  echo "(store peak memory $IMPORT_PEAK MiB); $STORE_GB GB on disk, $(awk -v d="$STORE_GB" -v m="$MEM_MB" 'BEGIN { printf "%.1f", d * 1e9 / (m * 1048576) }')x the limit."
  echo "Each run: the page cache dropped, a $WARMUP s warm-up of the same load, then $SECS s measured; $ROUNDS round(s) of the"
  echo "store's run followed by the floor's, each cell the median of the rounds (the ratios' lowest and highest in brackets)."
  echo "vasto: \`vasto loadgen\` with $CONC connections x P requests (pipelined; P in: $PIPELINES), store defaults (256 MB block cache,"
  echo "256 MB value cache, 16 reader threads, parts of at least 4 gets). Floor: the storage engine in-process on the same directory after the store stopped,"
  echo "same limit, no value cache, $CONC x P threads of 1 request each (the same requests in flight), loadgen's mix and keys"
  echo "(benches/disk_floor.rs). Latencies in microseconds; peak = the cgroup's peak memory in MiB."
  echo
  echo "| load | keys | in flight (conns x P) | vasto ops/s | p50 | p99 | peak | floor ops/s | p50 | p99 | peak | ops / floor (goal >= 0.8) | p99 / floor (goal <= 1.5) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "The request path's ceiling: the same store and loadgen, gets of $HOT_KEYS keys (all in the value cache after the"
  echo "warm-up), so no run above can be faster than this on this machine, whatever the disk does (the floor has no network"
  echo "and no client sharing its cores):"
  echo
  echo "| in flight (conns x P) | vasto ops/s | p50 | p99 |"
  echo "|---|---|---|---|"
  printf '%s\n' "${CEILING[@]}"
} >"$OUT"
cat "$OUT"
