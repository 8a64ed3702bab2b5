// The server-side client against a live node: the Voyant call shapes, typed errors, paging,
// retries that apply a publish exactly once, and the README's example run as written.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRealtimeClient, RealtimeApiError } from "../src/index.js";
import { KEY, startGateway, losingProxy } from "./node.js";

let node;
let client;
const unique = (prefix) => `${prefix}-${Math.random().toString(36).slice(2, 10)}`;

before(async () => {
  node = await startGateway();
  client = createRealtimeClient({ apiKey: KEY, url: node.url });
});
after(async () => { await node?.stop(); });

test("publish, publishBatch, history, presence and tokens take the Voyant shapes", async () => {
  const channel = unique("orders:eu");
  const sent = await client.realtime.publish(channel, { event: "order.created", data: { id: "o-1" } });
  assert.equal(sent.status, "published");
  const again = await client.realtime.publish(channel, { event: "order.created", data: { id: "o-1" }, idempotencyKey: "k-1" });
  const duplicate = await client.realtime.publish(channel, { event: "order.created", data: { id: "o-1" }, idempotencyKey: "k-1" });
  assert.equal(duplicate.status, "duplicate");
  assert.equal(duplicate.message_id, again.message_id);
  const results = await client.realtime.publishBatch({
    messages: [
      { channel, event: "order.updated", data: { n: 1 } },
      { channel: "bad name", event: "x", data: 0 },
      { channel, event: "order.updated", data: { n: 2 } },
    ],
  });
  assert.equal(results[0].status, "published");
  assert.equal(results[1].error.code, 40010);
  assert.equal(results[2].status, "published");
  const { messages } = await client.realtime.history(channel, { direction: "forwards" });
  assert.deepEqual(messages.map((m) => m.event), ["order.created", "order.created", "order.updated", "order.updated"]);
  assert.equal(messages[0].id, sent.message_id);
  assert.deepEqual(await client.realtime.presence.get(channel), []);
  const minted = await client.realtime.tokens.mint({ clientId: "picker-7", capabilities: { "orders:*": ["subscribe", "presence"] } });
  assert.equal(minted.client_id, "picker-7");
  assert.ok(minted.token && minted.endpoint.startsWith("ws://"));
  assert.deepEqual(minted.capabilities["orders:*"].sort(), ["presence", "subscribe"]);
});

test("history pages cover every message once, in order", async () => {
  const channel = unique("paged");
  for (let i = 0; i < 7; i++) await client.realtime.publish(channel, { event: "e", data: i });
  const seen = [];
  for await (const m of client.realtime.historyAll(channel, { pageSize: 3, direction: "forwards" })) seen.push(m.data);
  assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6]);
  const first = await client.realtime.history(channel, { limit: 3 });
  assert.equal(first.messages.length, 3);
  assert.ok(first.next_cursor);
});

test("channels and keys can be managed", async () => {
  const name = unique("room");
  const created = await client.realtime.channels.create({ name, type: "presence", historySize: 10 });
  assert.equal(created.name, name);
  assert.equal((await client.realtime.channels.get(name)).type, "presence");
  const listed = await client.realtime.channels.list({ limit: 1000 });
  assert.ok(listed.channels.some((c) => c.name === name));
  await client.realtime.channels.delete(name);
  const key = await client.realtime.keys.create({ name: unique("backend"), scopes: ["realtime:publish"] });
  const limited = createRealtimeClient({ apiKey: key.key, url: node.url });
  assert.equal((await limited.realtime.publish(unique("k"), { event: "e", data: 1 })).status, "published");
  await assert.rejects(limited.realtime.channels.list(), (e) => e instanceof RealtimeApiError && e.code === 40300 && e.status === 403);
  assert.ok((await client.realtime.keys.list()).some((k) => k.key_id === key.key_id));
  await client.realtime.keys.revoke(key.key_id);
  await assert.rejects(limited.realtime.publish(unique("k"), { event: "e", data: 1 }), (e) => e.code === 40100 && e.status === 401);
});

test("errors carry the contract's code and status, and are not retried", async () => {
  let calls = 0;
  const counting = createRealtimeClient({
    apiKey: KEY, url: node.url, fetch: (...args) => { calls++; return fetch(...args); },
  });
  await assert.rejects(counting.realtime.publish("bad name", { event: "e", data: 1 }), (e) => {
    assert.ok(e instanceof RealtimeApiError);
    assert.equal(e.code, 40010);
    assert.equal(e.status, 400);
    assert.equal(e.retryable, false);
    return true;
  });
  assert.equal(calls, 1);
  await assert.rejects(client.realtime.channels.get("bad name"), (e) => e.code === 40010 && e.status === 400);
});

test("a publish whose connection closes before the reply is applied exactly once", async () => {
  const channel = unique("lost");
  const proxy = await losingProxy(node.url, channel);
  try {
    const viaProxy = createRealtimeClient({ apiKey: KEY, url: proxy.url, retry: { baseDelayMs: 10 } });
    const sent = await viaProxy.realtime.publish(channel, { event: "e", data: { n: 1 } });
    assert.equal(proxy.state.lost, 1);
    assert.equal(sent.status, "duplicate");
    const { messages } = await client.realtime.history(channel);
    assert.deepEqual(messages.map((m) => m.id), [sent.message_id]);
  } finally {
    proxy.close();
  }
});

test("a publish batch retried after a lost reply doubles nothing", async () => {
  const channel = unique("lostbatch");
  const proxy = await losingProxy(node.url, channel);
  try {
    const viaProxy = createRealtimeClient({ apiKey: KEY, url: proxy.url, retry: { baseDelayMs: 10 } });
    const results = await viaProxy.realtime.publishBatch({
      messages: [1, 2, 3].map((n) => ({ channel, event: "e", data: n })),
    });
    assert.deepEqual(results.map((r) => r.status), ["duplicate", "duplicate", "duplicate"]);
    const { messages } = await client.realtime.history(channel, { direction: "forwards" });
    assert.deepEqual(messages.map((m) => m.data), [1, 2, 3]);
  } finally {
    proxy.close();
  }
});

test("the README's Node example runs as written", async () => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const readme = readFileSync(path.join(here, "../../../README.md"), "utf8");
  const section = readme.split("## Node server client")[1].split("\n## ")[0];
  const block = section.match(/```js\n([\s\S]*?)```/)[1];
  const code = block.replace('from "realtime-server-client"', `from ${JSON.stringify(pathToFileURL(path.join(here, "../src/index.js")).href)}`);
  const file = path.join(mkdtempSync(path.join(tmpdir(), "rt-readme-")), "example.mjs");
  writeFileSync(file, code);
  const output = await new Promise((resolve, reject) => {
    execFile(process.execPath, [file], { env: { ...process.env, REALTIME_URL: node.url, REALTIME_API_KEY: KEY } },
      (error, stdout, stderr) => (error ? reject(new Error(stderr || error.message)) : resolve(stdout)));
  });
  assert.match(output, /order\.created/);
});
