"""Hostile input against a running node (not part of the test command; docs/robustness.md,
"Exploratory runs"): mutated HTTP requests, handshakes and WebSocket frames, CONC connections
at a time for SECONDS, then checks that the node process lives, still publishes, and what its
resident memory did.

    REALTIME_API_KEY=k-0123456789abcdef0123456789abcdef .build/release/realtime-gateway --port 18111 &
    PORT=18111 KEY=k-0123456789abcdef0123456789abcdef .build/venv-clients/bin/python scripts/hostile.py <node pid> 120

SEED picks the mutations; the last 200 inputs are written to hostile-inputs.pkl if the node dies.
"""
import asyncio, os, random, time, struct, sys
import httpx
PORT = int(os.environ.get("PORT", "18111"))
# TLS=1: the node serves HTTPS/WSS (its certificate is not checked).
TLS = os.environ.get("TLS") == "1"
SSL = None
if TLS:
    import ssl
    SSL = ssl.create_default_context(); SSL.check_hostname = False; SSL.verify_mode = ssl.CERT_NONE
BASE = ("https" if TLS else "http") + f"://127.0.0.1:{PORT}"
KEY = os.environ.get("KEY", "chaoskey-0123456789abcdef0123456789abcdef")
rng = random.Random(int(os.environ.get("SEED", "7")))
VALID = [
    b"POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 48\r\n\r\n" + b'{"channel":"h","event":"e","data":{"a":[1,2,3]}}',
    b"POST /v1/realtime/publish/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"messages\":[{\"\r\n25\r\nchannel\":\"h\",\"event\":\"e\",\"data\":1}]}\r\n0\r\n\r\n",
    b"GET /v1/realtime/channels/h/history?limit=5 HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n\r\n",
    b"GET /v1/realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\nExpect: 100-continue\r\nContent-Length: 40\r\n\r\n" + b'{"channel":"h","event":"e","data":null}\n' + b"GET /v1/realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"HEAD /healthz HTTP/1.0\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET http://x/v1/realtime/channels HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n",
    b"GET /v1/realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=9; server_no_context_takeover\r\nContent-Length: 3\r\n\r\nabc",
]
def mutate(b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        i = rng.randrange(len(b)) if b else 0
        if r < 0.3 and b: b[i] = rng.randrange(256)
        elif r < 0.5: b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        elif r < 0.7 and b: del b[i:i + rng.randint(1, 20)]
        elif r < 0.85: b[i:i] = rng.choice([b"\r\n", b"\r\n\r\n", b"9999999999999999999", b"-1", b"\x00", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b"%", b"\xff\xfe"])
        else: b += b[: rng.randint(0, len(b))]
    return bytes(b)
def wsframe(op, payload, fin=True, rsv=0):
    mask = os.urandom(4); n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    head = struct.pack("!BB", b0, 0x80 | n) if n < 126 else struct.pack("!BBH", b0, 0x80 | 126, n) if n < 65536 else struct.pack("!BBQ", b0, 0xFF, n)
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
OPS = [b'{"op":"subscribe","channel":"h","since_id":"0-0"}', b'{"op":"publish","channel":"h","event":"e","data":1}', b'{"op":"presence.enter","channel":"h","data":{"x":1}}',
       b'{"op":"history","channel":"h","limit":1000}', b'{"op":"presence.get","channel":"h"}', b'{"op":"ping"}', b'{"op":"auth","token":"x"}', b'{"op":"unsubscribe","channel":"h"}']
async def one(token, stats):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", PORT, ssl=SSL), 5)
    except Exception:
        stats["connfail"] += 1; return
    try:
        kind = rng.random()
        if kind < 0.5:
            data = mutate(rng.choice(VALID)) * rng.randint(1, 3)
        else:
            req = VALID[3].replace(b"/v1/realtime/ws", b"/v1/realtime/ws?token=" + token.encode())
            frames = b""
            for _ in range(rng.randint(1, 30)):
                p = rng.choice(OPS)
                if rng.random() < 0.4: p = mutate(p)
                op = rng.choice([1, 1, 1, 1, 2, 0, 8, 9, 10, 3]) ; fin = rng.random() < 0.9; rsv = rng.choice([0, 0, 0, 0, 4, 2])
                frames += wsframe(op, p, fin, rsv)
            data = req + (mutate(frames) if rng.random() < 0.3 else frames)
        stats.setdefault('log', []).append(data); stats['log'] = stats['log'][-200:]
        w.write(data); await w.drain()
        if rng.random() < 0.3 and w.can_write_eof(): w.write_eof()
        try:
            await asyncio.wait_for(r.read(1 << 20), rng.choice([0.05, 0.5, 2]))
        except asyncio.TimeoutError:
            pass
        stats["ok"] += 1
    except Exception as e:
        stats[type(e).__name__] = stats.get(type(e).__name__, 0) + 1
    finally:
        w.transport.abort() if rng.random() < 0.5 else w.close()
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
async def main():
    pid = int(sys.argv[1]); seconds = float(sys.argv[2])
    async with httpx.AsyncClient(headers={"Authorization": "Bearer " + KEY}, verify=not TLS) as c:
        token = (await c.post(f"{BASE}/v1/realtime/token", json={"client_id": "h", "channels": ["*"]})).json()["token"]
    stats = {"ok": 0, "connfail": 0}
    print("rss before KiB", rss(pid))
    end = time.monotonic() + seconds; n = 0
    conc = int(os.environ.get("CONC", "40"))
    while time.monotonic() < end:
        await asyncio.gather(*(one(token, stats) for _ in range(conc))); n += conc
        try:
            os.kill(pid, 0)
        except OSError:
            import pickle; pickle.dump(stats['log'], open('hostile-inputs.pkl', 'wb')); print('DIED after', n); return
    print("connections", n, {k: v for k, v in stats.items() if k != "log"}, "rss after KiB", rss(pid))
    await asyncio.sleep(15)
    async with httpx.AsyncClient(headers={"Authorization": "Bearer " + KEY}, verify=not TLS) as c:
        r = await c.post(f"{BASE}/v1/realtime/publish", json={"channel": "h", "event": "e", "data": 1})
        print("still serving:", r.status_code, "rss settled KiB", rss(pid))
        m = (await c.get(f"{BASE}/metrics")).text
        print([l for l in m.splitlines() if l.startswith("realtime_connections") or "open" in l][:5])
asyncio.run(main())
