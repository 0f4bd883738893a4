#!/usr/bin/env bash
# Side-by-side system benchmark, all in one run on this machine: one vasto store driven by
# `vasto loadgen`, and Debian's redis-server (appendonly yes, appendfsync everysec) driven by
# redis-benchmark, with the same value size, key space, connections and pipeline depths.
# Then benches/resize.sh (online resize, without and with --max-mbps). Writes
# benches/RESULTS.md. Usage: benches/run.sh [SECONDS_PER_RUN] (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
KEYS=${KEYS:-100000}
VALUE=${VALUE:-100}
CONC=${CONC:-64}
./scripts/setup.sh redis-server redis-tools
cargo build --release --locked --bin vasto
VASTO=target/release/vasto
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
json_field() { sed -n "s/.*\"$2\": *\([0-9.e+-]*\).*/\1/p" "$1" | head -1; }

MPORT=$(port); SPORT=$(port); RPORT=$(port)
$VASTO master --listen 127.0.0.1:$MPORT >"$WORK/master.log" 2>&1 & PIDS+=($!)
sleep 0.3
$VASTO store --master 127.0.0.1:$MPORT --listen 127.0.0.1:$SPORT --dir "$WORK/store" >"$WORK/store.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do
  $VASTO admin --master 127.0.0.1:$MPORT status --json 2>/dev/null | grep -q '"up":true' && break
  sleep 0.1
done
$VASTO admin --master 127.0.0.1:$MPORT create-keyspace bench --shards 2 --replicas 1

redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes --appendfsync everysec --save "" --daemonize no >"$WORK/redis.log" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

ROWS=()
run_vasto() { # workload pipeline
  local out="$WORK/vasto-$1-$2.json"
  $VASTO loadgen --master 127.0.0.1:$MPORT --keyspace bench --workload "$1" --keys "$KEYS" --value-size "$VALUE" \
    --concurrency "$CONC" --pipeline "$2" --duration "${SECS}s" --json "$out" >/dev/null 2>"$WORK/loadgen.err" || { cat "$WORK/loadgen.err" >&2; exit 1; }
  echo "$(json_field "$out" ops_per_sec) $(json_field "$out" p50_us) $(json_field "$out" p99_us) $(json_field "$out" p999_us)"
}
run_redis() { # test(set|get) pipeline -> ops/s p50 p99 (us) ; redis-benchmark reports ms
  local n=$(( SECS * 150000 * ($2 > 1 ? 4 : 1) ))
  redis-benchmark -p "$RPORT" -c "$CONC" -P "$2" -d "$VALUE" -r "$KEYS" -n "$n" -t "$1" --csv 2>/dev/null \
    | awk -F'","' 'NR==2 { printf "%.0f %.0f %.0f -\n", $2, $5*1000, $7*1000 }'
}

# Load every key first so gets hit.
$VASTO loadgen --master 127.0.0.1:$MPORT --keyspace bench --workload put --keys "$KEYS" --value-size "$VALUE" --concurrency "$CONC" --pipeline 16 --duration "${SECS}s" >/dev/null 2>&1
redis-benchmark -p "$RPORT" -c "$CONC" -P 16 -d "$VALUE" -r "$KEYS" -n $((KEYS * 4)) -t set -q >/dev/null 2>&1

{
  echo "# Benchmark results"
  echo
  echo "Run on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r). Client and server share the machine."
  echo "Values ${VALUE} B, ${KEYS} keys, ${CONC} connections, ${SECS} s per vasto run; vasto: 1 store"
  echo "(release build, $(grep -o 'io_uring=[a-z]*' "$WORK/store.log" | head -1)), keyspace of 2 shards; redis: redis-server $(redis-server --version | grep -o 'v=[0-9.]*'),"
  echo "appendonly yes, appendfsync everysec. Latencies in microseconds (redis-benchmark's own percentiles)."
  echo
  echo "| op | pipeline | vasto ops/s | vasto p50 | vasto p99 | vasto p99.9 | redis ops/s | redis p50 | redis p99 | vasto/redis ops |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for op in put get; do
    for p in 1 16; do
      read -r vops vp50 vp99 vp999 < <(run_vasto "$op" "$p")
      rop=$([ "$op" = put ] && echo set || echo get)
      read -r rops rp50 rp99 _ < <(run_redis "$rop" "$p")
      ratio=$(awk -v a="$vops" -v b="$rops" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
      printf '| %s | %s | %.0f | %.0f | %.0f | %.0f | %s | %s | %s | %s |\n' "$op" "$p" "$vops" "$vp50" "$vp99" "$vp999" "$rops" "$rp50" "$rp99" "$ratio"
    done
  done

  # Replication: a second store, the same put load on a keyspace with 1 and with 2 replicas.
  SPORT2=$(port)
  $VASTO store --master 127.0.0.1:$MPORT --listen 127.0.0.1:$SPORT2 --dir "$WORK/store2" >"$WORK/store2.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do
    [ "$($VASTO admin --master 127.0.0.1:$MPORT status --json 2>/dev/null | grep -o '"up":true' | wc -l)" -ge 2 ] && break
    sleep 0.1
  done
  $VASTO admin --master 127.0.0.1:$MPORT create-keyspace r1 --shards 2 --replicas 1 >/dev/null
  $VASTO admin --master 127.0.0.1:$MPORT create-keyspace r2 --shards 2 --replicas 2 >/dev/null
  rep() { # keyspace -> ops/s p50 p99
    local out="$WORK/rep-$1.json"
    $VASTO loadgen --master 127.0.0.1:$MPORT --keyspace "$1" --workload put --keys "$KEYS" --value-size "$VALUE" \
      --concurrency "$CONC" --pipeline 1 --duration "$2" --json "$out" >/dev/null 2>&1
    echo "$(json_field "$out" ops_per_sec) $(json_field "$out" p50_us) $(json_field "$out" p99_us)"
  }
  read -r r1ops r1p50 r1p99 < <(rep r1 "${SECS}s")
  # Long enough to contain a whole 10 s lag-report window of both stores.
  read -r r2ops r2p50 r2p99 < <(rep r2 "$(( SECS > 21 ? SECS : 21 ))s")
  # Only the 2-replica keyspace replicates, so every lag report comes from this run.
  lag=$( (cat "$WORK"/store*.log | grep 'replication lag' || true) | sed -n 's/.*entries=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2 \3/p' | sort -n -r | head -1 || true)
  read -r lagn lagp50 lagp99 <<<"${lag:-0 - -}"
  echo
  echo "## Replication (2 stores, keyspace of 2 shards, puts at concurrency ${CONC}, pipeline 1)"
  echo
  echo "| replicas | put ops/s | p50 us | p99 us |"
  echo "|---|---|---|---|"
  printf '| 1 | %.0f | %.0f | %.0f |\n' "$r1ops" "$r1p50" "$r1p99"
  printf '| 2 | %.0f | %.0f | %.0f |\n' "$r2ops" "$r2p50" "$r2p99"
  echo
  echo "Put throughput with 2 replicas / 1 replica: $(awk -v a="$r2ops" -v b="$r1ops" 'BEGIN { printf "%.2f", a / b }')."
  echo "Replication lag (client event time to applied on the other replica, busiest 10 s window, ${lagn} writes):"
  echo "p50 ${lagp50} us, p99 ${lagp99} us."
} > "$WORK/RESULTS.md"
# Online resize, on a cluster of its own: without a cap, and with --max-mbps 5.
for cap in 0 5; do
  echo >>"$WORK/RESULTS.md"
  MAX_MBPS=$cap LOAD=put benches/resize.sh "$SECS" >>"$WORK/RESULTS.md" 2>>"$WORK/resize.err"
done
cp "$WORK/RESULTS.md" benches/RESULTS.md
cat benches/RESULTS.md
