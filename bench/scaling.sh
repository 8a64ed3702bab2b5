#!/usr/bin/env bash
# Delivered/s against server cores (issue 15): the server pinned to its first N cores, the load
# tool to other cores, 1 channel × SUBS subscribers, the publish rate stepped up (3 s a step).
#   memory : one realtime-gateway, memory engine, on N cores
#   redis  : two realtime-gateway nodes on one redis-server, N/2 cores each (both on core 0
#            when N is 1); the publisher posts to node A, every subscriber is on node B
#   nchan  : nginx + Nchan with N workers on N cores, on the same redis-server
# One JSON line per step in bench/results/scaling-<nproc>core.jsonl (labels like the 16-core
# runner's: memory-4c-1000s, redis-2nodes-2+2c-1000s, nchan-redis-4w-1000s); then
# `python3 bench/report.py --scaling` redraws the table and plot in docs/benchmarks.md.
#
#   bash bench/scaling.sh                                   # every system, default core counts
#   CORES="1 2 4 8" SUBS=10000 RATES=50,100,150,200 bash bench/scaling.sh memory
#
# Core counts: 1, 2, 4, 8 up to half the machine. On 16 cores and more the load tool gets
# cores 8-14 and Redis core 15 (as ../shared/devbench/run.sh does); on a smaller machine the
# load tool and Redis get the cores the server does not, and a core count that leaves none
# (N = nproc) shares the machine with the load tool (marked "shared" in the results).
# Loopback only; every process started here is stopped here, by PID.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NPROC=$(nproc)
SYSTEMS=${*:-"memory redis nchan"}
SUBS=${SUBS:-1000}
RATES=${RATES:-250,500,750,1000,1250,1500,2000,2500,3000,4000}
if [[ -z "${CORES:-}" ]]; then
    CORES=""; for n in 1 2 4 8; do (( n * 2 <= NPROC || n == 1 )) && CORES+="$n "; done
    (( NPROC <= 2 )) && CORES="1 2"
fi
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/scaling-${NPROC}core.jsonl}
mkdir -p "$(dirname "$RESULTS")"
REDIS_PORT=16379 PORT_MEMORY=18080 PORT_A=18081 PORT_B=18082 PORT_NCHAN=18090

cpus_for() { # n -> SERVER LOAD REDIS (taskset lists)
    local n=$1
    if (( NPROC >= 16 )); then echo "0-$((n - 1)) 8-14 15"; return; fi
    if (( n >= NPROC )); then echo "0-$((NPROC - 1)) 0-$((NPROC - 1)) 0-$((NPROC - 1))"; return; fi
    echo "0-$((n - 1)) $n-$((NPROC - 1)) $n-$((NPROC - 1))"
}
count() { # taskset list -> number of cores
    local total=0 part; IFS=, read -ra parts <<< "$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then total=$((total + ${part#*-} - ${part%-*} + 1)); else total=$((total + 1)); fi
    done; echo $total
}

bench() { # label ws-url pub-url wire shared
    local label=$1 ws=$2 pub=$3 wire=$4 shared=$5 load=$6
    local threads=$(( $(count "$load") / 2 )); (( threads < 1 )) && threads=1; (( threads > 3 )) && threads=3
    local workers=1; (( $(count "$load") >= 4 || SUBS > 9000 )) && workers=2
    echo "== $label (load tool on cores $load)" >&2
    taskset -c "$load" "$BENCH" fanout --wire "$wire" --ws-url "$ws" --publish-url "$pub" --key "$KEY" --label "$label" \
        --subscribers "$SUBS" --channels 1 --seconds 3 --rates "$RATES" --connections 16 --threads "$threads" --workers "$workers" \
        | sed -e "s/^{/{\"case\":\"scaling\",\"nproc\":$NPROC,\"shared\":$shared,/" | tee -a "$RESULTS" \
        | python3 -c 'import sys, json
for line in sys.stdin:
    d = json.loads(line)
    print(d["label"], "offered", d.get("offered_rate"), "delivered/s", int(d["delivered_per_second"]), "lost", d["lost"],
          "p50", d["latency_ms"]["p50"], "p99", d["latency_ms"]["p99"], file=sys.stderr)'
}

for n in $CORES; do
    read -r server load redis <<< "$(cpus_for "$n")"
    shared=false; (( n >= NPROC && NPROC < 16 )) && shared=true
    for system in $SYSTEMS; do
        case $system in
        memory)
            CPUS=$server start_gateway $PORT_MEMORY
            bench "memory-${n}c-${SUBS}s" "ws://127.0.0.1:$PORT_MEMORY/v1/realtime/ws" "http://127.0.0.1:$PORT_MEMORY/v1/realtime/publish" realtime $shared "$load" ;;
        redis)
            REDIS_CPUS=$redis start_redis $REDIS_PORT
            half=$(( n / 2 )); (( half < 1 )) && half=1
            if (( n == 1 )); then a=0 b=0; else a="0-$((half - 1))" b="$half-$((n - 1))"; fi
            (( n >= NPROC && NPROC < 16 )) && { a=$server b=$server; }
            CPUS=$a start_gateway $PORT_A "redis://127.0.0.1:$REDIS_PORT"
            CPUS=$b start_gateway $PORT_B "redis://127.0.0.1:$REDIS_PORT"
            parts="${half}+$(( n - half ))"; (( n == 1 )) && parts="1"  # both nodes on one core
            bench "redis-2nodes-${parts}c-${SUBS}s" "ws://127.0.0.1:$PORT_B/v1/realtime/ws" "http://127.0.0.1:$PORT_A/v1/realtime/publish" realtime $shared "$load" ;;
        nchan)
            REDIS_CPUS=$redis start_redis $REDIS_PORT
            CPUS=$server start_nchan $PORT_NCHAN $REDIS_PORT "$n"
            bench "nchan-redis-${n}w-${SUBS}s" "ws://127.0.0.1:$PORT_NCHAN/sub/{channel}" "http://127.0.0.1:$PORT_NCHAN/pub/{channel}" raw $shared "$load" ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
        esac
        stop_all
    done
done
echo "results: $RESULTS" >&2
python3 "$ROOT/bench/report.py" --scaling
