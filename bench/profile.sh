#!/usr/bin/env bash
# Profiles one node with perf call graphs and prints where its CPU goes:
#
#   bash bench/profile.sh [memory|redis]   REST publish under wrk (one thread, 16 connections,
#                                          as the publish-wrk scenario); default: redis
#   bash bench/profile.sh fanout           a memory node pinned to core 0, realtime-bench on the
#                                          other cores: 1 channel × 1,000 subscribers at
#                                          FANOUT_RATE messages/s (default 600) for 12 s
#
# redis: one node on one redis-server (no subscribers, so the node only publishes). Prints
# the node's CPU per publish (from /proc), Redis' µs per call of each command (INFO
# commandstats), and perf's top symbols (self and with children); the raw perf.data is kept
# under bench/results/profile-<engine>.perf.data (not committed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ENGINE=${1:-redis}
PORT=18085 REDIS_PORT=16385 SECONDS_UNDER_LOAD=${PROFILE_SECONDS:-10}

if [[ $ENGINE == fanout ]]; then
    RATE=${FANOUT_RATE:-600}
    CPUS=0 start_gateway $PORT "" ${BENCH_GATEWAY_ENV:-}
    NODE=$LAST_PID
    ticks() { awk '{print $14 + $15}' "/proc/$NODE/stat"; }
    DATA="$ROOT/bench/results/profile-fanout.perf.data"
    taskset -c 1-$(( $(nproc) - 1 )) "$BENCH" fanout --ws-url "ws://127.0.0.1:$PORT/v1/realtime/ws" \
        --publish-url "http://127.0.0.1:$PORT/v1/realtime/publish" --key "$KEY" --subscribers 1000 --channels 1 \
        --seconds 12 --rates "$RATE" --connections 8 > "$RUN/fanout.out" &
    LOAD=$!
    sleep 6
    before=$(ticks)
    perf record -F ${PERF_HZ:-999} ${PERF_CALLGRAPH:--g} -e cpu-clock -e syscalls:sys_enter_writev -p "$NODE" -o "$DATA" -- sleep ${PERF_SECONDS:-6} 2>/dev/null >/dev/null
    after=$(ticks)
    wait $LOAD
    python3 - "$before" "$after" "$(getconf CLK_TCK)" "$(grep '^{' "$RUN/fanout.out")" "${PERF_SECONDS:-6}" <<'EOF2'
import json, sys
before, after, hz, d = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
cpu = (after - before) / hz / float(sys.argv[5])
rate = d["delivered_per_second"]
print(f"delivered/s {rate:,.0f} (lost {d['lost']}, p99 {d['latency_ms']['p99']} ms); node CPU {cpu:.2f} cores; "
      f"{cpu / rate * 1e9:.0f} ns of node CPU per delivery")
EOF2
    echo "top symbols (self):"
    perf report -i "$DATA" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
    echo "top symbols (with children):"
    perf report -i "$DATA" --children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -60
    exit 0
fi

if [[ $ENGINE == redis ]]; then
    start_redis $REDIS_PORT
    start_gateway $PORT "redis://127.0.0.1:$REDIS_PORT" ${BENCH_GATEWAY_ENV:-}
else
    start_gateway $PORT "" ${BENCH_GATEWAY_ENV:-}
fi
NODE=$LAST_PID
ticks() { awk '{print $14 + $15}' "/proc/$NODE/stat"; }
[[ $ENGINE == redis ]] && redis-cli -p $REDIS_PORT config resetstat >/dev/null

DATA="$ROOT/bench/results/profile-$ENGINE.perf.data"
before=$(ticks)
BENCH_KEY=$KEY wrk -t1 -c16 -d${SECONDS_UNDER_LOAD}s -s bench/wrk-publish.lua "http://127.0.0.1:$PORT/v1/realtime/publish" > "$RUN/wrk.out" &
WRK=$!
sleep 2
perf record -F 999 -g -p "$NODE" -o "$DATA" -- sleep $((SECONDS_UNDER_LOAD - 4)) 2>/dev/null >/dev/null
wait $WRK
after=$(ticks)
line=$(grep '^{' "$RUN/wrk.out")
rate=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["publish_per_second"])' "$line")
hz=$(getconf CLK_TCK)
python3 - "$before" "$after" "$hz" "$rate" "$SECONDS_UNDER_LOAD" <<'EOF'
import sys
before, after, hz, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
cpu = (after - before) / hz
print(f"publishes/s {rate:,.0f}; node CPU {cpu / seconds:.2f} cores; {cpu / (rate * seconds) * 1e6:.1f} µs of node CPU per publish")
EOF
if [[ $ENGINE == redis ]]; then
    echo "Redis, µs per call:"
    redis-cli -p $REDIS_PORT info commandstats | grep -E 'calls=' | sed -E 's/^cmdstat_([a-z|]+):calls=([0-9]+),usec=[0-9]+,usec_per_call=([0-9.]+).*/  \1 \2 calls, \3/'
fi
echo "top symbols (self):"
perf report -i "$DATA" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
echo "top symbols (with children):"
perf report -i "$DATA" --children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
