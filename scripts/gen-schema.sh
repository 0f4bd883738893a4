#!/usr/bin/env bash
# Regenerates schema/src/vasto_generated.rs from schema/vasto.fbs with flatc (Debian: flatbuffers-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v flatc >/dev/null || { echo "flatc not found: apt-get install flatbuffers-compiler" >&2; exit 1; }
flatc --rust -o schema/src schema/vasto.fbs
echo "generated schema/src/vasto_generated.rs with $(flatc --version)"
