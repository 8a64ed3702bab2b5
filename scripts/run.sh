#!/usr/bin/env bash
# Installs what is missing, builds the gateway (release) and starts one node on the embedded
# memory engine. It prints its URL and a bootstrap API key. Extra arguments are gateway flags,
# e.g. `bash scripts/run.sh --port 9000`. Stop it with Ctrl-C (graceful shutdown).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release --product realtime-gateway
exec .build/release/realtime-gateway "$@"
