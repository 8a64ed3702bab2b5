#!/usr/bin/env bash
# Starts a Redis deployment natively on loopback and prints its REALTIME_REDIS_URL (last line).
#
#   bash ops/redis-up.sh single     # one redis-server on RT_REDIS_PORT
#   bash ops/redis-up.sh cluster    # Redis Cluster: 3 primaries + 3 replicas on RT_REDIS_PORT..+5
#   bash ops/redis-up.sh sentinel   # primary (RT_REDIS_PORT), replica (+1), 3 sentinels (+2..+4),
#                                   # master name "rtmaster"
#
# Settings (environment): RT_REDIS_PORT (first port, default 6390; a cluster node's bus port is
# its port + 10000, so keep it below 55530), RT_RUN_DIR (PID files, logs, configs; default
# ops/.run), RT_REDIS_NODE_TIMEOUT_MS (cluster-node-timeout and the sentinels' down-after, default
# 2000). Every process is daemonized with a PID file named redis-*.pid; ops/redis-down.sh (and
# ops/cluster-down.sh) stop them by those PIDs.
set -euo pipefail
MODE=${1:-single}
P=${RT_REDIS_PORT:-6390}
RUN=$(mkdir -p "${RT_RUN_DIR:-$(dirname "$0")/.run}" && cd "${RT_RUN_DIR:-$(dirname "$0")/.run}" && pwd)
TIMEOUT=${RT_REDIS_NODE_TIMEOUT_MS:-2000}

wait_for() {  # wait_for PORT EXPECTED COMMAND...: until the reply contains EXPECTED (60 s at most)
  local port=$1 expected=$2
  shift 2
  for _ in $(seq 1 600); do
    redis-cli -p "$port" "$@" 2>/dev/null | grep -q -- "$expected" && return 0
    sleep 0.1
  done
  echo "redis-up: $port never answered '$expected' to '$*'" >&2
  return 1
}

server() {  # server NAME PORT EXTRA-ARGS...
  local name=$1 port=$2
  shift 2
  mkdir -p "$RUN/$name"
  # No delay before a replica's first sync (the default waits 5 s for more replicas): until it
  # has synced, a replica can never be promoted.
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no --repl-diskless-sync-delay 0 \
    --daemonize yes --pidfile "$RUN/redis-$name.pid" --logfile "$RUN/$name/redis.log" --dir "$RUN/$name" "$@" \
    </dev/null >/dev/null 2>&1
  # Up, or gone (a port taken meanwhile): fail at once rather than wait.
  for _ in $(seq 1 600); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    if [ -s "$RUN/redis-$name.pid" ] && ! kill -0 "$(cat "$RUN/redis-$name.pid")" 2>/dev/null; then
      echo "redis-up: $name on $port exited: $(tail -n 2 "$RUN/$name/redis.log")" >&2
      return 1
    fi
    sleep 0.1
  done
  return 1
}

case "$MODE" in
single)
  server single "$P"
  echo "redis://127.0.0.1:$P"
  ;;
cluster)
  for i in 0 1 2 3 4 5; do
    server "c$i" $((P + i)) --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout "$TIMEOUT" --repl-ping-replica-period 1
  done
  # The primaries first; then each replica meets its primary and follows it (a one-step
  # `--cluster-replicas 1` create sometimes leaves a replica as a slotless primary).
  redis-cli --cluster create 127.0.0.1:$P 127.0.0.1:$((P + 1)) 127.0.0.1:$((P + 2)) --cluster-replicas 0 --cluster-yes >/dev/null
  for i in 0 1 2; do
    id=$(redis-cli -p $((P + i)) cluster myid)
    redis-cli -p $((P + 3 + i)) cluster meet 127.0.0.1 $((P + i)) >/dev/null
    wait_for $((P + 3 + i)) OK cluster replicate "$id"
  done
  for i in 0 1 2 3 4 5; do wait_for $((P + i)) cluster_state:ok cluster info; done
  for i in 3 4 5; do wait_for $((P + i)) master_link_status:up info replication; done
  for i in 0 1 2 3 4 5; do
    for _ in $(seq 1 600); do
      [ "$(redis-cli -p $((P + i)) cluster nodes | awk '$3 ~ /slave/ && $8 == "connected"' | wc -l)" = 3 ] && break
      sleep 0.1
    done
  done
  echo "redis+cluster://127.0.0.1:$P,127.0.0.1:$((P + 1)),127.0.0.1:$((P + 2))"
  ;;
sentinel)
  server primary "$P" --repl-ping-replica-period 1
  server replica $((P + 1)) --replicaof 127.0.0.1 "$P" --repl-ping-replica-period 1
  wait_for $((P + 1)) master_link_status:up info replication
  for i in 0 1 2; do
    port=$((P + 2 + i))
    mkdir -p "$RUN/s$i"
    cat > "$RUN/s$i/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
protected-mode no
daemonize yes
pidfile $RUN/redis-s$i.pid
logfile $RUN/s$i/sentinel.log
dir $RUN/s$i
sentinel monitor rtmaster 127.0.0.1 $P 2
sentinel down-after-milliseconds rtmaster $TIMEOUT
sentinel failover-timeout rtmaster 10000
sentinel parallel-syncs rtmaster 1
EOF
    redis-server "$RUN/s$i/sentinel.conf" --sentinel </dev/null >/dev/null 2>&1
  done
  for i in 0 1 2; do
    wait_for $((P + 2 + i)) "$P" sentinel get-master-addr-by-name rtmaster
    # Each sentinel has found the replica and the other two sentinels.
    for _ in $(seq 1 600); do
      [ "$(redis-cli -p $((P + 2 + i)) sentinel sentinels rtmaster | grep -c '^name$')" = 2 ] &&
        [ "$(redis-cli -p $((P + 2 + i)) sentinel replicas rtmaster | grep -c '^name$')" = 1 ] && break
      sleep 0.1
    done
  done
  echo "redis+sentinel://127.0.0.1:$((P + 2)),127.0.0.1:$((P + 3)),127.0.0.1:$((P + 4))/rtmaster"
  ;;
*)
  echo "usage: $0 single|cluster|sentinel" >&2
  exit 2
  ;;
esac
