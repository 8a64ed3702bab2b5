"""Exploratory chaos run (not part of the test command; docs/robustness.md, "Exploratory runs").

Two gateway nodes (the release binary) on one durable redis-server, four REST and two WebSocket
publishers that retry with idempotency keys, 16 raw WebSocket subscribers that resume with since_id and epoch,
and a random fault every 4-10 s: Redis frozen, killed and restarted (WIPE=1: also restarted
empty), a node killed or frozen, client sockets cut, Redis killing the nodes' connections.
Checks at the end: every acknowledged publish exactly once in history, nothing applied twice,
every subscriber in order, without duplicates, gap-free except across a `resumed: false`.

    swift build -c release && SETUP_GROUPS=clients bash scripts/test.sh   # or any venv with httpx, websockets
    .build/venv-clients/bin/python scripts/chaos.py        # DURATION=150 SEED=1 WIPE=0 GW=...

Ports 16399 (Redis) and 18101-18102 (nodes) on loopback; every process it starts is ended by
its PID; exit status 1 when a check failed.
"""
import asyncio, json, os, random, sys, time, itertools
import httpx, websockets

from chaos_cluster import KEY, ChaosCluster, ev

PORTS = [18101, 18102]
DURATION = float(os.environ.get("DURATION", "150"))
SEED = int(os.environ.get("SEED", "1"))
WIPE = os.environ.get("WIPE") == "1"
rng = random.Random(SEED)
CHANNELS = [f"chaos-{i}" for i in range(4)]
procs = ChaosCluster("chaos", 16399, PORTS, {
    "REALTIME_HEARTBEAT_SECONDS": "5", "REALTIME_CONNECTION_PUBLISH_RATE": "1000", "REALTIME_KEY_PUBLISH_RATE": "100000",
    "REALTIME_PRESENCE_TTL_SECONDS": "5", "REALTIME_PRESENCE_HEARTBEAT_SECONDS": "1",
})
acked = {}      # seq -> (channel, message_id)
gaveup = {}     # seq -> channel
acked_at = {}
wipes = []
statuses = {}
stop = asyncio.Event()


async def ready(port, timeout=60):
    end = time.monotonic() + timeout
    async with httpx.AsyncClient() as c:
        while time.monotonic() < end:
            try:
                r = await c.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if r.status_code == 200:
                    return True
            except Exception:
                pass
            await asyncio.sleep(0.2)
    return False


async def publisher(pid, counter):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
        while not stop.is_set():
            seq = next(counter)
            ch = rng.choice(CHANNELS)
            body = {"channel": ch, "event": "e", "data": {"seq": seq}, "idempotency_key": f"k{seq}"}
            end = time.monotonic() + 90
            delay = 0.05
            while True:
                port = rng.choice(PORTS)
                try:
                    r = await c.post(f"http://127.0.0.1:{port}/v1/realtime/publish", json=body, timeout=5)
                    j = r.json()
                    if r.status_code in (200, 201):
                        acked[seq] = (ch, j["message_id"])
                        acked_at[seq] = time.monotonic()
                        statuses[j["status"]] = statuses.get(j["status"], 0) + 1
                        break
                    code = j.get("error", {}).get("code")
                    if code not in (50300, 50400, 42900):
                        ev("publish refused", seq, r.status_code, j)
                        gaveup[seq] = ch
                        break
                    statuses[code] = statuses.get(code, 0) + 1
                except Exception as e:
                    statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
                if time.monotonic() > end:
                    gaveup[seq] = ch
                    ev("publish gave up", seq)
                    break
                await asyncio.sleep(delay * (0.5 + rng.random()))
                delay = min(delay * 2, 1.0)
            await asyncio.sleep(rng.random() * 0.03)


async def ws_publisher(pid, counter, token):
    """Publishes over WebSocket: one op at a time, acked or retried with the same key on a new
    connection (to either node) after an error that allows it or a lost connection."""
    seq = None
    while not stop.is_set() or seq is not None:
        port = rng.choice(PORTS)
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime/ws?token={token}", open_timeout=5,
                                          ping_interval=None) as ws:
                await asyncio.wait_for(ws.recv(), 5)
                while True:
                    if seq is None:
                        if stop.is_set():
                            return
                        seq = next(counter)
                        ch = rng.choice(CHANNELS)
                        first_try = time.monotonic()
                    await ws.send(json.dumps({"op": "publish", "ref": seq, "channel": ch, "event": "w",
                                              "data": {"seq": seq}, "idempotency_key": f"k{seq}"}))
                    while True:
                        f = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if f.get("ref") == seq:
                            break
                    if f.get("type") == "ack":
                        acked[seq] = (ch, f["message_id"])
                        acked_at[seq] = time.monotonic()
                        statuses["ws " + f["status"]] = statuses.get("ws " + f["status"], 0) + 1
                        seq = None
                        await asyncio.sleep(rng.random() * 0.03)
                    elif f.get("code") in (50300, 50400, 42900) and time.monotonic() - first_try < 90:
                        statuses[f"ws {f['code']}"] = statuses.get(f"ws {f['code']}", 0) + 1
                        await asyncio.sleep(0.1 + rng.random() * 0.3)
                    else:
                        ev("ws publish refused", seq, f)
                        gaveup[seq] = ch
                        seq = None
        except Exception as e:
            statuses["ws " + type(e).__name__] = statuses.get("ws " + type(e).__name__, 0) + 1
            await asyncio.sleep(0.1 + rng.random() * 0.3)


class Sub:
    def __init__(self, n, chans):
        self.n = n
        self.chans = chans
        self.last = {c: None for c in chans}
        self.epoch = {c: None for c in chans}
        self.seen = {c: [] for c in chans}   # list of ("msg", id, seq) | ("reset", reason)
        self.sessions = 0
        self.ws = None

    async def run(self, token):
        while not stop.is_set() or not self.caught_up():
            port = rng.choice(PORTS)
            try:
                async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime/ws?token={token}", open_timeout=5,
                                              ping_interval=None, max_size=None) as ws:
                    self.ws = ws
                    self.sessions += 1
                    first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if first.get("type") != "connected":
                        raise RuntimeError(f"first frame {first}")
                    for c in self.chans:
                        op = {"op": "subscribe", "channel": c, "ref": c}
                        if self.last[c]:
                            op["since_id"] = self.last[c]
                            if self.epoch[c]:
                                op["epoch"] = self.epoch[c]
                        await ws.send(json.dumps(op))
                    async for raw in ws:
                        f = json.loads(raw)
                        t = f.get("type")
                        if t == "subscribed":
                            c = f["channel"]
                            self.epoch[c] = f.get("epoch")
                            if not f.get("resumed"):
                                self.seen[c].append(("reset", f"resumed false ref={f.get('ref')} s{self.sessions}"))
                        elif t == "message":
                            c = f["channel"]
                            self.seen[c].append(("msg", f["id"], f["data"]["seq"] if isinstance(f.get("data"), dict) else None))
                            self.last[c] = f["id"]
                            if stop.is_set() and self.caught_up():
                                return
                        elif t == "error":
                            ev("sub", self.n, "error", f)
                            if f.get("ref") in self.chans and f.get("code") != 40900:
                                await asyncio.sleep(0.5)
                                raise RuntimeError(f"subscribe error {f}")
            except Exception:
                pass
            self.ws = None
            await asyncio.sleep(0.1 + rng.random() * 0.5)

    def caught_up(self):
        return getattr(self, "targets", None) is not None and all(self.last[c] == self.targets.get(c) for c in self.chans)


async def kill_clients(subs, frac):
    for s in subs:
        if s.ws is not None and rng.random() < frac:
            try:
                s.ws.transport.abort()
            except Exception:
                pass


async def chaos(subs):
    faults = ["redis-stop", "redis-kill", "node-kill", "node-stop", "clients", "pubsub-kill", "normal-kill"]
    if WIPE:
        faults.append("redis-wipe")
    end = time.monotonic() + DURATION
    while time.monotonic() < end:
        await asyncio.sleep(4 + rng.random() * 6)
        f = rng.choice(faults)
        ev("FAULT", f)
        if f == "redis-stop":
            await procs.freeze_redis(1 + rng.random() * 5)
        elif f in ("redis-kill", "redis-wipe"):
            if f == "redis-wipe":
                wipes.append(time.monotonic())
            await procs.restart_redis(rng, wipe=f == "redis-wipe")
        elif f == "node-kill":
            await procs.kill_node(rng)
        elif f == "node-stop":
            await procs.freeze_node(rng, 5)
        elif f == "clients":
            await kill_clients(subs, 0.4)
        elif f == "pubsub-kill":
            ev(procs.cli("CLIENT", "KILL", "TYPE", "pubsub"))
        elif f == "normal-kill":
            ev(procs.cli("CLIENT", "KILL", "TYPE", "normal"))
        procs.revive()
    ev("chaos over")


async def history(c, ch):
    out, cursor = [], None
    while True:
        params = {"limit": 1000, "direction": "forwards"}
        if cursor:
            params = {"limit": 1000, "cursor": cursor}
        r = await c.get(f"http://127.0.0.1:{PORTS[0]}/v1/realtime/channels/{ch}/history", params=params, timeout=10)
        j = r.json()
        out += j["messages"]
        cursor = j.get("next_cursor")
        if not cursor:
            return out


async def main():
    procs.start()
    try:
        assert await ready(PORTS[0]) and await ready(PORTS[1]), "nodes not ready"
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
            for ch in CHANNELS:
                r = await c.post(f"http://127.0.0.1:{PORTS[0]}/v1/realtime/channels", json={"name": ch, "history_size": 100000})
                assert r.status_code in (200, 201), r.text
            r = await c.post(f"http://127.0.0.1:{PORTS[0]}/v1/realtime/token", json={"client_id": "chaos", "channels": ["*"], "ttl_seconds": 3600})
            assert r.status_code == 201, r.text
            token = r.json()["token"]
        subs = [Sub(n, rng.sample(CHANNELS, 2)) for n in range(16)]
        sub_tasks = [asyncio.create_task(s.run(token)) for s in subs]
        await asyncio.sleep(2)
        counter = itertools.count(1)
        pubs = [asyncio.create_task(publisher(p, counter)) for p in range(4)]
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
            r = await c.post(f"http://127.0.0.1:{PORTS[0]}/v1/realtime/token",
                             json={"client_id": "chaos-pub", "capabilities": {"*": ["*"]}, "ttl_seconds": 3600})
            assert r.status_code == 201, r.text
            pub_token = r.json()["token"]
        pubs += [asyncio.create_task(ws_publisher(p, counter, pub_token)) for p in range(2)]
        await chaos(subs)
        procs.revive()
        stop.set()
        await asyncio.gather(*pubs)
        ev("publishers done; acked", len(acked), "gave up", len(gaveup), statuses)
        await asyncio.sleep(2)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
            hist = {ch: await history(c, ch) for ch in CHANNELS}
        for s in subs:
            s.targets = {c: (hist[c][-1]["id"] if hist[c] else None) for c in s.chans}
        end = time.monotonic() + 90
        while time.monotonic() < end and not all(s.caught_up() for s in subs):
            await asyncio.sleep(0.5)
        if not all(s.caught_up() for s in subs):
            ev("SUBSCRIBERS DID NOT CATCH UP")
        for t in sub_tasks:
            t.cancel()
        problems = verify(hist, subs)
        import re, collections
        kinds = collections.Counter(re.sub(r"[0-9]+", "N", p) for p in problems)
        for k, n in kinds.most_common(20):
            print("KIND", n, k)
        for p in problems[:40]:
            print("PROBLEM", p)
        print("problems:", len(problems), "acked:", len(acked), "history:", {c: len(h) for c, h in hist.items()},
              "sessions:", sum(s.sessions for s in subs))
        return 1 if problems else 0
    finally:
        procs.stop_all()


def key(mid):
    a, b = mid.split("-")
    return (int(a), int(b))


def verify(hist, subs):
    problems = []
    index = {}
    for ch, msgs in hist.items():
        seqs = [m["data"]["seq"] for m in msgs]
        if len(set(seqs)) != len(seqs):
            dup = [s for s in set(seqs) if seqs.count(s) > 1]
            problems.append(f"{ch}: applied twice: {dup[:10]}")
        ids = [m["id"] for m in msgs]
        index[ch] = {i: n for n, i in enumerate(ids)}
    for seq, (ch, mid) in acked.items():
        m = next((m for m in hist[ch] if m["id"] == mid), None)
        if m is None and wipes and acked_at[seq] < wipes[-1]:
            continue
        if m is None and WIPE and (not hist[ch] or key(mid) < key(hist[ch][0]["id"])):
            continue
        if m is None:
            problems.append(f"acked {seq} {mid} missing from {ch} history")
        elif m["data"]["seq"] != seq:
            problems.append(f"acked {seq} {mid} is seq {m['data']['seq']} in history")
    for s in subs:
        for ch in s.chans:
            prev = None
            prev_id = None
            got = set()
            for e in s.seen[ch]:
                if e[0] == "reset":
                    prev = None
                    prev_id = None
                    continue
                _, mid, seq = e
                if mid in got:
                    problems.append(f"sub {s.n} {ch}: duplicate {mid}")
                got.add(mid)
                if prev_id is not None and key(mid) <= key(prev_id):
                    problems.append(f"sub {s.n} {ch}: {mid} after {prev_id}: out of order")
                prev_id = mid
                i = index[ch].get(mid)
                if i is None:
                    if not WIPE:
                        problems.append(f"sub {s.n} {ch}: {mid} not in history")
                    prev = None
                    continue
                if prev is not None and i != prev + 1:
                    problems.append(f"sub {s.n} {ch}: after #{prev} got #{i} ({mid}) without resumed:false")
                prev = i
            if s.last[ch] != s.targets[ch]:
                problems.append(f"sub {s.n} {ch}: ends at {s.last[ch]}, history ends {s.targets[ch]}")
    return problems


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
