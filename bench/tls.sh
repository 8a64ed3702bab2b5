#!/usr/bin/env bash
# TLS on the node against plain, on this machine (issue 16): full TLS handshakes per second
# (`openssl s_time -new`, 10 s, one client), resident memory per idle connection, WSS
# against WS (bench/tls_idle.py, N connections each subscribed), and fan-out over WSS against
# WS with realtime-bench (1,000 subscribers on one channel, HTTPS publisher, stepped rates).
# One release node on the memory engine per measurement; every process started here is
# stopped here, by PID.
#
#   bash bench/tls.sh [connections, default 2000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
ulimit -n 20000 2>/dev/null || true
swift build -c release --product realtime-gateway >/dev/null
swift build -c release --product realtime-bench >/dev/null
GATEWAY="$(swift build -c release --show-bin-path)/realtime-gateway"
BENCH="$(swift build -c release --show-bin-path)/realtime-bench"
RATES=${BENCH_TLS_RATES:-200,400,600,800}
venv=.build/venv-clients
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check websockets
RUN=$(mktemp -d /tmp/rt-tls-bench.XXXXXX)
KEY="bench-key-0123456789abcdef"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$RUN/ca.key" -subj "/CN=bench CA" -days 2 -out "$RUN/ca.crt" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -keyout "$RUN/server.key" -subj "/CN=localhost" -out "$RUN/server.csr" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$RUN/server.ext"
openssl x509 -req -in "$RUN/server.csr" -CA "$RUN/ca.crt" -CAkey "$RUN/ca.key" -CAcreateserial -days 2 -sha256 \
  -extfile "$RUN/server.ext" -out "$RUN/server.crt" >/dev/null 2>&1

start_node() {  # start_node PORT [tls] -> sets PID
  local extra=()
  [ "${2:-}" = tls ] && extra=(--tls-cert-file "$RUN/server.crt" --tls-key-file "$RUN/server.key")
  REALTIME_API_KEY=$KEY REALTIME_KEY_PUBLISH_RATE=100000000 REALTIME_LOG_LEVEL=error "$GATEWAY" --port "$1" --max-connections 20000 "${extra[@]}" \
    </dev/null >"$RUN/node-$1.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$RUN/node-$1.log" && return; sleep 0.1; done
  echo "node did not start" >&2; exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port=$(free_port); start_node "$port" tls
echo "== TLS handshakes (openssl s_time -new, 10 s)"
openssl s_time -connect "127.0.0.1:$port" -new -time 10 -CAfile "$RUN/ca.crt" 2>/dev/null | grep -E "connections in|connections/user" || true
echo "== idle WSS ($N connections)"
"$venv/bin/python" bench/tls_idle.py --pid "$PID" --url "wss://127.0.0.1:$port" --key "$KEY" --ca "$RUN/ca.crt" -n "$N"
kill "$PID"; wait "$PID" 2>/dev/null || true

port=$(free_port); start_node "$port" tls
echo "== fan-out over WSS (1000 subscribers, HTTPS publisher)"
"$BENCH" fanout --ws-url "wss://127.0.0.1:$port/v1/realtime/ws" --publish-url "https://127.0.0.1:$port/v1/realtime/publish" \
  --tls-ca-file "$RUN/ca.crt" --key "$KEY" --subscribers 1000 --rates "$RATES" --seconds 5 --connections 16 --threads 2 --label wss 2>&1 \
  | grep -E "rate=" || true
kill "$PID"; wait "$PID" 2>/dev/null || true

port=$(free_port); start_node "$port"
echo "== fan-out over WS (1000 subscribers, HTTP publisher)"
"$BENCH" fanout --ws-url "ws://127.0.0.1:$port/v1/realtime/ws" --publish-url "http://127.0.0.1:$port/v1/realtime/publish" \
  --key "$KEY" --subscribers 1000 --rates "$RATES" --seconds 5 --connections 16 --threads 2 --label ws 2>&1 | grep -E "rate=" || true
kill "$PID"; wait "$PID" 2>/dev/null || true

port=$(free_port); start_node "$port"
echo "== idle WS ($N connections)"
"$venv/bin/python" bench/tls_idle.py --pid "$PID" --url "ws://127.0.0.1:$port" --key "$KEY" -n "$N"
kill "$PID"; wait "$PID" 2>/dev/null || true
rm -rf "$RUN"
