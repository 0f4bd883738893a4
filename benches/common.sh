# Shared by the bench scripts (sourced): builds the release binary and sets VASTO, a work
# directory removed on exit, PIDS killed on exit, and small helpers.
cargo build --release --locked --bin vasto >&2
VASTO=target/release/vasto
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
# A free port on 127.0.0.1.
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
# The numeric field $2 of the JSON file $1.
json_field() { sed -n "s/.*\"$2\": *\([0-9.e+-]*\).*/\1/p" "$1" | head -1; }
# $1 / $2 with two decimals ("-" when either is missing).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a != "-") printf "%.2f", a / b; else print "-" }'; }
