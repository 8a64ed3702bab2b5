import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// The server-side REST client, authenticated with an API key.
///
///     let rest = RealtimeREST(baseURL: "http://127.0.0.1:8080", apiKey: key)
///     let sent = try await rest.publish(channel: "chat:lobby", event: "message", data: ["text": "hi"])
public struct RealtimeREST: Sendable {
    public let baseURL: String
    public let apiKey: String
    let http: HTTPClient
    /// How publishes are retried (always with the same idempotency key).
    public var retry: RetryPolicy
    /// How long one HTTP request may take.
    public var requestTimeout: Duration

    public init(
        baseURL: String, apiKey: String, httpClient: HTTPClient = .shared, retry: RetryPolicy = .init(), requestTimeout: Duration = .seconds(30)
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.apiKey = apiKey
        self.http = httpClient
        self.retry = retry
        self.requestTimeout = requestTimeout
    }

    // MARK: Publishing

    /// Publishes once: with `idempotencyKey`, or a key of the SDK's own, retried per `retry`
    /// on `50300`/`50400`/`42900` and connection errors, so a lost reply never doubles it.
    public func publish(channel: String, event: String, data: RealtimeJSON = .null, idempotencyKey: String? = nil) async throws -> PublishResult {
        let message = BatchMessage(channel: channel, event: event, data: data, idempotencyKey: idempotencyKey ?? RetryPolicy.newIdempotencyKey())
        return try await retry.run { try await call(.POST, "/v1/realtime/publish", body: message) }
    }

    /// Publishes a batch; items without an idempotency key get one of the SDK's own, so a
    /// retried batch reports the items already applied as `duplicate` instead of doubling them.
    public func publishBatch(_ messages: [BatchMessage]) async throws -> [BatchResult] {
        var messages = messages
        for i in messages.indices where messages[i].idempotencyKey == nil { messages[i].idempotencyKey = RetryPolicy.newIdempotencyKey() }
        struct Body: Encodable { var messages: [BatchMessage] }
        struct Item: Decodable {
            var message_id: String?
            var status: String?
            var error: ErrorBody?
        }
        struct Reply: Decodable { var results: [Item] }
        let body = Body(messages: messages)
        let reply: Reply = try await retry.run { try await call(.POST, "/v1/realtime/publish/batch", body: body) }
        return reply.results.map { item in
            if let e = item.error { return .failed(code: e.code, message: e.message) }
            return .published(messageID: item.message_id ?? "", status: item.status ?? "published")
        }
    }

    // MARK: History and presence

    public enum Direction: String, Sendable { case backwards, forwards }

    /// One page; pass `cursor` from the previous page's `nextCursor` for the next.
    public func history(
        channel: String, limit: Int? = nil, direction: Direction? = nil, sinceID: String? = nil, untilID: String? = nil, cursor: String? = nil
    ) async throws -> HistoryPage {
        let query = Self.query(["limit": limit.map(String.init), "direction": direction?.rawValue, "since_id": sinceID, "until_id": untilID, "cursor": cursor])
        return try await call(.GET, "/v1/realtime/channels/\(Self.segment(channel))/history" + query)
    }

    public func presence(channel: String, groupByUser: Bool = false) async throws -> [PresenceMember] {
        struct Reply: Decodable { var members: [PresenceMember] }
        let reply: Reply = try await call(.GET, "/v1/realtime/channels/\(Self.segment(channel))/presence" + (groupByUser ? "?group_by=user" : ""))
        return reply.members
    }

    // MARK: Tokens

    public func issueToken(_ request: TokenRequest) async throws -> IssuedToken {
        try await call(.POST, "/v1/realtime/token", body: request)
    }

    // MARK: Channels

    public func createChannel(name: String, type: String? = nil, historySize: Int? = nil, historyTTLSeconds: Int? = nil) async throws -> ChannelInfo {
        struct Body: Encodable {
            var name: String
            var type: String?
            var history_size: Int?
            var history_ttl_seconds: Int?
        }
        return try await call(.POST, "/v1/realtime/channels", body: Body(name: name, type: type, history_size: historySize, history_ttl_seconds: historyTTLSeconds))
    }

    public func channel(_ name: String) async throws -> ChannelInfo {
        try await call(.GET, "/v1/realtime/channels/\(Self.segment(name))")
    }

    public func channels(limit: Int? = nil, cursor: String? = nil) async throws -> ChannelList {
        try await call(.GET, "/v1/realtime/channels" + Self.query(["limit": limit.map(String.init), "cursor": cursor]))
    }

    public func deleteChannel(_ name: String) async throws {
        _ = try await send(.DELETE, "/v1/realtime/channels/\(Self.segment(name))", body: nil)
    }

    // MARK: Keys

    public func createKey(name: String, scopes: [String]) async throws -> APIKeyInfo {
        struct Body: Encodable { var name: String; var scopes: [String] }
        return try await call(.POST, "/v1/realtime/keys", body: Body(name: name, scopes: scopes))
    }

    public func keys() async throws -> [APIKeyInfo] {
        struct Reply: Decodable { var keys: [APIKeyInfo] }
        let reply: Reply = try await call(.GET, "/v1/realtime/keys")
        return reply.keys
    }

    public func revokeKey(_ keyID: String) async throws {
        _ = try await send(.DELETE, "/v1/realtime/keys/\(Self.segment(keyID))", body: nil)
    }

    // MARK: Transport

    struct ErrorBody: Decodable {
        var code: Int
        var message: String
        var status: Int?
        var retry_after_ms: Int?
    }

    func call<Reply: Decodable>(_ method: HTTPMethod, _ path: String) async throws -> Reply {
        try JSONDecoder().decode(Reply.self, from: try await send(method, path, body: nil))
    }

    func call<Reply: Decodable, Body: Encodable>(_ method: HTTPMethod, _ path: String, body: Body) async throws -> Reply {
        try JSONDecoder().decode(Reply.self, from: try await send(method, path, body: try JSONEncoder().encode(body)))
    }

    private func send(_ method: HTTPMethod, _ path: String, body: Data?) async throws -> Data {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(apiKey)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await http.execute(request, timeout: .nanoseconds(Int64(requestTimeout.components.seconds) * 1_000_000_000 + requestTimeout.components.attoseconds / 1_000_000_000))
        let bytes = Data((try await response.body.collect(upTo: 64 << 20)).readableBytesView)
        guard (200..<300).contains(Int(response.status.code)) else {
            struct Envelope: Decodable { var error: ErrorBody }
            if let e = try? JSONDecoder().decode(Envelope.self, from: bytes) {
                let retryAfter = e.error.retry_after_ms ?? response.headers.first(name: "Retry-After").flatMap(Int.init).map { $0 * 1000 }
                throw RealtimeClientError(code: e.error.code, message: e.error.message, status: Int(response.status.code), retryAfterMilliseconds: retryAfter)
            }
            throw RealtimeClientError(code: Int(response.status.code) * 100, message: String(decoding: bytes, as: UTF8.self), status: Int(response.status.code))
        }
        return bytes
    }

    static func segment(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~:"))) ?? s
    }

    static func query(_ items: [String: String?]) -> String {
        let parts = items.compactMap { k, v in v.map { "\(k)=\(segment($0))" } }.sorted()
        return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
    }
}
