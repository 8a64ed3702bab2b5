#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite: unit tests, the engine conformance
# suite against both engines, integration tests against real gateway nodes over real sockets,
# the fault-injection suite, the libFuzzer targets for a bounded time,
# then the Python client's tests and the browser client and console in headless Chromium
# (pytest against a live node).
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_GROUPS=clients source scripts/setup.sh
swift build --build-tests
swift test --skip-build
# libFuzzer targets, each for a bounded time (FUZZ_SECONDS, default 30) on its seed corpus.
bash fuzz/run.sh "${FUZZ_SECONDS:-30}"
# A virtual environment under .build (Debian's own Python refuses system-wide pip installs).
venv=.build/venv-clients
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest ./clients/python
REALTIME_REQUIRE_BROWSER=1 REALTIME_GATEWAY_BIN="$(swift build --show-bin-path)/realtime-gateway" \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests
