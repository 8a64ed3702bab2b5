#!/usr/bin/env bash
# Stops what ops/cluster-up.sh started, by the PIDs it recorded (gateways get SIGTERM and
# drain their clients with 1012 first).
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=${RT_RUN_DIR:-ops/.run}
[ -d "$RUN" ] || { echo "cluster-down: nothing recorded in $RUN"; exit 0; }

stop() {  # stop PIDFILE SIGNAL
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$2" "$pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$1"
}

# Nodes first, in parallel: each drains its clients (1012) through the still-running balancer.
for f in "$RUN"/node-*.pid; do stop "$f" TERM & done
wait
stop "$RUN/nginx.pid" TERM
RT_RUN_DIR="$RUN" bash ops/redis-down.sh >/dev/null
echo "cluster down"
