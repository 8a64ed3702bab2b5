// Types for /v1/realtime/client.js.

export class RealtimeError extends Error {
  /** The contract's 5-digit error code (0 for client-side failures such as a lost connection). */
  code: number;
  /** The server's retry hint for 42900, in milliseconds. */
  retryAfterMs?: number;
}

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed" | "failed";

export interface TokenResponse {
  token: string;
  endpoint?: string;
  expires_at?: string;
}

export interface ClientOptions {
  /** WebSocket endpoint; default: the token response's endpoint, else this page's host + /v1/realtime/ws. */
  url?: string;
  /** Further nodes to try, in turn, whenever a connection is lost (without a load balancer). */
  fallbackUrls?: string[];
  /** A fixed token (no refresh). */
  token?: string;
  /** Called before connecting, before expiry (token_expiring) and after a 4001 close. */
  getToken?: () => Promise<string | TokenResponse>;
  minRetryMs?: number;
  maxRetryMs?: number;
  requestTimeoutMs?: number;
  /** Default true. */
  autoConnect?: boolean;
  WebSocket?: typeof WebSocket;
}

export interface Message {
  type: "message";
  channel: string;
  id: string;
  event: string;
  data: unknown;
  client_id?: string;
  timestamp: string;
}

export interface PresenceMember {
  client_id: string;
  user_id?: string;
  connection_id: string;
  data?: unknown;
  entered_at: string;
  updated_at: string;
}

export interface PresenceEvent {
  type: "presence_event";
  channel: string;
  action: "enter" | "update" | "leave";
  member: PresenceMember;
}

export interface StateChange {
  state: ConnectionState;
  code?: number;
  reason?: string;
}

export interface ChannelStateChange {
  state: "subscribing" | "subscribed" | "unsubscribed";
  resumed?: boolean;
}

declare class Emitter<Events> {
  on<K extends keyof Events>(event: K, fn: (value: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, fn: (value: Events[K]) => void): void;
}

export class RealtimeClient extends Emitter<{ state: StateChange; error: RealtimeError }> {
  constructor(options: ClientOptions);
  readonly state: ConnectionState;
  readonly connectionId: string | null;
  readonly clientId: string | null;
  channel(name: string): RealtimeChannel;
  connect(): void;
  close(): void;
  ready(): Promise<void>;
  request(op: string, fields?: Record<string, unknown>): Promise<Record<string, unknown>>;
}

export interface ChannelOptions extends ClientOptions {
  client?: RealtimeClient;
  /** Resume from this message id on the first subscribe. */
  sinceId?: string;
  /** The epoch stored with sinceId (from a "subscribed"): a resume across a Redis failover
   * that lost messages then answers resumed: false instead of leaving a silent gap. */
  epoch?: string;
}

/** The one-argument form: `new RealtimeChannel({ channel: "orders:eu", token })`. */
export interface StandaloneChannelOptions extends ChannelOptions {
  channel: string;
}

export class RealtimeChannel extends Emitter<{
  message: Message;
  presence: PresenceEvent;
  state: ChannelStateChange;
  resumed: { resumed: false; since_id: string };
  error: RealtimeError;
}> {
  constructor(options: StandaloneChannelOptions);
  constructor(name: string, options: ChannelOptions);
  readonly name: string;
  readonly client: RealtimeClient;
  readonly lastId: string | null;
  /** The channel's epoch from the last "subscribed": store it with lastId, resume with both. */
  readonly epoch: string | null;
  readonly state: "subscribing" | "subscribed" | "unsubscribed";
  subscribe(): Promise<unknown>;
  unsubscribe(): Promise<void>;
  /** Carries `idempotencyKey` or a key of its own; retried with it on 50300/50400/42900 and lost replies. */
  publish(
    event: string, data: unknown,
    options?: { idempotencyKey?: string; retry?: { attempts?: number; baseDelayMs?: number; maxDelayMs?: number } },
  ): Promise<{ message_id: string; status: "published" | "duplicate" }>;
  enterPresence(data?: unknown): Promise<unknown>;
  updatePresence(data?: unknown): Promise<unknown>;
  leavePresence(): Promise<unknown>;
  presence(): Promise<PresenceMember[]>;
  history(options?: { limit?: number; direction?: "backwards" | "forwards"; since_id?: string }): Promise<Message[]>;
  close(): void;
}
