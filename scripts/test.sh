#!/usr/bin/env bash
# The README's test command: installs build prerequisites if missing, then runs every test
# (unit, property, and end-to-end tests that start real vasto processes on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo test --workspace --locked --no-fail-fast "$@"
