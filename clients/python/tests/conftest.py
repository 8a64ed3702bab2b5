"""Starts a real realtime-gateway (memory engine, free port) for the tests."""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
KEY = "py-test-key-0123456789abcdef"


def gateway_binary():
    path = os.environ.get("REALTIME_GATEWAY_BIN")
    if path:
        return path
    for build in ("debug", "release"):
        candidate = os.path.join(ROOT, ".build", build, "realtime-gateway")
        if os.path.exists(candidate):
            return candidate
    pytest.fail("no realtime-gateway binary: run `swift build` first or set REALTIME_GATEWAY_BIN")


def start_gateway(port=0, **settings):
    """Starts a node (memory engine unless `REALTIME_REDIS_URL` is among `settings`) and waits
    for its banner; `proc.url` is its base URL."""
    env = {"PATH": os.environ.get("PATH", ""), "REALTIME_PORT": str(port), "REALTIME_API_KEY": KEY,
           "REALTIME_LOG_LEVEL": "warning", "REALTIME_SHUTDOWN_TIMEOUT_SECONDS": "2", **settings}
    proc = subprocess.Popen([gateway_binary()], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on (https?://\S+)", line)
        if m:
            proc.url = m.group(1)
            return proc
    proc.kill()
    pytest.fail("gateway did not start")


def stop(proc):
    """SIGTERM (the node drains: close 1012 to every client), then wait."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_redis():
    """A throwaway redis-server on a free port (no persistence); `proc.url` is its redis:// URL."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (scripts/setup.sh installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    proc.url = f"redis://127.0.0.1:{port}"
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("redis-server did not start")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SECRET = "client-cluster-secret-0123456789abcdefgh"


@pytest.fixture
def redis_cluster():
    """A real redis-server and two nodes on it, each on a port of its own so either can be
    restarted in place, as a load balancer's backends are."""
    redis = start_redis()
    nodes = {}

    def start(name, port):
        nodes[name] = {"port": port, "redis_url": redis.url,
                       "proc": start_gateway(port, REALTIME_REDIS_URL=redis.url, REALTIME_NODE_ID=name, REALTIME_TOKEN_SECRET=SECRET)}
        return nodes[name]

    start("node-a", free_port())
    start("node-b", free_port())
    yield nodes, start
    for node in nodes.values():
        stop(node["proc"])
    stop(redis)


@pytest.fixture(scope="session")
def gateway():
    proc = start_gateway()
    yield proc.url
    stop(proc)


@pytest.fixture(autouse=True)
def environment(gateway, monkeypatch):
    """The package's default client reads these, as a user's backend would."""
    monkeypatch.setenv("REALTIME_URL", gateway)
    monkeypatch.setenv("REALTIME_API_KEY", KEY)
    import realtime_client.client as c
    c._Default._client = None
    yield
    c._Default._client = None


class WebSocket:
    """A minimal WebSocket client (RFC 6455 text frames) so tests can hold a connection."""

    def __init__(self, url):
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def send(self, obj):
        payload = json.dumps(obj).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        n = len(payload)
        header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            payload = self._read(n)
            if b0 & 0x0F == 0x1:
                return json.loads(payload)

    def next(self, type_):
        while True:
            frame = self.recv()
            if frame.get("type") == type_:
                return frame

    def close(self):
        self.sock.close()


class LosingProxy:
    """A TCP proxy in front of a node that loses the reply of the first HTTP request carrying
    `marker` in its body: the request reaches the node, then the client's connection is closed
    before any byte of the answer comes back (a reply lost on the way). Everything else passes."""

    def __init__(self, target_url, marker):
        host, port = target_url.split("//", 1)[1].split(":")
        self.target = (host, int(port))
        self.marker = marker.encode()
        self.lost = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        upstream = socket.create_connection(self.target)
        losing = threading.Event()

        def forward_requests():
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    with self.lock:
                        if self.lost == 0 and self.marker in data:
                            self.lost = 1
                            losing.set()
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    upstream.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        threading.Thread(target=forward_requests, daemon=True).start()
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if losing.is_set():
                    break  # the node answered; the client never hears it
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def close(self):
        self.listener.close()
