#!/usr/bin/env bash
# Stops the Redis processes ops/redis-up.sh started (by their PID files in RT_RUN_DIR) and
# removes their data.
set -uo pipefail
RUN=${RT_RUN_DIR:-$(dirname "$0")/.run}
for f in "$RUN"/redis-*.pid; do
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$f"
done
rm -rf "$RUN"/c[0-5] "$RUN"/primary "$RUN"/replica "$RUN"/s[0-2] "$RUN"/single
echo "redis down"
