// Types for realtime-server-client.

export class RealtimeApiError extends Error {
  /** The contract's 5-digit code; 0 when no reply came (connection error or timeout). */
  code: number;
  /** The HTTP status (0 when no reply came). */
  status: number;
  /** Milliseconds to wait before retrying (42900). */
  retryAfterMs?: number;
  /** 50300, 50400, 42900 or no reply: a retry with the same idempotency key may succeed. */
  readonly retryable: boolean;
}

export function newIdempotencyKey(): string;

export interface ClientOptions {
  apiKey?: string;
  /** Default: REALTIME_URL, else http://127.0.0.1:8080. */
  url?: string;
  timeoutMs?: number;
  retry?: { attempts?: number; baseDelayMs?: number; maxDelayMs?: number };
  fetch?: typeof fetch;
}

export interface PublishResult {
  message_id: string;
  channel: string;
  timestamp: string;
  status: "published" | "duplicate";
}

export interface Message {
  id: string;
  channel: string;
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

export interface TokenResponse {
  token: string;
  client_id: string;
  user_id?: string;
  expires_at: string;
  endpoint: string;
  capabilities: Record<string, string[]>;
}

export type Operation = "subscribe" | "publish" | "presence" | "history" | "*";

export interface ChannelInfo {
  name: string;
  type: "public" | "private" | "presence";
  history_size: number;
  history_ttl_seconds: number;
  [field: string]: unknown;
}

export interface RealtimeApi {
  publish(channel: string, message: { event: string; data: unknown; idempotencyKey?: string }): Promise<PublishResult>;
  publishBatch(batch: {
    messages: { channel: string; event: string; data: unknown; idempotencyKey?: string }[];
  }): Promise<({ message_id: string; status: "published" | "duplicate" } | { error: { code: number; message: string } })[]>;
  history(channel: string, options?: {
    limit?: number; direction?: "backwards" | "forwards"; sinceId?: string; untilId?: string; cursor?: string;
  }): Promise<{ messages: Message[]; next_cursor?: string }>;
  historyAll(channel: string, options?: { pageSize?: number; direction?: "backwards" | "forwards" }): AsyncGenerator<Message>;
  presence: { get(channel: string, options?: { groupBy?: "client_id" | "user_id" }): Promise<PresenceMember[]> };
  tokens: {
    mint(request: {
      clientId?: string; userId?: string; capabilities?: Record<string, Operation[]>; channels?: string[]; ttlSeconds?: number;
    }): Promise<TokenResponse>;
  };
  channels: {
    create(request: { name: string; type?: "public" | "private" | "presence"; historySize?: number; historyTtlSeconds?: number }): Promise<ChannelInfo>;
    get(name: string): Promise<ChannelInfo>;
    list(options?: { limit?: number; cursor?: string }): Promise<{ channels: ChannelInfo[]; next_cursor?: string }>;
    delete(name: string): Promise<void>;
  };
  keys: {
    create(request: { name: string; scopes: string[] }): Promise<{ key_id: string; key: string; name: string; scopes: string[]; created_at: string }>;
    list(): Promise<{ key_id: string; name: string; scopes: string[]; created_at: string }[]>;
    revoke(keyId: string): Promise<void>;
  };
  request(method: string, path: string, body?: unknown): Promise<unknown>;
}

export function createRealtimeClient(options: ClientOptions): { realtime: RealtimeApi };
