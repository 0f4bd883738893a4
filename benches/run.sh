#!/usr/bin/env bash
# The side-by-side benchmark suite, all in one run on this machine, written to
# benches/RESULTS.md:
# * floors: the storage engine in-process with the same keys and values, and a loopback TCP
#   round trip (cargo bench --bench embedded);
# * a 1-store and a 3-store vasto cluster driven by `vasto loadgen`, and Debian's redis-server
#   (appendonly yes, appendfsync everysec) driven by redis-benchmark: put/get at concurrency 1
#   and 64, pipeline 1 and 16, VALUE-byte values over KEYS keys;
# * bulk import (`vasto import`) against loading the same records with puts;
# * the RESP gateway (`vasto gateway`, 1 store): redis-benchmark against it and against
#   redis-server (the same client for both), and its cost over the native client (loadgen);
# * replication (1 vs 2 replicas, lag) and online resize (benches/resize.sh: the default adaptive
#   pace, fixed uncapped, fixed at 5 MB/s).
# Usage: benches/run.sh [SECONDS_PER_RUN] (default 10). KEYS (default 1000000), VALUE (100).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
KEYS=${KEYS:-1000000}
VALUE=${VALUE:-100}
./scripts/setup.sh redis-server redis-tools
. benches/common.sh

# ---- floors ----
cargo bench --locked --bench embedded -- --keys "$KEYS" --value-size "$VALUE" --secs "$SECS" >"$WORK/floor.jsonl" 2>"$WORK/floor.err" \
  || { cat "$WORK/floor.err" >&2; exit 1; }
floor() { # system op threads field
  grep "\"system\":\"$1\",\"op\":\"$2\",\"threads\":$3," "$WORK/floor.jsonl" | sed -n "s/.*\"$4\":\([0-9.]*\).*/\1/p"
}
floor_row() { # label system op threads [op as shown]: one row of the floors table
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${5:-$3}" "$4" "$(floor "$2" "$3" "$4" ops_per_sec)" \
    "$(floor "$2" "$3" "$4" p50_us)" "$(floor "$2" "$3" "$4" p99_us)" "$(floor "$2" "$3" "$4" p999_us)"
}

# ---- clusters ----
CLUSTER=()
start_cluster() { # stores [extra store flags...]
  stop_cluster
  local n=$1; shift
  MPORT=$(port)
  rm -rf "$WORK/master-$n"
  $VASTO master --listen 127.0.0.1:$MPORT --dir "$WORK/master-$n" >"$WORK/master-$n.log" 2>&1 & CLUSTER+=($!); PIDS+=($!)
  sleep 0.3
  for i in $(seq 1 "$n"); do
    rm -rf "$WORK/c$n-store$i"
    $VASTO store --master 127.0.0.1:$MPORT --listen 127.0.0.1:$(port) --dir "$WORK/c$n-store$i" "$@" >"$WORK/c$n-store$i.log" 2>&1 & CLUSTER+=($!); PIDS+=($!)
  done
  for _ in $(seq 100); do
    [ "$($VASTO admin --master 127.0.0.1:$MPORT status --json 2>/dev/null | grep -o '"up":true' | wc -l)" -ge "$n" ] && break
    sleep 0.1
  done
}
imported_cluster() { # stores shards [extra store flags...]: a cluster whose keyspace bench holds the records
  local stores=$1 shards=$2; shift 2
  start_cluster "$stores" "$@"
  $VASTO admin --master 127.0.0.1:$MPORT create-keyspace bench --shards "$shards" --replicas 1 >/dev/null
  $VASTO import --master 127.0.0.1:$MPORT --keyspace bench --input "$WORK/records.tsv" >/dev/null 2>&1
}
stop_cluster() { for p in "${CLUSTER[@]}"; do kill -9 "$p" 2>/dev/null || true; done; CLUSTER=(); }

# The records every system loads: loadgen's key names, VALUE-byte values.
awk -v n="$KEYS" -v v="$VALUE" 'BEGIN { pad = sprintf("%" v "s", ""); gsub(/ /, "x", pad); for (i = 0; i < n; i++) printf "key:%012d\t%s\n", i, pad }' >"$WORK/records.tsv"
FILE_MB=$(awk -v b="$(stat -c %s "$WORK/records.tsv")" 'BEGIN { printf "%.1f", b / 1e6 }')

vasto_row() { # op concurrency pipeline [seconds] -> ops p50 p99 p999
  local out="$WORK/vasto-$1-$2-$3.json"
  $VASTO loadgen --master 127.0.0.1:$MPORT --keyspace bench --workload "$1" --keys "$KEYS" --value-size "$VALUE" \
    --concurrency "$2" --pipeline "$3" --duration "${4:-$SECS}s" --json "$out" >/dev/null 2>"$WORK/loadgen.err" || { cat "$WORK/loadgen.err" >&2; exit 1; }
  echo "$(json_field "$out" ops_per_sec) $(json_field "$out" p50_us) $(json_field "$out" p99_us) $(json_field "$out" p999_us)"
}
bench_row() { # port set|get|incr concurrency pipeline requests -> ops p50 p99 - (redis-benchmark reports ms, no p99.9)
  redis-benchmark -p "$1" -c "$3" -P "$4" -d "$VALUE" -r "$KEYS" -n "$5" -t "$2" --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { printf "%.0f %.0f %.0f -\n", $2, $5*1000, $7*1000 }'
}
redis_row() { # set|get|incr concurrency pipeline [requests] -> ops p50 p99 -
  bench_row "$RPORT" "$1" "$2" "$3" "${4:-$(( SECS * ($2 > 1 ? 100000 : 15000) * ($3 > 1 ? 8 : 1) ))}"
}

declare -A ROW
result_row() { # label row-prefix op concurrency pipeline: one row of a results table, with its ratios
  local ops p50 p99 p999 rops fl
  read -r ops p50 p99 p999 <<<"${ROW["$2 $3 $4 $5"]}"
  read -r rops _ <<<"${ROW["redis $3 $4 $5"]}"
  fl=$(floor rocksdb-embedded "$3" "$([ "$4" = 1 ] && echo 1 || echo 2)" ops_per_sec)
  printf '| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$1" "$3" "$4" "$5" "$ops" "$p50" "$p99" "$p999" "$(ratio "$ops" "$fl")" \
    "$([ "$2" = redis ] && echo - || ratio "$ops" "$rops")"
}
# The value cache's hit ratio over the store's cache reports logged since line $2 of log $1.
cache_hits() { tail -n +"$2" "$1" | sed -n 's/.*hits=\([0-9]*\) misses=\([0-9]*\).*/\1 \2/p' | awk '{ h += $1; m += $2 } END { if (h + m > 0) printf "%.1f", 100 * h / (h + m); else print "-" }'; }
measure_vasto() { # label
  for op in put get; do for c in 1 64; do for p in 1 16; do
    local mark=1
    [ -f "$WORK/c1-store1.log" ] && mark=$(( $(wc -l <"$WORK/c1-store1.log") + 1 ))
    ROW["$1 $op $c $p"]=$(vasto_row "$op" "$c" "$p")
    if [ "$1 $op $c $p" = "vasto 1 store get 64 16" ]; then
      # The store reports every 10 s; wait for the report that covers the end of the run.
      sleep 10
      HIT64=$(cache_hits "$WORK/c1-store1.log" "$mark")
    fi
  done; done; done
}

# redis, loaded with the same key space (idle until measured).
RPORT=$(port)
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes --appendfsync everysec --save "" --daemonize no >"$WORK/redis.log" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-benchmark -p "$RPORT" -c 64 -P 16 -d "$VALUE" -r "$KEYS" -n $((KEYS * 4)) -t set -q >/dev/null 2>&1

# 1 store: load by bulk import (timed), then by puts (timed), then the matrix.
start_cluster 1
$VASTO admin --master 127.0.0.1:$MPORT create-keyspace bench --shards 2 --replicas 1 >/dev/null
t0=$(date +%s.%N)
$VASTO import --master 127.0.0.1:$MPORT --keyspace bench --input "$WORK/records.tsv" >"$WORK/import.out" 2>&1
t1=$(date +%s.%N)
import_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
$VASTO admin --master 127.0.0.1:$MPORT create-keyspace byputs --shards 2 --replicas 1 >/dev/null
$VASTO loadgen --master 127.0.0.1:$MPORT --keyspace byputs --workload put --keys "$KEYS" --value-size "$VALUE" \
  --concurrency 64 --pipeline 16 --duration "${SECS}s" --json "$WORK/puts.json" >/dev/null 2>&1
put_ops=$(json_field "$WORK/puts.json" ops_per_sec)
measure_vasto "vasto 1 store"

# The two goals, measured in alternating rounds so that both sides of each ratio see the
# machine in the same state (a single pair measured minutes apart moved by 30% here):
# loopback round trip vs get c1 P1 p50, and redis vs vasto get c64 P16 throughput.
ROUNDS=5
RTT_RATIOS=(); TPUT_RATIOS=()
for r in $(seq "$ROUNDS"); do
  rtt_r=$(cargo bench --locked --bench embedded -- --only tcp --secs 3 2>/dev/null | sed -n 's/.*"p50_us":\([0-9.]*\).*/\1/p')
  read -r _ c1_p50 _ <<<"$(vasto_row get 1 1 3)"
  RTT_RATIOS+=("$(ratio "$c1_p50" "$rtt_r") ($c1_p50 / $rtt_r us)")
  read -r c64_ops _ <<<"$(vasto_row get 64 16 5)"
  read -r redis_ops _ <<<"$(redis_row get 64 16 3000000)"
  TPUT_RATIOS+=("$(ratio "$c64_ops" "$redis_ops") ($(printf '%.0f' "$c64_ops") / $redis_ops ops/s)")
done
median() { printf '%s\n' "$@" | awk '{ print $1 }' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# The RESP gateway in front of the same 1-store cluster and keyspace (redis-benchmark's
# `key:__rand_int__` with -r KEYS names the keys loadgen uses). Each gateway row follows, back
# to back, the native client's row of the same op and shape (loadgen, ~SECS/2 s), and runs
# about as many requests as the native client did in SECS s, so the two see the machine in the
# same state; INCR has no loadgen workload, its row follows the get pair.
GPORT=$(port)
$VASTO gateway --master 127.0.0.1:$MPORT --listen 127.0.0.1:$GPORT --keyspace bench >"$WORK/gateway.log" 2>&1 & GATEWAY=$!; PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$GPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
gateway_rows() {
  local op c p native n
  for op in set get incr; do for c in 1 64; do for p in 1 16; do
    if [ "$op" != incr ]; then
      ROW["native $op $c $p"]=$(vasto_row "$([ $op = set ] && echo put || echo get)" "$c" "$p" "$(( (SECS + 1) / 2 ))")
    fi
    read -r native _ <<<"${ROW["native $([ $op = incr ] && echo get || echo $op) $c $p"]}"
    n=$(awk -v o="$native" -v s="$SECS" 'BEGIN { n = o * s; if (n < 2000) n = 2000; printf "%.0f", n }')
    ROW["gateway $op $c $p"]=$(bench_row "$GPORT" "$op" "$c" "$p" "$n")
  done; done; done
}
gateway_rows
kill -9 "$GATEWAY" 2>/dev/null || true

# 1 store without the value cache: every get is a RocksDB point lookup.
imported_cluster 1 2 --value-cache-mb 0
# Like the main 1-store rows, the gets follow puts over the same keys (recent writes are merges
# in the memtable and level 0, which a RocksDB point lookup must combine).
vasto_row put 64 16 >/dev/null
for c in 1 64; do p=$([ "$c" = 1 ] && echo 1 || echo 16); ROW["nocache get $c $p"]=$(vasto_row get "$c" "$p"); done

# 3 stores, keyspace of 6 shards x 1 replica.
imported_cluster 3 6
measure_vasto "vasto 3 stores"
stop_cluster

# redis: its matrix runs last; the goal rounds below interleave it with vasto.
for op in put get; do for c in 1 64; do for p in 1 16; do
  ROW["redis $op $c $p"]=$(redis_row "$([ $op = put ] && echo set || echo get)" "$c" "$p")
done; done; done
for c in 1 64; do for p in 1 16; do ROW["redis incr $c $p"]=$(redis_row incr "$c" "$p"); done; done
gateway_row() { # op concurrency pipeline: one row of the gateway table
  local gops g50 g99 rops r50 nops n50 redis_op
  redis_op=$([ "$1" = set ] && echo put || echo "$1")
  read -r gops g50 g99 _ <<<"${ROW["gateway $1 $2 $3"]}"
  read -r rops r50 _ <<<"${ROW["redis $redis_op $2 $3"]}"
  read -r nops n50 _ <<<"${ROW["native $1 $2 $3"]:-- -}"
  [ "$nops" = - ] || nops=$(printf '%.0f' "$nops")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$gops" "$g50" "$g99" "$rops" "$(ratio "$gops" "$rops")" \
    "$nops" "$(ratio "$gops" "$nops")" "$([ "$n50" = - ] && echo - || ratio "$g50" "$n50")"
}

{
  echo "# Benchmark results"
  echo
  echo "Run on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r); clients and servers share the machine."
  echo "Values ${VALUE} B, ${KEYS} keys (all loaded before the runs), ${SECS} s per run. vasto: release build,"
  echo "$(grep -o 'io_uring=[a-z]*' "$WORK/c1-store1.log" | head -1); 1 store with a keyspace of 2 shards, or 3 stores with 6 shards; 1 replica."
  echo "redis: redis-server $(redis-server --version | grep -o 'v=[0-9.]*'), appendonly yes, appendfsync everysec (redis-benchmark's percentiles; it reports no p99.9)."
  echo "Floor: the storage engine in-process without its value cache (RocksDB), same keys and values, 1 thread for concurrency 1 and 2 threads (all cores) for 64;"
  echo "the / rocksdb-embedded column divides by it. The engine with its value cache is shown beside it (gets only)."
  echo "Latencies in microseconds."
  echo
  echo "## Floors"
  echo
  echo "| floor | op | threads | ops/s | p50 | p99 | p99.9 |"
  echo "|---|---|---|---|---|---|---|"
  for op in put get; do for t in 1 2; do floor_row rocksdb-embedded rocksdb-embedded "$op" "$t"; done; done
  for t in 1 2; do floor_row "engine + value cache (in-process, 256 MB)" engine-cache-embedded get "$t"; done
  rtt=$(floor tcp-loopback-echo round-trip 1 p50_us)
  floor_row "tcp loopback echo (64 B)" tcp-loopback-echo round-trip 1 "round trip"
  echo
  echo "## Put and get"
  echo
  echo "| system | op | conc | pipeline | ops/s | p50 | p99 | p99.9 | / rocksdb-embedded | / redis |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for sys in "vasto 1 store" "vasto 3 stores" "redis"; do
    for op in put get; do for c in 1 64; do for p in 1 16; do result_row "$sys" "$sys" "$op" "$c" "$p"; done; done; done
  done
  echo
  echo "Value cache: a 1-store cluster started with \`--value-cache-mb 0\` (every get a RocksDB point lookup),"
  echo "same data, gets after ${SECS} s of puts at c64 P16 as above: get c1 P1 and c64 P16 below. With the default 256 MB cache, the store reported a hit ratio of"
  echo "${HIT64:--}% over the get c64 P16 run above (the cache starts empty after the import and fills as keys are read)."
  echo
  echo "| system | op | conc | pipeline | ops/s | p50 | p99 | p99.9 | / rocksdb-embedded | / redis |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for c in 1 64; do result_row "vasto 1 store, no value cache" nocache get "$c" "$([ "$c" = 1 ] && echo 1 || echo 16)"; done
  read -r _ g50 _ <<<"${ROW["vasto 1 store get 1 1"]}"
  read -r gops _ <<<"${ROW["vasto 1 store get 64 16"]}"
  read -r rgops _ <<<"${ROW["redis get 64 16"]}"
  echo
  echo "## Goals for one store"
  echo
  echo "From the single runs above: get at concurrency 1 p50 / loopback round trip p50 = $(ratio "$g50" "$rtt");"
  echo "get throughput at concurrency 64, pipeline 16 / redis = $(ratio "$gops" "$rgops")."
  echo
  echo "In ${ROUNDS} alternating rounds (each ratio from two runs back to back: a 3 s round trip floor then a 3 s"
  echo "get c1 P1; a 5 s vasto get c64 P16 then redis-benchmark's get c64 P16):"
  echo
  echo "| round | get c1 P1 p50 / round trip p50 (goal <= 1.3) | get c64 P16 vasto / redis (goal >= 1) |"
  echo "|---|---|---|"
  for r in $(seq "$ROUNDS"); do echo "| $r | ${RTT_RATIOS[$((r - 1))]} | ${TPUT_RATIOS[$((r - 1))]} |"; done
  echo "| median | $(median "${RTT_RATIOS[@]}") | $(median "${TPUT_RATIOS[@]}") |"
  echo
  echo "## RESP gateway (1 store, keyspace of 2 shards)"
  echo
  echo "\`vasto gateway\` in front of the 1-store cluster's keyspace, driven by redis-benchmark (-d ${VALUE} -r ${KEYS}), the same client"
  echo "and options as the redis-server rows; gateway / redis divides their throughputs. The native client (\`vasto loadgen\`, put for SET)"
  echo "ran the same op and shape on the same keyspace just before each gateway row: gateway / native is the gateway's cost"
  echo "(an extra hop and RESP on this 2-core machine, where the gateway, the store and the client share the cores); the last"
  echo "column divides the p50 latencies. INCR has no loadgen workload. Latencies in microseconds (redis-benchmark's)."
  echo
  echo "| op | conc | pipeline | gateway ops/s | p50 | p99 | redis ops/s | gateway / redis | native ops/s | gateway / native | p50 gateway / native |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for op in set get incr; do for c in 1 64; do for p in 1 16; do gateway_row "$op" "$c" "$p"; done; done; done
  echo
  echo "## Bulk import (1 store, keyspace of 2 shards)"
  echo
  import_mbs=$(awk -v m="$FILE_MB" -v s="$import_secs" 'BEGIN { printf "%.0f", m / s }')
  put_secs=$(awk -v n="$KEYS" -v o="$put_ops" 'BEGIN { printf "%.1f", n / o }')
  put_mbs=$(awk -v m="$FILE_MB" -v s="$put_secs" 'BEGIN { printf "%.0f", m / s }')
  echo "The same ${KEYS} records (${FILE_MB} MB of TSV): \`vasto import\` took ${import_secs} s end to end (${import_mbs} MB/s; its own report:"
  echo "$(grep -o 'in [0-9.]* s: .*records/s' "$WORK/import.out" | head -1)). Puts at concurrency 64, pipeline 16 ran at $(printf '%.0f' "$put_ops") records/s,"
  echo "so loading the file with puts takes about ${put_secs} s (${put_mbs} MB/s). Import / puts: $(ratio "$import_mbs" "$put_mbs")x (goals: >= 10x and > 100 MB/s)."
} >"$WORK/RESULTS.md"

# Replication: 2 stores, the same put load on a keyspace with 1 and with 2 replicas.
start_cluster 2
$VASTO admin --master 127.0.0.1:$MPORT create-keyspace r1 --shards 2 --replicas 1 >/dev/null
$VASTO admin --master 127.0.0.1:$MPORT create-keyspace r2 --shards 2 --replicas 2 >/dev/null
rep() { # keyspace duration -> ops/s p50 p99
  local out="$WORK/rep-$1.json"
  $VASTO loadgen --master 127.0.0.1:$MPORT --keyspace "$1" --workload put --keys "$KEYS" --value-size "$VALUE" \
    --concurrency 64 --pipeline 1 --duration "$2" --json "$out" >/dev/null 2>&1
  echo "$(json_field "$out" ops_per_sec) $(json_field "$out" p50_us) $(json_field "$out" p99_us)"
}
read -r r1ops r1p50 r1p99 < <(rep r1 "${SECS}s")
# Long enough to contain a whole 10 s lag-report window of both stores.
read -r r2ops r2p50 r2p99 < <(rep r2 "$(( SECS > 21 ? SECS : 21 ))s")
# Only the 2-replica keyspace replicates, so every lag report comes from this run.
lag=$( (cat "$WORK"/c2-store*.log | grep 'replication lag' || true) | sed -n 's/.*entries=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2 \3/p' | sort -n -r | head -1 || true)
read -r lagn lagp50 lagp99 <<<"${lag:-0 - -}"
stop_cluster
{
  echo
  echo "## Replication (2 stores, keyspace of 2 shards, puts at concurrency 64, pipeline 1)"
  echo
  echo "| replicas | put ops/s | p50 us | p99 us |"
  echo "|---|---|---|---|"
  printf '| 1 | %.0f | %.0f | %.0f |\n' "$r1ops" "$r1p50" "$r1p99"
  printf '| 2 | %.0f | %.0f | %.0f |\n' "$r2ops" "$r2p50" "$r2p99"
  echo
  echo "Put throughput with 2 replicas / 1 replica: $(ratio "$r2ops" "$r1ops")."
  echo "Replication lag (client event time to applied on the other replica, busiest 10 s window, ${lagn} writes):"
  echo "p50 ${lagp50} us, p99 ${lagp99} us."
} >>"$WORK/RESULTS.md"

# Online resize, on a cluster of its own: at the default pace (set by the stores from their
# foreground latency), as fast as possible (--fixed-pace, no cap), and at a fixed 5 MB/s; then
# the control: no resize, a 30 s wait measured the same way (how far p99 drifts by itself).
for pace in "0 0 0" "0 1 0" "5 1 0" "0 0 30"; do
  set -- $pace
  echo >>"$WORK/RESULTS.md"
  MAX_MBPS=$1 FIXED_PACE=$2 CONTROL=$3 LOAD=put benches/resize.sh "$SECS" >>"$WORK/RESULTS.md" 2>>"$WORK/resize.err"
done
cp "$WORK/RESULTS.md" benches/RESULTS.md
cat benches/RESULTS.md
