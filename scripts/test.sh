#!/usr/bin/env bash
# The README's test command: installs build prerequisites if missing, then runs every test
# (unit, property, and end-to-end tests that start real vasto processes on 127.0.0.1, and, as
# root, in network namespaces of their own).
set -euo pipefail
cd "$(dirname "$0")/.."
# iproute2: the network-fault tests (tests/network.rs) put hosts in network namespaces.
./scripts/setup.sh iproute2
exec cargo test --workspace --locked --no-fail-fast "$@"
