#!/usr/bin/env bash
# Builds each libFuzzer target and runs it for a bounded time on its committed seed corpus
# (fuzz/corpus/<target>); new inputs it finds go to a scratch corpus under .build/, crashes
# to .build/fuzz/<target>/. Exits non-zero on a crash.
#
#   bash fuzz/run.sh [seconds per target, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
out=.build/fuzz
mkdir -p "$out"
declare -A sources=(
  [json]="fuzz/JSONFuzz.swift Sources/RealtimeCore/Wire/JSONParser.swift Sources/RealtimeCore/Wire/JSONValue.swift Sources/RealtimeCore/Domain/RealtimeError.swift"
)
for target in "${!sources[@]}"; do
  rm -rf "$out/$target/crashes"
  mkdir -p "$out/$target/corpus" "$out/$target/crashes"
  # shellcheck disable=SC2086
  swiftc -O -sanitize=fuzzer,address -parse-as-library ${sources[$target]} -o "$out/$target/fuzzer"
  echo "fuzz: $target for ${seconds}s"
  SWIFT_BACKTRACE=enable=no "$out/$target/fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/$target/crashes/" "$out/$target/corpus" "fuzz/corpus/$target" fuzz/regressions/$target 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|INFO: Loaded|==[0-9]+==ERROR|SUMMARY)" || true
  if ls "$out/$target/crashes/"* >/dev/null 2>&1; then
    echo "fuzz: $target found a crash: $(ls "$out/$target/crashes/")" >&2
    exit 1
  fi
done
