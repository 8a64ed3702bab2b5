#!/usr/bin/env bash
# Runs every benchmark scenario against three systems on this machine, one after the other:
#   memory : one realtime-gateway on the memory engine
#   redis  : two realtime-gateway nodes on one redis-server; the publisher posts to node A,
#            every subscriber is on node B, so each message crosses Redis
#   nchan  : nginx + Nchan on the same redis-server (the comparison point)
# Results: one JSON line per step in bench/results/latest.jsonl, then bench/report.py writes
# the tables and plots into docs/benchmarks.md and docs/bench/.
#
#   bash bench/run.sh                 # everything (about 15 minutes)
#   bash bench/run.sh fanout-1k idle  # chosen scenarios
#   BENCH_SYSTEMS="memory nchan" bash bench/run.sh fanout-1k
#
# Loopback only; every process started here is stopped here, by PID.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SCENARIOS=${*:-"fanout-1k fanout-10k latency publish publish-100 publish-wrk channels-10k idle-10k idle-10k-browser idle-10k-bigop idle-19k storm"}
SYSTEMS=${BENCH_SYSTEMS:-"memory redis nchan"}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/latest.jsonl}
STEP_SECONDS=${BENCH_STEP_SECONDS:-5}
# Extra settings for every gateway node, e.g. REALTIME_PUBLISH_FAST_PATH=off for an A/B side run.
read -ra GATEWAY_ENV <<< "${BENCH_GATEWAY_ENV:-}"
mkdir -p "$(dirname "$RESULTS")"
touch "$RESULTS"
# Results of the scenarios and systems run now replace earlier ones; the rest are kept.
for scenario in $SCENARIOS; do for system in $SYSTEMS; do
    grep -v "\"system\":\"$system\",\"case\":\"$scenario\"," "$RESULTS" > "$RESULTS.tmp" || true
    mv "$RESULTS.tmp" "$RESULTS"
done; done

REDIS_PORT=${BENCH_REDIS_PORT:-16379}
PORT_MEMORY=18080 PORT_A=18081 PORT_B=18082 PORT_NCHAN=18090
cleanup() { stop_all; }

# Starts a system; sets SUB_WS, PUB_URL, WIRE, MEASURE_PIDS (the process holding subscribers).
start_system() {
    case $1 in
    memory)
        start_gateway $PORT_MEMORY "" "${GATEWAY_ENV[@]}"
        WIRE=realtime SUB_WS="ws://127.0.0.1:$PORT_MEMORY/v1/realtime/ws" PUB_URL="http://127.0.0.1:$PORT_MEMORY/v1/realtime/publish"
        MEASURE_PIDS="$LAST_PID" ;;
    redis)
        start_redis $REDIS_PORT
        start_gateway $PORT_A "redis://127.0.0.1:$REDIS_PORT" "${GATEWAY_ENV[@]}"
        start_gateway $PORT_B "redis://127.0.0.1:$REDIS_PORT" "${GATEWAY_ENV[@]}"
        WIRE=realtime SUB_WS="ws://127.0.0.1:$PORT_B/v1/realtime/ws" PUB_URL="http://127.0.0.1:$PORT_A/v1/realtime/publish"
        MEASURE_PIDS="$LAST_PID" ;;
    nchan)
        start_redis $REDIS_PORT
        start_nchan $PORT_NCHAN $REDIS_PORT
        WIRE=raw SUB_WS="ws://127.0.0.1:$PORT_NCHAN/sub/{channel}" PUB_URL="http://127.0.0.1:$PORT_NCHAN/pub/{channel}"
        MEASURE_PIDS="$NCHAN_WORKERS" ;;
    esac
}

bench() { # system scenario-label subcommand args...
    local system=$1 scenario=$2; shift 2
    local cmd=$1; shift
    echo "== $scenario on $system" >&2
    "$BENCH" "$cmd" --wire "$WIRE" --ws-url "$SUB_WS" --publish-url "$PUB_URL" --key "$KEY" \
        --label "$system" "$@" | sed -e "s/^{/{\"system\":\"$system\",\"case\":\"$scenario\",/" >> "$RESULTS" \
        || echo "   ($scenario on $system failed; see above)" >&2
}

pid_args() { for p in $MEASURE_PIDS; do printf -- '--pid %s ' "$p"; done; }

for scenario in $SCENARIOS; do
    for system in $SYSTEMS; do
        [[ $scenario == storm && $system == nchan ]] && { echo "== storm on nchan: skipped (no since_id resume over Nchan's plain WebSocket)" >&2; continue; }
        [[ $scenario == idle-10k-bigop && $system == nchan ]] && { echo "== idle-10k-bigop on nchan: skipped (its subscribers send nothing)" >&2; continue; }
        start_system "$system"
        case $scenario in
        fanout-1k)   bench "$system" "$scenario" fanout --subscribers 1000 --channels 1 --seconds "$STEP_SECONDS" \
                         --rates 100,200,400,600,800,1000,1200,1500,2000 --connections 16 --threads 2 ;;
        fanout-10k)  bench "$system" "$scenario" fanout --subscribers 10000 --channels 1 --seconds "$STEP_SECONDS" \
                         --rates 10,20,40,60,80,100,120,150,200 --connections 8 --workers 2 ;;
        latency)     bench "$system" "$scenario" fanout --subscribers 1000 --channels 1 --seconds 10 --rates 100 --connections 8 --threads 2 ;;
        publish)     bench "$system" "$scenario" fanout --subscribers 0 --channels 100 --seconds "$STEP_SECONDS" --rates max --connections 64 ;;
        publish-wrk) # wrk: one thread, 16 keep-alive connections, no pipelining, 10 s (the issue's setup)
                     echo "== $scenario on $system" >&2
                     BENCH_KEY=$([[ $system == nchan ]] || echo "$KEY") wrk -t1 -c16 -d10s -s bench/wrk-publish.lua \
                         "${PUB_URL/\{channel\}/bench-wrk}" | grep '^{' | sed -e "s/^{/{\"system\":\"$system\",\"case\":\"$scenario\",\"label\":\"$system\",/" >> "$RESULTS" ;;
        publish-100) bench "$system" "$scenario" fanout --subscribers 100 --channels 100 --seconds "$STEP_SECONDS" --rates max --connections 64 ;;
        channels-10k) bench "$system" "$scenario" fanout --subscribers 10000 --channels 10000 --seconds "$STEP_SECONDS" \
                         --rates 2000,5000,10000,20000,40000 --connections 32 --workers 2 ;;
        idle-10k)    bench "$system" "$scenario" idle --connections 10000 --channels 100 $(pid_args) ;;
        idle-10k-browser) # a browser's upgrade request with cookies: about 1 KiB instead of 429 bytes
                     bench "$system" "$scenario" idle --connections 10000 --channels 100 --upgrade-cookie-bytes 600 $(pid_args) ;;
        idle-10k-bigop) # each connection's subscribe op carries 60,000 bytes more, then the connection idles
                     bench "$system" "$scenario" idle --connections 10000 --channels 100 --subscribe-padding-bytes 60000 $(pid_args) ;;
        idle-19k)    bench "$system" "$scenario" idle --connections 19000 --channels 100 --workers 3 $(pid_args) ;;
        storm)       bench "$system" "$scenario" storm --clients 10000 --channels 100 --messages 20 --workers 2 ;;
        *) echo "unknown scenario $scenario" >&2; exit 2 ;;
        esac
        cleanup
    done
done

echo "results: $RESULTS" >&2
# A side run into another results file (BENCH_RESULTS, e.g. an A/B comparison) prints its
# targets but leaves docs/benchmarks.md and its plots alone.
if [[ "$RESULTS" == "$ROOT/bench/results/latest.jsonl" ]]; then
    python3 bench/report.py "$RESULTS"
else
    python3 bench/report.py --targets-only "$RESULTS"
fi
