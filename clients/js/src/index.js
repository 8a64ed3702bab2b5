// Server-side client for the realtime gateway's REST API. Node 18+ (built-in fetch), no
// dependencies. Holds an API key: use it in backends, never in browsers (they get tokens).
//
//   import { createRealtimeClient } from "realtime-server-client";
//   const client = createRealtimeClient({ apiKey: process.env.REALTIME_API_KEY, url: "http://127.0.0.1:8080" });
//   await client.realtime.publish("orders:eu", { event: "order.created", data: { id: 1 } });

import { randomUUID } from "node:crypto";

/** A refusal from the gateway: the contract's `code`, the HTTP `status`, and for 42900 the hint. */
export class RealtimeApiError extends Error {
  constructor(code, message, status, retryAfterMs) {
    super(message);
    this.name = "RealtimeApiError";
    /** The contract's 5-digit code; 0 when no reply came (connection error or timeout). */
    this.code = code;
    this.status = status;
    /** Milliseconds to wait before retrying (42900), when the gateway said. */
    this.retryAfterMs = retryAfterMs;
  }

  /** Whether a retry with the same idempotency key may succeed. */
  get retryable() {
    return [0, 50300, 50400, 42900].includes(this.code);
  }
}

/** A fresh idempotency key for one logical publish. */
export function newIdempotencyKey() {
  return "sdk-" + randomUUID();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Creates a client. Options: `apiKey` (required), `url` (default REALTIME_URL or
 * http://127.0.0.1:8080), `timeoutMs` (per request, default 10000), `retry`
 * ({ attempts: 5, baseDelayMs: 100, maxDelayMs: 2000 }), `fetch` (default globalThis.fetch).
 */
export function createRealtimeClient(options = {}) {
  const apiKey = options.apiKey ?? process.env.REALTIME_API_KEY;
  if (!apiKey) throw new TypeError("createRealtimeClient needs apiKey");
  const base = (options.url ?? process.env.REALTIME_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
  const timeoutMs = options.timeoutMs ?? 10000;
  const retry = { attempts: 5, baseDelayMs: 100, maxDelayMs: 2000, ...(options.retry ?? {}) };
  const fetchImpl = options.fetch ?? globalThis.fetch;

  async function request(method, path, body) {
    let response;
    try {
      response = await fetchImpl(base + path, {
        method,
        headers: { authorization: "Bearer " + apiKey, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      throw Object.assign(new RealtimeApiError(0, "no reply: " + (e?.cause?.code ?? e?.message ?? e), 0), { cause: e });
    }
    const text = await response.text().catch((e) => {
      throw new RealtimeApiError(0, "reply lost: " + (e?.message ?? e), 0);
    });
    if (!response.ok) {
      let error;
      try { error = JSON.parse(text).error; } catch { error = undefined; }
      const retryAfter = response.headers.get("retry-after");
      throw new RealtimeApiError(
        error?.code ?? response.status * 100, error?.message ?? text, error?.status ?? response.status,
        retryAfter ? Number(retryAfter) * 1000 : undefined);
    }
    return text ? JSON.parse(text) : undefined;
  }

  // Retried on 50300 (nothing published), 50400 (outcome unknown), 42900 (after the hint) and
  // a reply that never came; never on any other error. The caller keeps one idempotency key
  // across attempts, so a retried publish is applied at most once.
  async function withRetries(attempt) {
    let delay = retry.baseDelayMs;
    for (let i = 1; ; i++) {
      try {
        return await attempt();
      } catch (e) {
        if (!(e instanceof RealtimeApiError) || !e.retryable || i >= retry.attempts) throw e;
        await sleep(Math.max(e.code === 42900 ? e.retryAfterMs ?? 0 : 0, Math.random() * delay));
        delay = Math.min(delay * 2, retry.maxDelayMs);
      }
    }
  }

  const enc = encodeURIComponent;
  const query = (params) => {
    const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null);
    return entries.length ? "?" + new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString() : "";
  };

  const historyPage = (channel, o = {}) => request("GET", `/v1/realtime/channels/${enc(channel)}/history` + query({
    limit: o.limit, direction: o.direction, since_id: o.sinceId, until_id: o.untilId, cursor: o.cursor,
  }));

  const realtime = {
    /** Publishes one message: { event, data, idempotencyKey? } -> { message_id, channel, timestamp, status }. */
    publish(channel, { event, data, idempotencyKey } = {}) {
      const body = { channel, event, data, idempotency_key: idempotencyKey ?? newIdempotencyKey() };
      return withRetries(() => request("POST", "/v1/realtime/publish", body));
    },

    /** Publishes in order: { messages: [{ channel, event, data, idempotencyKey? }] } -> one result each. */
    async publishBatch({ messages }) {
      const items = messages.map((m) => ({
        channel: m.channel, event: m.event, data: m.data, idempotency_key: m.idempotencyKey ?? m.idempotency_key ?? newIdempotencyKey(),
      }));
      const reply = await withRetries(() => request("POST", "/v1/realtime/publish/batch", { messages: items }));
      return reply.results;
    },

    /** One page: { limit, direction, sinceId, untilId, cursor } -> { messages, next_cursor? }. */
    history: historyPage,

    /** Every retained message, page after page. */
    async *historyAll(channel, { pageSize = 100, direction } = {}) {
      let page = await historyPage(channel, { limit: pageSize, direction });
      for (;;) {
        yield* page.messages;
        if (!page.next_cursor) return;
        page = await historyPage(channel, { limit: pageSize, cursor: page.next_cursor });
      }
    },

    presence: {
      /** The channel's members. */
      async get(channel, { groupBy } = {}) {
        return (await request("GET", `/v1/realtime/channels/${enc(channel)}/presence` + query({ group_by: groupBy }))).members;
      },
    },

    tokens: {
      /** Mints a client token: { clientId?, userId?, capabilities?, channels?, ttlSeconds? }. */
      mint({ clientId, userId, capabilities, channels, ttlSeconds } = {}) {
        return request("POST", "/v1/realtime/token", {
          client_id: clientId, user_id: userId, capabilities, channels, ttl_seconds: ttlSeconds,
        });
      },
    },

    channels: {
      create({ name, type, historySize, historyTtlSeconds }) {
        return request("POST", "/v1/realtime/channels", {
          name, type, history_size: historySize, history_ttl_seconds: historyTtlSeconds,
        });
      },
      get: (name) => request("GET", `/v1/realtime/channels/${enc(name)}`),
      list: ({ limit, cursor } = {}) => request("GET", "/v1/realtime/channels" + query({ limit, cursor })),
      delete: (name) => request("DELETE", `/v1/realtime/channels/${enc(name)}`),
    },

    keys: {
      create: ({ name, scopes }) => request("POST", "/v1/realtime/keys", { name, scopes }),
      list: async () => (await request("GET", "/v1/realtime/keys")).keys,
      revoke: (keyId) => request("DELETE", `/v1/realtime/keys/${enc(keyId)}`),
    },

    /** Any REST call: method, path, body (no retries). */
    request,
  };
  return { realtime };
}
