// Realtime gateway browser client. Dependency-free ES module, served by every gateway node at
// /v1/realtime/client.js (types: /v1/realtime/client.d.ts).
//
//   import { RealtimeClient } from "/v1/realtime/client.js";
//   const client = new RealtimeClient({ getToken: async () => (await fetch("/my/token")).json() });
//   const chat = client.channel("chat:lobby");
//   chat.on("message", (m) => console.log(m.event, m.data));
//   await chat.enterPresence({ status: "here" });
//
// Browsers never hold an API key: `getToken` asks your backend, which mints a token with
// POST /v1/realtime/token. It may return the token string or the token response object
// (`{token, endpoint}`), whose endpoint is then used.

export class RealtimeError extends Error {
  constructor(code, message, retryAfterMs) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
    /** The server's hint for 42900, in milliseconds. */
    this.retryAfterMs = retryAfterMs;
  }
}

/** A fresh idempotency key for one logical publish. */
function newIdempotencyKey() {
  if (globalThis.crypto?.randomUUID) return "sdk-" + globalThis.crypto.randomUUID();
  return "sdk-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
}

/**
 * Runs `attempt` until it succeeds or fails with an error a retry cannot fix: retried on
 * 50300 (nothing published), 50400 (outcome unknown), 42900 (after the hint) and on a reply
 * that never came or a connection that was down (code 0); never on other errors. The caller
 * keeps the same idempotency key across attempts, so a retry is applied at most once.
 */
async function withRetries(attempt, { attempts = 5, baseDelayMs = 100, maxDelayMs = 2000 } = {}) {
  let delay = baseDelayMs;
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (e) {
      const code = e?.code ?? 0;
      if (i >= attempts || ![0, 50300, 50400, 42900].includes(code)) throw e;
      const wait = Math.max(code === 42900 ? e.retryAfterMs ?? 0 : 0, Math.random() * delay);
      await new Promise((r) => setTimeout(r, wait));
      delay = Math.min(delay * 2, maxDelayMs);
    }
  }
}

class Emitter {
  constructor() { this._handlers = new Map(); }
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) { this._handlers.get(event)?.delete(fn); }
  _emit(event, value) {
    for (const fn of [...(this._handlers.get(event) ?? [])]) {
      try { fn(value); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }
}

/** Connection states: "connecting", "connected", "disconnected" (will retry), "closed" (by you), "failed" (no retry). */
export class RealtimeClient extends Emitter {
  constructor(options = {}) {
    super();
    if (!options.token && !options.getToken) throw new TypeError("RealtimeClient needs token or getToken");
    this.options = {
      url: options.url ?? null,
      fallbackUrls: options.fallbackUrls ?? [],
      token: options.token ?? null,
      getToken: options.getToken ?? null,
      minRetryMs: options.minRetryMs ?? 500,
      maxRetryMs: options.maxRetryMs ?? 30000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10000,
      WebSocket: options.WebSocket ?? globalThis.WebSocket,
    };
    this.state = "disconnected";
    this.connectionId = null;
    this.clientId = null;
    this._channels = new Map();
    this._pending = new Map();
    this._ref = 0;
    this._attempt = 0;
    this._endpointIndex = 0;
    this._ws = null;
    this._timer = null;
    this._token = this.options.token;
    this._needFreshToken = !this._token;
    if (options.autoConnect !== false) this.connect();
  }

  /** The channel object for `name` (one per name and client). */
  channel(name) {
    let ch = this._channels.get(name);
    if (!ch) {
      ch = new RealtimeChannel(name, { client: this });
      this._channels.set(name, ch);
    }
    return ch;
  }

  connect() {
    if (this.state === "connecting" || this.state === "connected") return;
    clearTimeout(this._timer);
    this._open();
  }

  /** Closes for good: no reconnect. */
  close() {
    clearTimeout(this._timer);
    this._setState("closed");
    const ws = this._ws;
    this._ws = null;
    if (ws) try { ws.close(1000); } catch {}
    this._failPending(new RealtimeError(0, "connection closed"));
  }

  async _open() {
    this._setState("connecting");
    let url;
    try {
      if (this._needFreshToken || !this._token) await this._refreshToken();
      url = this._endpoint() + (this._endpoint().includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this._token);
    } catch (e) {
      this._emit("error", e);
      return this._retry(false);
    }
    if (this.state !== "connecting") return;
    const ws = new this.options.WebSocket(url);
    this._ws = ws;
    ws.onmessage = (ev) => { if (this._ws === ws) this._frame(ev.data); };
    ws.onclose = (ev) => { if (this._ws === ws) this._closed(ev.code, ev.reason); };
    ws.onerror = () => {};
  }

  // The primary endpoint, then each of `fallbackUrls` in turn after every lost connection.
  _endpoint() {
    const all = [this._primaryEndpoint(), ...this.options.fallbackUrls];
    return all[this._endpointIndex % all.length];
  }

  _primaryEndpoint() {
    if (this.options.url) return this.options.url;
    if (this._tokenEndpoint) return this._tokenEndpoint;
    const l = globalThis.location;
    if (!l) throw new TypeError("RealtimeClient needs url outside a browser page");
    return (l.protocol === "https:" ? "wss://" : "ws://") + l.host + "/v1/realtime/ws";
  }

  async _refreshToken() {
    if (!this.options.getToken) { this._needFreshToken = false; return this._token; }
    const got = await this.options.getToken();
    if (typeof got === "string") this._token = got;
    else { this._token = got.token; if (got.endpoint) this._tokenEndpoint = got.endpoint; }
    this._needFreshToken = false;
    return this._token;
  }

  _frame(text) {
    let f;
    try { f = JSON.parse(text); } catch { return; }
    if (f.ref !== undefined && f.ref !== null && this._pending.has(f.ref)) {
      const p = this._pending.get(f.ref);
      this._pending.delete(f.ref);
      clearTimeout(p.timer);
      if (f.type === "error") p.reject(new RealtimeError(f.code, f.message, f.retry_after_ms)); else p.resolve(f);
      return;
    }
    switch (f.type) {
      case "connected":
        this.connectionId = f.connection_id;
        this.clientId = f.client_id;
        this._attempt = 0;
        this._setState("connected");
        for (const ch of this._channels.values()) ch._connected();
        break;
      case "message":
        this._channels.get(f.channel)?._message(f);
        break;
      case "presence_event":
        this._channels.get(f.channel)?._emit("presence", f);
        break;
      case "unsubscribed":
        this._channels.get(f.channel)?._ended();
        break;
      case "subscribed":
        // Without a ref: the node found messages missing (trimmed before it could read them
        // back, or lost in a Redis failover); the epoch may be new.
        this._channels.get(f.channel)?._resynced(f);
        break;
      case "token_expiring":
        if (this.options.getToken) {
          this._refreshToken().then((token) => this.request("auth", { token })).catch((e) => this._emit("error", e));
        }
        break;
      case "error":
        this._emit("error", new RealtimeError(f.code, f.message));
        if (f.code === 40140 || f.code === 40141) this._needFreshToken = true;
        break;
    }
  }

  _closed(code, reason) {
    this._ws = null;
    this.connectionId = null;
    this._failPending(new RealtimeError(0, "connection lost"));
    if (this.state === "closed") return;
    if (code === 4003) {
      this._setState("failed", { code, reason });
      return;
    }
    if (code === 4001) this._needFreshToken = true;
    // 1012: the node is restarting; another node behind the balancer takes us at once.
    this._retry(code === 1012, { code, reason });
  }

  _retry(immediately, info) {
    this._setState("disconnected", info);
    this._endpointIndex++;
    const base = Math.min(this.options.maxRetryMs, this.options.minRetryMs * 2 ** this._attempt);
    const delay = immediately ? 0 : base / 2 + Math.random() * base / 2;
    this._attempt++;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => { if (this.state === "disconnected") this._open(); }, delay);
  }

  _setState(state, info) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state, ...(info ?? {}) });
  }

  _failPending(error) {
    for (const p of this._pending.values()) { clearTimeout(p.timer); p.reject(error); }
    this._pending.clear();
  }

  /** Sends an op and resolves with its reply (rejects with RealtimeError on an error reply). */
  request(op, fields = {}) {
    return new Promise((resolve, reject) => {
      if (!this._ws || this.state !== "connected") return reject(new RealtimeError(0, "not connected"));
      const ref = ++this._ref;
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new RealtimeError(0, op + " timed out"));
      }, this.options.requestTimeoutMs);
      this._pending.set(ref, { resolve, reject, timer });
      this._ws.send(JSON.stringify({ op, ref, ...fields }));
    });
  }

  /** Resolves once connected (at once if already). */
  ready() {
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const off = this.on("state", ({ state }) => {
        if (state === "connected") { off(); resolve(); }
        if (state === "failed" || state === "closed") { off(); reject(new RealtimeError(0, "connection " + state)); }
      });
    });
  }
}

/**
 * One channel. Events: "message" (each message), "presence" (enter/update/leave events),
 * "state" ({state: "subscribing"|"subscribed"|"unsubscribed", resumed?}), "resumed"
 * ({resumed: false} when messages were missed beyond history on a reconnect).
 * Standalone use opens a private connection, in either form:
 *   new RealtimeChannel({ channel: "orders:eu", token })      // or getToken, url, sinceId
 *   new RealtimeChannel("orders:eu", { getToken })
 * Each "message" event carries id, channel, event, data, client_id and timestamp.
 */
export class RealtimeChannel extends Emitter {
  constructor(name, options = {}) {
    super();
    if (name !== null && typeof name === "object") {
      options = name;
      name = options.channel;
    }
    if (typeof name !== "string" || name === "") throw new TypeError("RealtimeChannel needs a channel name");
    this.name = name;
    this._own = !options.client;
    this.client = options.client ?? new RealtimeClient(options);
    if (this._own) this.client._channels.set(name, this);
    this.lastId = options.sinceId ?? null;
    // The channel's epoch from the last "subscribed" (or options.epoch, stored with sinceId).
    this.epoch = options.epoch ?? null;
    this.state = "unsubscribed";
    this._wanted = false;
    this._presence = null;       // {data} while entered
    this._presenceVersion = 0;   // bumped by every enter/update
    this._presenceSent = null;   // {connectionId, version} last sent
  }

  on(event, fn) {
    const off = super.on(event, fn);
    if ((event === "message" || event === "presence") && !this._wanted) this.subscribe().catch((e) => this._emit("error", e));
    return off;
  }

  /** Subscribes (and again after every reconnect, from the last id received). */
  subscribe() {
    this._wanted = true;
    if (this.client.state !== "connected") return this.client.ready().then(() => this._subscribed);
    return this._resubscribe();
  }

  // A (re)connection: subscribe again from the last id, enter presence again.
  _connected() {
    this._resubscribe();
    if (this._presence) this._sendPresence(this._presenceVersion, "presence.enter").catch(() => {});
  }

  _resubscribe() {
    if (!this._wanted) return Promise.resolve();
    this._setState("subscribing");
    const since = this.lastId;
    const epoch = since && this.epoch ? { epoch: this.epoch } : {};
    this._subscribed = this.client.request("subscribe", { channel: this.name, ...(since ? { since_id: since } : {}), ...epoch })
      .then((r) => {
        this.epoch = r.epoch;
        this._setState("subscribed", { resumed: r.resumed });
        if (since && !r.resumed) this._emit("resumed", { resumed: false, since_id: since });
        return r;
      }, (e) => { this._setState("unsubscribed"); throw e; });
    return this._subscribed;
  }

  _message(m) {
    this.lastId = m.id;
    this._emit("message", m);
  }

  _resynced(f) {
    if (f.epoch !== undefined) this.epoch = f.epoch;
    this._emit("resumed", { resumed: false, since_id: this.lastId });
  }

  _ended() {
    this._wanted = false;
    this._setState("unsubscribed");
  }

  _setState(state, extra) {
    this.state = state;
    this._emit("state", { state, ...(extra ?? {}) });
  }

  async unsubscribe() {
    this._wanted = false;
    if (this.client.state === "connected") await this.client.request("unsubscribe", { channel: this.name });
    this._setState("unsubscribed");
  }

  /**
   * Publishes over the connection; resolves with {message_id, status}. Carries
   * `options.idempotencyKey` or a key of its own, and retries with it (see withRetries;
   * `options.retry` tunes attempts and delays), so a lost reply never doubles a message.
   */
  publish(event, data, options = {}) {
    const fields = { channel: this.name, event, data, idempotency_key: options.idempotencyKey ?? newIdempotencyKey() };
    // Each attempt waits for a connection first, so a retry after a lost one goes out once the
    // client has reconnected.
    return withRetries(() => this._whenConnected(() => this.client.request("publish", fields)), options.retry);
  }

  /** Enters presence (entered again after a reconnect). */
  enterPresence(data) { return this._setPresence(data, "presence.enter"); }

  updatePresence(data) { return this._setPresence(data, "presence.update"); }

  _setPresence(data, op) {
    this._presence = { data };
    const version = ++this._presenceVersion;
    return this._whenConnected(() => this._sendPresence(version, op));
  }

  // Sends unless this version already went out on this connection (the reconnect path always
  // sends the newest data), so a connection enters once.
  _sendPresence(version, op) {
    const id = this.client.connectionId;
    const sent = this._presenceSent;
    if (!this._presence || version !== this._presenceVersion) return Promise.resolve();
    if (sent && sent.connectionId === id && sent.version >= version) return Promise.resolve();
    this._presenceSent = { connectionId: id, version };
    return this.client.request(op, { channel: this.name, data: this._presence.data });
  }

  leavePresence() {
    this._presence = null;
    this._presenceSent = null;
    return this._whenConnected(() => this.client.request("presence.leave", { channel: this.name }));
  }

  /** Current members. */
  presence() {
    return this._whenConnected(() => this.client.request("presence.get", { channel: this.name })).then((r) => r.members);
  }

  /** A page of history: options limit, direction ("backwards"|"forwards"), since_id. */
  history(options = {}) {
    return this._whenConnected(() => this.client.request("history", { channel: this.name, ...options })).then((r) => r.messages);
  }

  _whenConnected(fn) {
    return this.client.state === "connected" ? fn() : this.client.ready().then(fn);
  }

  /** Leaves the channel; a standalone channel also closes its connection. */
  close() {
    this._wanted = false;
    if (this._own) this.client.close();
    else if (this.client.state === "connected") this.unsubscribe().catch(() => {});
  }
}
