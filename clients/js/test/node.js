// Test harness: a real realtime-gateway process (memory engine, free port), and a TCP proxy
// that loses one reply.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const KEY = "js-test-key-0123456789abcdef";
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

function binary() {
  if (process.env.REALTIME_GATEWAY_BIN) return process.env.REALTIME_GATEWAY_BIN;
  for (const build of ["debug", "release"]) {
    const candidate = path.join(root, ".build", build, "realtime-gateway");
    if (existsSync(candidate)) return candidate;
  }
  throw new Error("no realtime-gateway binary: run `swift build` or set REALTIME_GATEWAY_BIN");
}

/** Starts a node; resolves with { url, stop() } once it prints its URL. */
export function startGateway() {
  const proc = spawn(binary(), [], {
    env: { PATH: process.env.PATH, REALTIME_PORT: "0", REALTIME_API_KEY: KEY, REALTIME_LOG_LEVEL: "warning" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill("SIGKILL"); reject(new Error("gateway did not start")); }, 30000);
    let out = "";
    proc.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        proc.stdout.resume();
        resolve({
          url: m[1],
          stop: () => new Promise((done) => { proc.once("exit", done); proc.kill("SIGTERM"); }),
        });
      }
    });
    proc.once("exit", (code) => reject(new Error("gateway exited with " + code)));
  });
}

/**
 * A proxy in front of `target` that lets the first request whose bytes contain `marker` reach
 * the node, then closes the client's connection before any byte of the answer comes back.
 */
export function losingProxy(target, marker) {
  const { hostname, port } = new URL(target);
  const state = { lost: 0 };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    let losing = false;
    client.on("data", (data) => {
      if (state.lost === 0 && data.includes(marker)) { state.lost = 1; losing = true; }
      upstream.write(data);
    });
    upstream.on("data", (data) => {
      if (losing) { client.destroy(); upstream.destroy(); return; }
      client.write(data);
    });
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    resolve({ url: `http://127.0.0.1:${server.address().port}`, state, close: () => server.close() });
  }));
}
