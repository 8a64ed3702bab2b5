#!/usr/bin/env bash
# Redis Cluster: publish and fan-out throughput on one Redis server against a 3-shard cluster
# (3 primaries + 3 replicas), with the CPU each redis-server process spent. Two gateway nodes
# each time: the publisher posts to node A, every subscriber is on node B, so each message
# crosses Redis. Prints a markdown table (docs/benchmarks.md, "Redis Cluster") and appends one
# JSON line per run to bench/results/shards.jsonl.
#
#   bash bench/shards.sh                    # both scenarios on both deployments (about 2 minutes)
#   BENCH_STEP_SECONDS=10 bash bench/shards.sh
#
# Loopback only; every process started here is stopped here, by PID.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
STEP_SECONDS=${BENCH_STEP_SECONDS:-5}
RESULTS=$ROOT/bench/results/shards.jsonl
mkdir -p "$(dirname "$RESULTS")"

cleanup() {
    stop_all
    RT_RUN_DIR="$RUN/redis" bash ops/redis-down.sh >/dev/null 2>&1 || true
}
trap 'cleanup; rm -rf "$RUN"' EXIT

# CPU ticks (user + system) of every redis-server the deployment runs, one per line: "name ticks".
redis_ticks() {
    for f in "$RUN"/redis/redis-*.pid; do
        local name=${f##*/redis-}; name=${name%.pid}
        awk -v n="$name" '{print n, $14 + $15}' "/proc/$(cat "$f")/stat"
    done
}

echo "| deployment | scenario | publishes/s | delivered/s | lost | busiest redis-server (% of a core) | all redis-servers (% of a core) |"
echo "|---|---|---|---|---|---|---|"
for deployment in single cluster; do
    for scenario in publish fanout-1k-channels; do
        mkdir -p "$RUN/redis"
        # Nothing of ours may be left on the ports (another run, a crashed one).
        for port in 18181 18182 17100 17101 17102 17103 17104 17105; do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is taken: stop what runs there" >&2; exit 1; fi
        done
        # Cluster bus ports are port + 10000: keep both below the ephemeral range.
        url=$(RT_RUN_DIR="$RUN/redis" RT_REDIS_PORT=17100 bash ops/redis-up.sh "$deployment" | tail -n 1)
        start_gateway 18181 "$url"
        start_gateway 18182 "$url"
        before=$(redis_ticks)
        start=$(date +%s%N)
        case $scenario in
        publish) args=(--subscribers 0 --channels 100 --rates max --connections 64) ;;
        fanout-1k-channels) args=(--subscribers 2000 --channels 1000 --rates max --connections 64) ;;
        esac
        line=$("$BENCH" fanout --wire realtime --ws-url ws://127.0.0.1:18182/v1/realtime/ws \
            --publish-url http://127.0.0.1:18181/v1/realtime/publish --key "$KEY" --label "$deployment" \
            --seconds "$STEP_SECONDS" "${args[@]}" | tail -n 1)
        elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
        after=$(redis_ticks)
        cpu=$(join <(sort <<<"$before") <(sort <<<"$after") | awk -v ms="$elapsed" '
            { pct = ($3 - $2) * 10 / ms * 100; total += pct; if (pct > max) max = pct }
            END { printf "%.0f %.0f", max, total }')
        echo "{\"deployment\":\"$deployment\",\"case\":\"$scenario\",\"redis_cpu_max_pct\":${cpu% *},\"redis_cpu_total_pct\":${cpu#* },${line#\{}" >> "$RESULTS"
        python3 - "$line" "$deployment" "$scenario" "$cpu" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
busiest, total = sys.argv[4].split()
print(f"| {'1 server' if sys.argv[2] == 'single' else '3 shards'} | {sys.argv[3]} | {r['publish_per_second']:,.0f} | "
      f"{r['delivered_per_second']:,.0f} | {r['lost']} | {busiest} | {total} |")
EOF
        cleanup
    done
done
