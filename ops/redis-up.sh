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
# 2000), RT_REDIS_TLS=1 (every server, cluster bus, replication link and sentinel speaks TLS
# only, with a CA and a certificate for 127.0.0.1 generated into $RT_RUN_DIR/tls; the URL then
# starts with rediss and carries ?tls_ca_file=). Every process is daemonized with a PID file
# named redis-*.pid; ops/redis-down.sh (and ops/cluster-down.sh) stop them by those PIDs.
set -euo pipefail
MODE=${1:-single}
P=${RT_REDIS_PORT:-6390}
RUN=$(mkdir -p "${RT_RUN_DIR:-$(dirname "$0")/.run}" && cd "${RT_RUN_DIR:-$(dirname "$0")/.run}" && pwd)
TIMEOUT=${RT_REDIS_NODE_TIMEOUT_MS:-2000}
# Listening and redis-cli options, plain or TLS.
LISTEN=(--port)
CLI_TLS=()
SCHEME=redis
QUERY=""
if [ "${RT_REDIS_TLS:-}" = 1 ]; then
  TLS="$RUN/tls"
  mkdir -p "$TLS"
  if [ ! -s "$TLS/server.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS/ca.key" -subj "/CN=redis test CA" -days 30 -out "$TLS/ca.crt" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout "$TLS/server.key" -subj "/CN=127.0.0.1" -out "$TLS/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$TLS/server.ext"
    openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial -days 30 -sha256 \
      -extfile "$TLS/server.ext" -out "$TLS/server.crt" >/dev/null 2>&1
  fi
  TLS_FILES=(--tls-cert-file "$TLS/server.crt" --tls-key-file "$TLS/server.key" --tls-ca-cert-file "$TLS/ca.crt" --tls-auth-clients no)
  LISTEN=("${TLS_FILES[@]}" --tls-replication yes --tls-cluster yes --port 0 --tls-port)
  CLI_TLS=(--tls --cacert "$TLS/ca.crt")
  SCHEME=rediss
  QUERY="?tls_ca_file=$TLS/ca.crt"
fi
rcli() { redis-cli "${CLI_TLS[@]}" "$@"; }

wait_for() {  # wait_for PORT EXPECTED COMMAND...: until the reply contains EXPECTED (60 s at most)
  local port=$1 expected=$2
  shift 2
  for _ in $(seq 1 600); do
    rcli -p "$port" "$@" 2>/dev/null | grep -q -- "$expected" && return 0
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
  redis-server "${LISTEN[@]}" "$port" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no --repl-diskless-sync-delay 0 \
    --daemonize yes --pidfile "$RUN/redis-$name.pid" --logfile "$RUN/$name/redis.log" --dir "$RUN/$name" "$@" \
    </dev/null >/dev/null 2>&1
  # Up, or gone (a port taken meanwhile): fail at once rather than wait.
  for _ in $(seq 1 600); do
    rcli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
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
  echo "$SCHEME://127.0.0.1:$P$QUERY"
  ;;
cluster)
  for i in 0 1 2 3 4 5; do
    server "c$i" $((P + i)) --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout "$TIMEOUT" --repl-ping-replica-period 1
  done
  # The primaries first; then each replica meets its primary and follows it (a one-step
  # `--cluster-replicas 1` create sometimes leaves a replica as a slotless primary).
  rcli --cluster create 127.0.0.1:$P 127.0.0.1:$((P + 1)) 127.0.0.1:$((P + 2)) --cluster-replicas 0 --cluster-yes >/dev/null
  for i in 0 1 2; do
    id=$(rcli -p $((P + i)) cluster myid)
    rcli -p $((P + 3 + i)) cluster meet 127.0.0.1 $((P + i)) >/dev/null
    wait_for $((P + 3 + i)) OK cluster replicate "$id"
  done
  for i in 0 1 2 3 4 5; do wait_for $((P + i)) cluster_state:ok cluster info; done
  for i in 3 4 5; do wait_for $((P + i)) master_link_status:up info replication; done
  for i in 0 1 2 3 4 5; do
    for _ in $(seq 1 600); do
      [ "$(rcli -p $((P + i)) cluster nodes | awk '$3 ~ /slave/ && $8 == "connected"' | wc -l)" = 3 ] && break
      sleep 0.1
    done
  done
  echo "$SCHEME+cluster://127.0.0.1:$P,127.0.0.1:$((P + 1)),127.0.0.1:$((P + 2))$QUERY"
  ;;
sentinel)
  server primary "$P" --repl-ping-replica-period 1
  server replica $((P + 1)) --replicaof 127.0.0.1 "$P" --repl-ping-replica-period 1
  wait_for $((P + 1)) master_link_status:up info replication
  for i in 0 1 2; do
    port=$((P + 2 + i))
    mkdir -p "$RUN/s$i"
    if [ -n "$QUERY" ]; then
      listen="port 0
tls-port $port
tls-cert-file $TLS/server.crt
tls-key-file $TLS/server.key
tls-ca-cert-file $TLS/ca.crt
tls-auth-clients no
tls-replication yes"
    else
      listen="port $port"
    fi
    cat > "$RUN/s$i/sentinel.conf" <<EOF
$listen
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
      [ "$(rcli -p $((P + 2 + i)) sentinel sentinels rtmaster | grep -c '^name$')" = 2 ] &&
        [ "$(rcli -p $((P + 2 + i)) sentinel replicas rtmaster | grep -c '^name$')" = 1 ] && break
      sleep 0.1
    done
  done
  echo "$SCHEME+sentinel://127.0.0.1:$((P + 2)),127.0.0.1:$((P + 3)),127.0.0.1:$((P + 4))/rtmaster$QUERY"
  ;;
*)
  echo "usage: $0 single|cluster|sentinel" >&2
  exit 2
  ;;
esac
