#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for a bounded time on its committed seed corpus
# (fuzz/corpus/<target>) and its kept crash inputs (fuzz/regressions/<target>); new inputs it
# finds go to a scratch corpus under .build/fuzz/<target>/, crashes to .build/fuzz/<target>/crashes/.
# Exits non-zero on a crash.
#
#   bash fuzz/run.sh [seconds per target, default 30]
#   FUZZ_DEEP=1 FUZZ_TARGETS="frame token" bash fuzz/run.sh 600
#
# Targets: json (the strict JSON parser, built from its own sources with swiftc, fully
# instrumented), and frame, rest, deflate, token (the node's input paths: one SwiftPM product,
# realtime-fuzz; fuzz/Sources/realtime-fuzz/Targets.swift says what each checks).
#
# realtime-fuzz is built one of two ways:
#   quick (default; the test command): in .build next to the tests, debug, with only the fuzz
#     target instrumented. A few seconds on top of the test build; it replays the corpus and the
#     kept regressions through every check and explores a little.
#   deep (FUZZ_DEEP=1): release in .build-fuzz with every module instrumented (coverage guides
#     the search through the node's own code). A build of its own, 20 minutes or more on 2 cores:
#     use it for the long runs recorded in docs/robustness.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
targets=${FUZZ_TARGETS:-"json frame rest deflate token"}
out=.build/fuzz
mkdir -p "$out"

build_json() {
  mkdir -p "$out/json"
  swiftc -O -sanitize=fuzzer,address -parse-as-library fuzz/JSONFuzz.swift \
    Sources/RealtimeCore/Wire/JSONParser.swift Sources/RealtimeCore/Wire/JSONValue.swift \
    Sources/RealtimeCore/Domain/RealtimeError.swift -o "$out/json/fuzzer"
}

package_fuzzer=""
build_package() {
  [ -n "$package_fuzzer" ] && return
  if [ -n "${FUZZ_DEEP:-}" ]; then
    REALTIME_FUZZ=1 swift build -c release --build-path .build-fuzz --product realtime-fuzz \
      -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing >/dev/null
    package_fuzzer="$(REALTIME_FUZZ=1 swift build -c release --build-path .build-fuzz --show-bin-path)/realtime-fuzz"
  else
    REALTIME_FUZZ=1 swift build --product realtime-fuzz >/dev/null
    package_fuzzer="$(REALTIME_FUZZ=1 swift build --show-bin-path)/realtime-fuzz"
  fi
}

for target in $targets; do
  if [ "$target" = json ]; then
    build_json
    fuzzer="$out/json/fuzzer"
  else
    build_package
    fuzzer="$package_fuzzer"
  fi
  rm -rf "$out/$target/crashes"
  mkdir -p "$out/$target/corpus" "$out/$target/crashes"
  dirs=("$out/$target/corpus" "fuzz/corpus/$target")
  [ -d "fuzz/regressions/$target" ] && dirs+=("fuzz/regressions/$target")
  echo "fuzz: $target for ${seconds}s"
  REALTIME_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/$target/crashes/" "${dirs[@]}" 2>&1 |
    grep -E "^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss_mb|INFO: Loaded|==[0-9]+==ERROR|SUMMARY)|Fatal error|precondition" || true
  if ls "$out/$target/crashes/"* >/dev/null 2>&1; then
    echo "fuzz: $target found a crash: $(ls "$out/$target/crashes/")" >&2
    exit 1
  fi
done
