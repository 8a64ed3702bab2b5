#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite (unit, engine conformance, and
# integration tests against real gateway nodes over real sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build --build-tests
swift test --skip-build
