#!/usr/bin/env bash
# The README's run command: installs build prerequisites if missing, builds vasto (release) and
# starts a local cluster: master + 3 stores + keyspace `default`, data under ./vasto-data.
# Extra arguments go to `vasto dev` (see `vasto dev --help`). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release --locked --bin vasto -- dev "$@"
