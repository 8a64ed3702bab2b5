"""Two gateway nodes on one durable redis-server, on loopback, for the exploratory chaos tools
(`chaos.py`, `presence_chaos.py`): started, broken and ended by PID, never anything else."""
import asyncio, os, shutil, signal, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "chaoskey-0123456789abcdef0123456789abcdef"
SECRET = "chaos-secret-0123456789abcdef0123456789abcdef"


def ev(*a):
    print(f"{time.monotonic():.3f}", *a, flush=True)


class ChaosCluster:
    def __init__(self, name, redis_port, node_ports, node_env):
        self.gw = os.environ.get("GW", ROOT + "/.build/release/realtime-gateway")
        self.dir = tempfile.mkdtemp(prefix=f"rt-{name}-")
        self.name, self.redis_port, self.ports, self.node_env = name, redis_port, node_ports, node_env
        self.redis = None
        self.nodes = [None] * len(node_ports)
        print("logs and Redis data in", self.dir)

    def start(self):
        self.start_redis()
        time.sleep(0.5)
        for i in range(len(self.ports)):
            self.start_node(i)

    def start_redis(self):
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", self.dir,
                                       "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", self.dir + "/redis.log"])
        ev("redis started", self.redis.pid)

    def start_node(self, i):
        env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
        env.update({"REALTIME_PORT": str(self.ports[i]), "REALTIME_NODE_ID": f"{self.name}-{i}", "REALTIME_API_KEY": KEY,
                    "REALTIME_TOKEN_SECRET": SECRET, "REALTIME_LOG_LEVEL": "info",
                    "REALTIME_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}?command_timeout_ms=1000&connect_timeout_ms=1000"})
        env.update(self.node_env)
        out = open(f"{self.dir}/node{i}.log", "a")
        self.nodes[i] = subprocess.Popen([self.gw], env=env, stdout=out, stderr=out)
        ev("node started", i, self.nodes[i].pid)

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.redis_port)] + list(args), capture_output=True, text=True, timeout=10).stdout.strip()

    async def kill_node(self, rng):
        i = rng.randrange(len(self.nodes))
        self.nodes[i].kill(); self.nodes[i].wait()
        await asyncio.sleep(0.5 + rng.random() * 2)
        self.start_node(i)

    async def freeze_node(self, rng, longest):
        i = rng.randrange(len(self.nodes))
        self.nodes[i].send_signal(signal.SIGSTOP)
        await asyncio.sleep(1 + rng.random() * (longest - 1))
        self.nodes[i].send_signal(signal.SIGCONT)

    async def freeze_redis(self, seconds):
        self.redis.send_signal(signal.SIGSTOP)
        await asyncio.sleep(seconds)
        self.redis.send_signal(signal.SIGCONT)

    async def restart_redis(self, rng, wipe=False):
        self.redis.kill(); self.redis.wait()
        if wipe:
            shutil.rmtree(self.dir + "/appendonlydir", ignore_errors=True)
        await asyncio.sleep(0.5 + rng.random() * 3)
        self.start_redis()

    def revive(self):
        """Restarts any node that died by itself (a crash: reported)."""
        for i, n in enumerate(self.nodes):
            if n.poll() is not None:
                ev("NODE DIED", i, n.returncode)
                self.start_node(i)

    def stop_all(self):
        for p in self.nodes + [self.redis]:
            if p and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
