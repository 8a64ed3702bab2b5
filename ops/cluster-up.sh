#!/usr/bin/env bash
# Starts the docker-compose topology natively on loopback, without Docker: Redis, three
# gateway nodes and an nginx load balancer in front, all from Debian packages.
#
#   bash ops/cluster-up.sh          # LB on http://127.0.0.1:8080, nodes on 8081-8083, redis on 6390
#   RT_REDIS=cluster bash ops/cluster-up.sh    # on a Redis Cluster (3 primaries + 3 replicas, 6390-6395)
#   RT_REDIS=sentinel bash ops/cluster-up.sh   # behind Sentinel (primary 6390, replica 6391, sentinels 6392-6394)
#   bash ops/cluster-down.sh        # stops exactly what this started (by PID)
#
# Settings (environment): RT_BASE_PORT (LB port; nodes use the next three), RT_REDIS_PORT,
# RT_RUN_DIR (PID files, logs, generated secrets; default ops/.run), RT_GATEWAY_BIN (a built
# realtime-gateway; default: build the release binary), RT_NODES (default 3), RT_TLS=1 (TLS on
# the load balancer and on every node, with a CA and certificates generated into
# $RT_RUN_DIR/tls: clients trust tls/ca.crt; the LB serves https/wss and verifies the nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

BASE=${RT_BASE_PORT:-8080}
REDIS_PORT=${RT_REDIS_PORT:-6390}
NODES=${RT_NODES:-3}
RUN=$(mkdir -p "${RT_RUN_DIR:-ops/.run}" && cd "${RT_RUN_DIR:-ops/.run}" && pwd)
BIN=${RT_GATEWAY_BIN:-}
if [ -z "$BIN" ]; then
  swift build -c release --product realtime-gateway >&2
  BIN=.build/release/realtime-gateway
fi

# Secrets shared by every node, generated once per run directory.
[ -s "$RUN/token-secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > "$RUN/token-secret"
[ -s "$RUN/api-key" ] || { printf 'rk_'; head -c 24 /dev/urandom | base64 | tr -d '\n/+='; } > "$RUN/api-key"

SCHEME=http
node_tls=()
if [ "${RT_TLS:-}" = 1 ]; then
  SCHEME=https
  TLS="$RUN/tls"
  mkdir -p "$TLS"
  if [ ! -s "$TLS/server.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TLS/ca.key" -subj "/CN=realtime local CA" -days 30 \
      -out "$TLS/ca.crt" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout "$TLS/server.key" -subj "/CN=localhost" -out "$TLS/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$TLS/server.ext"
    openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial -days 30 -sha256 \
      -extfile "$TLS/server.ext" -out "$TLS/server.crt" >/dev/null 2>&1
  fi
  node_tls=(--tls-cert-file "$TLS/server.crt" --tls-key-file "$TLS/server.key")
fi

# Redis in the chosen topology (ops/redis-up.sh prints the URL the nodes take).
REDIS_URL=$(RT_RUN_DIR="$RUN" RT_REDIS_PORT="$REDIS_PORT" bash ops/redis-up.sh "${RT_REDIS:-single}" | tail -n 1)

upstreams=""
for i in $(seq 1 "$NODES"); do
  port=$((BASE + i))
  REALTIME_REDIS_URL="$REDIS_URL" REALTIME_TOKEN_SECRET="$(cat "$RUN/token-secret")" \
  REALTIME_API_KEY="$(cat "$RUN/api-key")" REALTIME_PUBLIC_URL="$SCHEME://127.0.0.1:$BASE" \
    nohup "$BIN" --port "$port" --node-id "node-$i" "${node_tls[@]}" </dev/null > "$RUN/node-$i.log" 2>&1 &
  echo $! > "$RUN/node-$i.pid"
  upstreams="$upstreams    server 127.0.0.1:$port max_fails=1 fail_timeout=2s;\n"
done

mkdir -p "$RUN/nginx"
if [ "$SCHEME" = https ]; then
  listen="listen 127.0.0.1:$BASE ssl;
    ssl_certificate $TLS/server.crt;
    ssl_certificate_key $TLS/server.key;"
  upstream_tls="proxy_ssl_trusted_certificate $TLS/ca.crt;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;"
else
  listen="listen 127.0.0.1:$BASE;"
  upstream_tls=""
fi
printf "worker_processes 1;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $RUN/nginx/body;
  proxy_temp_path $RUN/nginx/proxy;
  fastcgi_temp_path $RUN/nginx/fastcgi;
  uwsgi_temp_path $RUN/nginx/uwsgi;
  scgi_temp_path $RUN/nginx/scgi;
  client_max_body_size 16m;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream realtime {
$upstreams  }
  server {
    $listen
    location / {
      proxy_pass $SCHEME://realtime;
      $upstream_tls
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_read_timeout 3600s;
      proxy_next_upstream error timeout http_503;
    }
  }
}
" > "$RUN/nginx.conf"
nginx -c "$RUN/nginx.conf" -p "$RUN/nginx" </dev/null >/dev/null 2>&1

for _ in $(seq 1 200); do
  curl -fsS ${TLS:+--cacert "$TLS/ca.crt"} "$SCHEME://127.0.0.1:$BASE/readyz" >/dev/null 2>&1 && ready=1 && break
  sleep 0.1
done
if [ "${ready:-0}" != 1 ]; then echo "cluster-up: the load balancer did not become ready; see $RUN/*.log" >&2; exit 1; fi
echo "cluster up: $SCHEME://127.0.0.1:$BASE (nodes 127.0.0.1:$((BASE + 1))-$((BASE + NODES)), redis ${RT_REDIS:-single}: $REDIS_URL)"
echo "API key: $(cat "$RUN/api-key")"
[ "$SCHEME" = https ] && echo "CA certificate: $TLS/ca.crt"
true
echo "Inspect: REDIS_URL=$REDIS_URL bash ops/rt-inspect channels"
