# Shared by the bench/ scripts (sourced, not run): installs what is missing, builds the release
# binaries, and starts and stops the servers under test on loopback. Every process started
# through here is recorded in PIDS and stopped by `stop_all`, by PID.
#
# Sets ROOT, BIN, BENCH, GATEWAY, KEY, SECRET, RUN (a fresh directory, removed on exit).

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SETUP_GROUPS=bench source scripts/setup.sh
swift build -c release --product realtime-gateway >/dev/null
swift build -c release --product realtime-bench >/dev/null
BIN=$(swift build -c release --show-bin-path)
BENCH="$BIN/realtime-bench"
# BENCH_GATEWAY_BIN: another build of the gateway (an A/B of two commits: copy one build aside).
GATEWAY=${BENCH_GATEWAY_BIN:-$BIN/realtime-gateway}
KEY="bench-key-0123456789abcdef"
SECRET="bench-token-secret-0123456789abcdef0123456789"
RUN=$(mktemp -d /tmp/rt-bench.XXXXXX)
PIDS=()
ulimit -n 20000 2>/dev/null || true

stop_all() {
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
    PIDS=()
}
trap 'stop_all; rm -rf "$RUN"' EXIT

wait_http() { # url
    for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "not answering: $1" >&2; return 1
}

# Starts "$@" in the background, pinned to CPUS (a taskset list) when set; records its PID in
# PIDS and LAST_PID (taskset execs the command, so the PID is the server's own).
spawn() {
    if [[ -n "${CPUS:-}" ]]; then taskset -c "$CPUS" "$@" & else "$@" & fi
    LAST_PID=$!
    PIDS+=($LAST_PID)
}

start_redis() { # port
    CPUS=${REDIS_CPUS:-} spawn redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$RUN" --logfile "$RUN/redis-$1.log" --maxclients 10000
    for _ in $(seq 1 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "redis did not start" >&2; return 1
}

# start_gateway PORT [REDIS_URL] [VAR=value...]: one node with the benchmark's settings,
# pinned to CPUS when set; LAST_PID is its PID.
start_gateway() {
    local port=$1 redis=${2:-}
    shift; [[ $# -gt 0 ]] && shift
    spawn env -i PATH="$PATH" HOME="$HOME" \
        REALTIME_PORT="$port" REALTIME_API_KEY="$KEY" REALTIME_TOKEN_SECRET="$SECRET" \
        REALTIME_KEY_PUBLISH_RATE=100000000 REALTIME_MAX_CONNECTIONS=19900 REALTIME_LOG_LEVEL=warning \
        ${redis:+REALTIME_REDIS_URL=$redis} REALTIME_NODE_ID="bench-$port" "$@" \
        "$GATEWAY" > "$RUN/gateway-$port.log" 2>&1
    wait_http "http://127.0.0.1:$port/readyz"
}

# start_nchan PORT REDIS_PORT [WORKERS]: nginx + Nchan pinned to CPUS when set; LAST_PID is the
# master, NCHAN_WORKERS its workers.
start_nchan() {
    local dir="$RUN/nginx-$1"
    mkdir -p "$dir"
    sed -e "s#@RUN@#$dir#g" -e "s#@PORT@#$1#g" -e "s#@REDIS_PORT@#$2#g" \
        -e "s#worker_processes [0-9]*#worker_processes ${3:-2}#" \
        "$ROOT/bench/nchan.conf.template" > "$dir/nginx.conf"
    spawn nginx -c "$dir/nginx.conf" -p "$dir"
    for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$1/pub/ping" 2>/dev/null && break; sleep 0.1; done
    NCHAN_WORKERS=$(pgrep -P "$LAST_PID" | tr '\n' ' ')
}
