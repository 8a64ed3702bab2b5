"""Exploratory presence chaos run (not part of the test command; docs/robustness.md).

Two gateway nodes (the release binary) on one redis-server, 12 members that each hold one
connection with presence on two channels (reconnecting to either node and entering again
whenever their connection ends), two watchers subscribed to every channel, and a random fault
every 4-8 s: a node killed or frozen, Redis frozen past the presence TTL, Redis killing the
nodes' connections, member sockets cut. Checks at the end, once quiet: each channel's presence
is exactly the members' live connections; each watcher's events, replayed per connection,
end in that same set (every enter has at most one leave, nothing after a leave).

    .build/venv-clients/bin/python scripts/presence_chaos.py     # DURATION=120 SEED=1 GW=...
"""
import asyncio, json, os, random, sys, time
import httpx, websockets
from chaos_cluster import KEY, ChaosCluster, ev

PORTS = [18103, 18104]
DURATION = float(os.environ.get("DURATION", "120"))
rng = random.Random(int(os.environ.get("SEED", "1")))
CHANNELS = ["room-a", "room-b", "room-c"]
TTL = 5
stop = asyncio.Event()
procs = ChaosCluster("presence-chaos", 16398, PORTS, {
    "REALTIME_PRESENCE_TTL_SECONDS": str(TTL), "REALTIME_PRESENCE_HEARTBEAT_SECONDS": "1", "REALTIME_HEARTBEAT_SECONDS": "5",
})


class Member:
    def __init__(self, n):
        self.n = n
        self.chans = rng.sample(CHANNELS, 2)
        self.connection = None   # connection_id while entered on every channel
        self.ws = None

    async def run(self, token):
        while not stop.is_set():
            try:
                async with websockets.connect(f"ws://127.0.0.1:{rng.choice(PORTS)}/v1/realtime/ws?token={token}",
                                              open_timeout=5, ping_interval=None) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    entered = 0
                    for c in self.chans:
                        await ws.send(json.dumps({"op": "presence.enter", "channel": c, "data": {"m": self.n}, "ref": c}))
                    self.ws = ws
                    async for raw in ws:
                        f = json.loads(raw)
                        if f.get("type") == "ack" and f.get("ref") in self.chans:
                            entered += 1
                            if entered == len(self.chans):
                                self.connection = hello["connection_id"]
                        elif f.get("type") == "error":
                            raise RuntimeError(f)
            except Exception:
                pass
            self.connection = None
            self.ws = None
            await asyncio.sleep(0.2 + rng.random() * 0.5)


class Watcher:
    def __init__(self):
        self.events = {c: [] for c in CHANNELS}   # (action, connection_id)

    async def run(self, token):
        while not stop.is_set() or True:
            try:
                async with websockets.connect(f"ws://127.0.0.1:{rng.choice(PORTS)}/v1/realtime/ws?token={token}",
                                              open_timeout=5, ping_interval=None) as ws:
                    await asyncio.wait_for(ws.recv(), 5)
                    for c in CHANNELS:
                        await ws.send(json.dumps({"op": "subscribe", "channel": c}))
                    # A new session starts from a snapshot: the watcher reads presence afresh.
                    for c in CHANNELS:
                        await ws.send(json.dumps({"op": "presence.get", "channel": c, "ref": "get-" + c}))
                    async for raw in ws:
                        f = json.loads(raw)
                        if f.get("type") == "presence":
                            self.events[f["channel"]].append(("snapshot", sorted(m["connection_id"] for m in f["members"])))
                        elif f.get("type") == "presence_event":
                            self.events[f["channel"]].append((f["action"], f["member"]["connection_id"]))
            except asyncio.CancelledError:
                return
            except Exception:
                pass
            await asyncio.sleep(0.3)

    def final(self, channel):
        """The set the events lead to, and the anomalies on the way (after the last snapshot)."""
        live, problems = None, []
        for action, x in self.events[channel]:
            if action == "snapshot":
                live, left = set(x), set()
                continue
            if live is None:
                continue
            if action == "enter":
                if x in left:
                    problems.append(f"{channel}: enter of {x} after its leave")
                live.add(x)
            elif action == "leave":
                if x not in live:
                    problems.append(f"{channel}: leave of {x} that was not present")
                live.discard(x)
                left.add(x)
            elif action == "update" and x not in live:
                problems.append(f"{channel}: update of {x} that was not present")
        return live, problems


async def chaos(members):
    faults = ["node-kill", "node-stop", "redis-stop-long", "redis-stop", "pubsub-kill", "normal-kill", "members"]
    end = time.monotonic() + DURATION
    while time.monotonic() < end:
        await asyncio.sleep(4 + rng.random() * 4)
        f = rng.choice(faults)
        ev("FAULT", f)
        if f == "node-kill":
            await procs.kill_node(rng)
        elif f == "node-stop":
            await procs.freeze_node(rng, 4)
        elif f.startswith("redis-stop"):
            await procs.freeze_redis(TTL + 2 if f == "redis-stop-long" else 1 + rng.random() * 2)
        elif f == "pubsub-kill":
            procs.cli("CLIENT", "KILL", "TYPE", "pubsub")
        elif f == "normal-kill":
            procs.cli("CLIENT", "KILL", "TYPE", "normal")
        elif f == "members":
            for m in members:
                if m.ws is not None and rng.random() < 0.4:
                    m.ws.transport.abort()
        procs.revive()


async def main():
    procs.start()
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
            for port in PORTS:
                for _ in range(100):
                    try:
                        if (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            break
                    except Exception:
                        pass
                    await asyncio.sleep(0.2)
            async def token(client):
                r = await c.post(f"http://127.0.0.1:{PORTS[0]}/v1/realtime/token", json={"client_id": client, "channels": ["*"], "ttl_seconds": 3600})
                return r.json()["token"]
            members = [Member(n) for n in range(12)]
            watchers = [Watcher() for _ in range(2)]
            tasks = [asyncio.create_task(m.run(await token(f"m{m.n}"))) for m in members]
            wtasks = [asyncio.create_task(w.run(await token("watcher"))) for w in watchers]
            await chaos(members)
            procs.revive()
            # Quiet: every member back in, every dead connection swept (TTL plus a sweep).
            end = time.monotonic() + 60
            while time.monotonic() < end and not all(m.connection for m in members):
                await asyncio.sleep(0.5)
            await asyncio.sleep(TTL + 5)
            problems = []
            for ch in CHANNELS:
                want = sorted(m.connection for m in members if ch in m.chans and m.connection)
                got = sorted(x["connection_id"] for x in (await c.get(f"http://127.0.0.1:{PORTS[1]}/v1/realtime/channels/{ch}/presence")).json()["members"])
                if want != got:
                    problems.append(f"{ch}: presence {got} but live members {want}")
                for w in watchers:
                    live, anomalies = w.final(ch)
                    problems += anomalies
                    if live is not None and sorted(live) != want:
                        problems.append(f"{ch}: a watcher's events end in {sorted(live)}, live members {want}")
        stop.set()
        for t in tasks + wtasks:
            t.cancel()
        for p in problems:
            print("PROBLEM", p)
        if os.environ.get("SHOW"):
            for c in CHANNELS:
                print(c, watchers[0].events[c])
        print("problems:", len(problems), "events:", sum(len(w.events[c]) for w in watchers for c in CHANNELS))
        return 1 if problems else 0
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
