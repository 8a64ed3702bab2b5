"""Idle WebSocket memory, plain against TLS: opens N connections to a node (each authenticated
by its token in the URL and subscribed to one of 100 channels), holds them, and reads the
node's resident memory from /proc before and after. Prints one JSON line.

    python bench/tls_idle.py --pid PID --url ws://127.0.0.1:PORT --key KEY [--ca ca.crt] [-n 2000]
"""
import argparse
import asyncio
import json
import ssl
import urllib.request

from websockets.asyncio.client import connect


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def mint(base, key, context):
    body = json.dumps({"client_id": "idle", "capabilities": {"*": ["*"]}, "ttl_seconds": 3600}).encode()
    req = urllib.request.Request(base + "/v1/realtime/token", data=body, method="POST",
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=context) as r:
        return json.load(r)["token"]


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca")
    p.add_argument("-n", type=int, default=2000)
    a = p.parse_args()
    context = ssl.create_default_context(cafile=a.ca) if a.ca else None
    base = a.url.replace("wss://", "https://").replace("ws://", "http://")
    token = mint(base, a.key, context)
    await asyncio.sleep(1)
    before = rss_kib(a.pid)
    sockets = []
    for i in range(a.n):
        ws = await connect(f"{a.url}/v1/realtime/ws?token={token}", **({"ssl": context} if context else {}),
                           max_size=None, ping_interval=None)
        await ws.recv()  # connected
        await ws.send(json.dumps({"op": "subscribe", "ref": 1, "channel": f"idle-{i % 100}"}))
        await ws.recv()  # subscribed
        sockets.append(ws)
    await asyncio.sleep(3)
    after = rss_kib(a.pid)
    print(json.dumps({"connections": a.n, "tls": bool(context), "rss_before_kib": before, "rss_after_kib": after,
                      "kib_per_connection": round((after - before) / a.n, 2)}))
    for ws in sockets:
        await ws.close()


asyncio.run(main())
