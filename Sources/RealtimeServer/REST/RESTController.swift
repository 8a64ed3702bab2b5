import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import RealtimeCore

/// The REST API of contract section 4 and the key management of section 3.
struct RESTController: Sendable {
    let runtime: GatewayRuntime

    func register(on router: Router<GatewayRequestContext>) {
        let api = router.group("v1/realtime")
        api.post("token", use: issueToken)
        api.post("channels", use: createChannel)
        api.get("channels", use: listChannels)
        api.get("channels/{name}", use: getChannel)
        api.delete("channels/{name}", use: deleteChannel)
        api.get("channels/{name}/history", use: history)
        api.get("channels/{name}/presence", use: presence)
        api.post("publish", use: publish)
        api.post("publish/batch", use: publishBatch)
        api.post("keys", use: createKey)
        api.get("keys", use: listKeys)
        api.delete("keys/{key_id}", use: revokeKey)
    }

    // MARK: Helpers

    func authenticate(_ request: Request, _ scope: APIScope) async throws -> APIKeyAuthenticator.Authenticated {
        let key = try await runtime.keys.authenticate(Self.presentedKey(request.headers))
        guard key.scopes.contains(scope) else { throw RealtimeError.scopeMissing(scope.rawValue) }
        return key
    }

    /// The API key a request presents: `Authorization: Bearer <key>`, else `X-API-Key`.
    static func presentedKey(_ headers: HTTPFields) -> String? {
        headers[.authorization].flatMap(bearerToken) ?? headers[apiKeyHeader]
    }

    /// The same from HTTP/1 headers (the publish fast path's), read as `HTTPFields` reads them:
    /// repeated fields joined with ", ".
    static func presentedKey(_ headers: HTTPHeaders) -> String? {
        func combined(_ name: String) -> String? {
            let values = headers[name]
            return values.isEmpty ? nil : values.count == 1 ? values[0] : values.joined(separator: ", ")
        }
        return combined("authorization").flatMap(bearerToken) ?? combined("x-api-key")
    }

    static let apiKeyHeader = HTTPField.Name("X-API-Key")!

    /// The credential of an `Authorization: Bearer <key>` value (scheme case-insensitive).
    static func bearerToken(_ value: String) -> String? {
        let bytes = value.utf8
        guard bytes.count > 7, bytes.prefix(6).map({ $0 | 0x20 }).elementsEqual("bearer".utf8),
            bytes.dropFirst(6).first == UInt8(ascii: " ")
        else { return nil }
        let token = bytes.dropFirst(7).drop(while: { $0 == 0x20 || $0 == 0x09 })
        let end = token.lastIndex(where: { $0 != 0x20 && $0 != 0x09 })
        guard let end else { return nil }
        return String(Substring(token[token.startIndex...end]))
    }

    func body<T: Decodable>(_ request: Request, as type: T.Type, limit: Int? = nil) async throws -> T {
        try RequestDecoding.decode(T.self, from: try await bodyBytes(request, limit: limit))
    }

    func body<T: FastDecodable>(_ request: Request, as type: T.Type, limit: Int? = nil) async throws -> T {
        try RequestDecoding.decode(T.self, from: try await bodyBytes(request, limit: limit))
    }

    private func bodyBytes(_ request: Request, limit: Int?) async throws -> [UInt8] {
        let buffer = try await request.body.collect(upTo: limit ?? runtime.configuration.limits.maxMessageBytes + 64 * 1024)
        guard buffer.readableBytes > 0 else { throw RealtimeError.badRequest("request body is empty; send a JSON object") }
        return Array(buffer.readableBytesView)
    }

    func channelParameter(_ context: GatewayRequestContext) throws -> ChannelName {
        let raw = context.parameters.get("name") ?? ""
        return try ChannelName(validating: raw.removingPercentEncoding ?? raw)
    }

    func channelJSON(_ s: ChannelSettings, _ w: inout JSONWriter) {
        w.key("channel_id", first: true); w.string(s.channelID)
        w.key("name"); w.string(s.name.rawValue)
        w.key("type"); w.string(s.type.rawValue)
        w.key("history_size"); w.raw(String(s.historySize))
        w.key("history_ttl_seconds"); w.raw(String(s.historyTTLSeconds))
        w.key("durability"); w.string(s.durability.rawValue)
        w.key("created_at"); w.string(Timestamp.iso8601(milliseconds: s.createdAt))
    }

    func engine<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch { throw GatewayRuntime.engineError(error) }
    }

    // MARK: Tokens

    struct TokenRequest: Decodable {
        var userID: String?
        var clientID: String?
        var channels: [String]?
        var capabilities: [String: [String]]?
        var ttlSeconds: Int?
        enum CodingKeys: String, CodingKey {
            case userID = "user_id", clientID = "client_id", channels, capabilities, ttlSeconds = "ttl_seconds"
        }
    }

    @Sendable func issueToken(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let key = try await authenticate(request, .tokens)
        let body = try await body(request, as: TokenRequest.self)
        let ttl = body.ttlSeconds ?? 3600
        guard ttl >= 1, ttl <= 86_400 else { throw RealtimeError.badRequest("field 'ttl_seconds' must be from 1 to 86400") }
        for (field, value) in [("client_id", body.clientID), ("user_id", body.userID)] {
            if let value, value.isEmpty || value.utf8.count > 256 {
                throw RealtimeError.badRequest("field '\(field)' must be 1-256 characters")
            }
        }
        var caps = Capabilities()
        do {
            for pattern in body.channels ?? [] {
                caps.grant([.subscribe, .presence, .history], on: try ChannelPattern(parsing: pattern))
            }
        } catch {
            throw RealtimeError.badRequest("field 'channels': \(error.message)")
        }
        if let wire = body.capabilities {
            do { caps = caps.merging(try Capabilities(wire: wire)) } catch { throw RealtimeError.badRequest("field 'capabilities': \(error.message)") }
        }
        let clientID = body.clientID ?? "c_" + RandomID.hex(bytes: 8)
        let now = runtime.clock.nowMilliseconds() / 1000
        let claims = TokenClaims(
            clientID: clientID, userID: body.userID, capabilities: caps, issuedAt: now, expiresAt: now + Int64(ttl),
            tokenID: RandomID.hex(bytes: 12), keyID: key.keyID)
        let token = try await runtime.tokens.mint(claims)
        return JSONResponse.object(.created) { w in
            w.key("token", first: true); w.string(token)
            w.key("client_id"); w.string(clientID)
            if let uid = body.userID { w.key("user_id"); w.string(uid) }
            w.key("expires_at"); w.string(Timestamp.iso8601(milliseconds: claims.expiresAt * 1000))
            w.key("endpoint"); w.string(runtime.configuration.webSocketEndpoint(requestHost: request.head.authority))
            w.key("capabilities"); w.write(.object(caps.wire.mapValues { .array($0.map { .string($0) }) }))
        }
    }

    // MARK: Channels

    struct ChannelRequest: Decodable {
        var name: String
        var type: String?
        var historySize: Int?
        var historyTTLSeconds: Int?
        var durability: String?
        enum CodingKeys: String, CodingKey {
            case name, type, historySize = "history_size", historyTTLSeconds = "history_ttl_seconds", durability
        }
    }

    @Sendable func createChannel(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await authenticate(request, .admin)
        let body = try await body(request, as: ChannelRequest.self)
        let name = try ChannelName(validating: body.name)
        let defaults = runtime.configuration.engine.channelDefaults
        // Omitted settings of an existing channel count as the same, so a repeated create is idempotent.
        let existing = try await engine { try await runtime.engine.channels.settings(name) }
        let base = existing.explicit ? existing : nil
        var type = base?.type ?? defaults.type
        if let raw = body.type {
            guard let t = ChannelType(rawValue: raw) else { throw RealtimeError.badRequest("field 'type' must be public, private or presence") }
            type = t
        }
        if let size = body.historySize, size < 0 || size > defaults.maxHistorySize {
            throw RealtimeError.badRequest("field 'history_size' must be from 0 to \(defaults.maxHistorySize)")
        }
        if let ttl = body.historyTTLSeconds, ttl < 1 || ttl > defaults.maxHistoryTTLSeconds {
            throw RealtimeError.badRequest("field 'history_ttl_seconds' must be from 1 to \(defaults.maxHistoryTTLSeconds)")
        }
        var durability = base?.durability ?? .primary
        if let raw = body.durability {
            guard let d = Durability(rawValue: raw) else { throw RealtimeError.badRequest("field 'durability' must be primary or replicated") }
            durability = d
        }
        let settings = ChannelSettings(
            name: name, type: type,
            historySize: body.historySize ?? base?.historySize ?? defaults.historySize,
            historyTTLSeconds: body.historyTTLSeconds ?? base?.historyTTLSeconds ?? defaults.historyTTLSeconds,
            createdAt: runtime.clock.nowMilliseconds(), explicit: true, durability: durability)
        let (stored, created) = try await engine { try await runtime.engine.channels.create(settings) }
        return JSONResponse.object(created ? .created : .ok) { channelJSON(stored, &$0) }
    }

    @Sendable func listChannels(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await authenticate(request, .subscribe)
        let query = request.uri.queryParameters
        var limit = 100
        if let raw = query.get("limit") {
            guard let n = Int(raw), n >= 1, n <= 1000 else { throw RealtimeError.badRequest("field 'limit' must be from 1 to 1000") }
            limit = n
        }
        var cursor: ChannelName?
        if let raw = query.get("cursor") {
            guard let decoded = Cursor.decode(raw), let name = try? ChannelName(validating: decoded) else {
                throw RealtimeError.badRequest("field 'cursor' is not a cursor this API returned")
            }
            cursor = name
        }
        let (channels, hasMore) = try await engine { try await runtime.engine.channels.list(limit: limit, after: cursor) }
        return JSONResponse.object { w in
            w.key("channels", first: true)
            w.raw("[")
            for (i, c) in channels.enumerated() {
                if i > 0 { w.raw(",") }
                w.raw("{")
                channelJSON(c, &w)
                w.raw("}")
            }
            w.raw("]")
            if hasMore, let last = channels.last { w.key("next_cursor"); w.string(Cursor.encode(last.name.rawValue)) }
        }
    }

    @Sendable func getChannel(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await authenticate(request, .subscribe)
        let name = try channelParameter(context)
        let settings = try await engine { try await runtime.engine.channels.settings(name) }
        let stats = try await engine { try await runtime.engine.channels.stats(name) }
        return JSONResponse.object { w in
            channelJSON(settings, &w)
            w.key("subscribers"); w.raw(String(stats.subscribers))
            w.key("presence_members"); w.raw(String(stats.presenceMembers))
            w.key("last_message_id")
            if let id = stats.lastMessageID { w.string(id.description) } else { w.raw("null") }
        }
    }

    @Sendable func deleteChannel(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await authenticate(request, .admin)
        let name = try channelParameter(context)
        guard try await engine({ try await runtime.engine.channels.delete(name) }) else {
            throw RealtimeError.notFound("no channel '\(name)'")
        }
        return Response(status: .noContent)
    }

    // MARK: Publish

    /// The router's publish routes; a connection's fast path (``PublishFastPath``) serves most
    /// publishes before they get here, through the same ``PublishEndpoint``.
    @Sendable func publish(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try await publish(.single, request)
    }

    @Sendable func publishBatch(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try await publish(.batch, request)
    }

    private func publish(_ route: PublishEndpoint.Route, _ request: Request) async throws -> Response {
        let endpoint = PublishEndpoint(runtime: runtime)
        // The key first: a request without a valid one is answered without its body being
        // collected (Hummingbird then reads the rest and drops it).
        let key = await endpoint.authenticate(Self.presentedKey(request.headers))
        var body: ByteBuffer?
        if case .success = key {
            do { body = try await request.body.collect(upTo: endpoint.bodyLimit(route)) } catch is NIOTooManyBytesError { body = nil }
        }
        return JSONResponse.make(await endpoint.respond(route, key: key, body: body))
    }

    // MARK: History and presence

    @Sendable func history(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let key = try await authenticate(request, .subscribe)
        let name = try channelParameter(context)
        let q = request.uri.queryParameters
        var limit: Int?
        if let raw = q.get("limit") {
            guard let n = Int(raw) else { throw RealtimeError.badRequest("field 'limit' must be a whole number") }
            limit = n
        }
        var query = try HistoryParameters.query(
            limit: limit, direction: q.get("direction"), sinceID: q.get("since_id"), untilID: q.get("until_id"),
            maxLimit: runtime.configuration.limits.maxHistoryLimit)
        if let raw = q.get("cursor") {
            guard let cursor = Cursor.decodeHistory(raw) else { throw RealtimeError.badRequest("field 'cursor' is not a cursor this API returned") }
            (query.direction, query.after, query.through) = cursor
        }
        let page = try await runtime.operations.history(name, query, caller: .key(keyID: key.keyID))
        return JSONResponse.object { w in
            w.key("messages", first: true)
            w.raw("[" + page.messages.map { $0.json(asPush: false) }.joined(separator: ",") + "]")
            if page.hasMore, let last = page.messages.last {
                let next: (HistoryQuery.Direction, MessageID?, MessageID?) =
                    query.direction == .forwards ? (.forwards, last.id, query.through) : (.backwards, query.after, last.id.predecessor)
                w.key("next_cursor"); w.string(Cursor.encodeHistory(next))
            }
        }
    }

    @Sendable func presence(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let key = try await authenticate(request, .subscribe)
        let name = try channelParameter(context)
        let members = try await runtime.operations.presence(name, caller: .key(keyID: key.keyID))
        let groupBy = request.uri.queryParameters.get("group_by")
        guard groupBy == nil || groupBy == "user" else { throw RealtimeError.badRequest("field 'group_by' must be 'user'") }
        guard groupBy == "user" else {
            return JSONResponse.make(.ok, "{\"members\":[" + members.map(\.json).joined(separator: ",") + "]}")
        }
        // One entry per user (members without a user_id group by client_id): the most recently
        // updated member stands for the user, with the number of its connections.
        var groups: [String: (member: PresenceMember, connections: Int, enteredAt: Int64)] = [:]
        var order: [String] = []
        for m in members {
            let key = m.userID.map { "u:" + $0 } ?? "c:" + m.clientID
            if let g = groups[key] {
                groups[key] = (m.updatedAt >= g.member.updatedAt ? m : g.member, g.connections + 1, min(g.enteredAt, m.enteredAt))
            } else {
                groups[key] = (m, 1, m.enteredAt)
                order.append(key)
            }
        }
        let entries = order.map { key -> String in
            let g = groups[key]!
            var member = g.member
            member.enteredAt = g.enteredAt
            let json = member.json
            return String(json.dropLast()) + ",\"connections\":\(g.connections)}"
        }
        return JSONResponse.make(.ok, "{\"members\":[" + entries.joined(separator: ",") + "]}")
    }

    // MARK: Keys

    struct KeyRequest: Decodable {
        var name: String
        var scopes: [String]
    }

    func keyJSON(_ r: APIKeyRecord, _ w: inout JSONWriter, secret: String? = nil) {
        w.key("key_id", first: true); w.string(r.keyID)
        if let secret { w.key("key"); w.string(secret) }
        w.key("name"); w.string(r.name)
        w.key("scopes"); w.raw("[" + r.scopes.map { "\"\($0.rawValue)\"" }.joined(separator: ",") + "]")
        w.key("created_at"); w.string(Timestamp.iso8601(milliseconds: r.createdAt))
    }

    @Sendable func createKey(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await authenticate(request, .admin)
        let body = try await body(request, as: KeyRequest.self)
        guard !body.name.isEmpty, body.name.utf8.count <= 200 else { throw RealtimeError.badRequest("field 'name' must be 1-200 characters") }
        guard !body.scopes.isEmpty else { throw RealtimeError.badRequest("field 'scopes' must name at least one scope") }
        var scopes: [APIScope] = []
        for raw in body.scopes {
            guard let scope = APIScope(rawValue: raw) else {
                throw RealtimeError.badRequest("field 'scopes' has unknown scope '\(raw)': use \(APIScope.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if !scopes.contains(scope) { scopes.append(scope) }
        }
        let (keyID, secret) = APIKeyMaterial.generate()
        let record = APIKeyRecord(
            keyID: keyID, name: body.name, scopes: scopes, createdAt: runtime.clock.nowMilliseconds(), secretHash: APIKeyMaterial.hash(secret))
        try await engine { try await runtime.engine.keys.store(record) }
        return JSONResponse.object(.created) { keyJSON(record, &$0, secret: secret) }
    }

    @Sendable func listKeys(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await authenticate(request, .admin)
        let keys = try await engine { try await runtime.engine.keys.list() }
        let bootstrap = APIKeyRecord(
            keyID: APIKeyMaterial.bootstrapKeyID, name: "bootstrap (configuration)", scopes: APIScope.allCases,
            createdAt: runtime.startedAt, secretHash: "")
        return JSONResponse.object { w in
            w.key("keys", first: true)
            w.raw("[")
            for (i, k) in ([bootstrap] + keys).enumerated() {
                if i > 0 { w.raw(",") }
                w.raw("{")
                keyJSON(k, &w)
                w.raw("}")
            }
            w.raw("]")
        }
    }

    @Sendable func revokeKey(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await authenticate(request, .admin)
        let keyID = context.parameters.get("key_id") ?? ""
        guard keyID != APIKeyMaterial.bootstrapKeyID else {
            throw RealtimeError.conflict("the bootstrap key comes from configuration; change REALTIME_API_KEY to replace it")
        }
        guard try await engine({ try await runtime.engine.keys.revoke(id: keyID) }) else {
            throw RealtimeError.notFound("no key '\(keyID)'")
        }
        return Response(status: .noContent)
    }
}

/// Opaque paging cursors (base64url of the position).
enum Cursor {
    static func encode(_ text: String) -> String {
        Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ cursor: String) -> String? {
        var s = cursor.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).flatMap { String(data: $0, encoding: .utf8) }
    }

    static func encodeHistory(_ c: (HistoryQuery.Direction, MessageID?, MessageID?)) -> String {
        encode("h|\(c.0.rawValue)|\(c.1?.description ?? "")|\(c.2?.description ?? "")")
    }

    static func decodeHistory(_ cursor: String) -> (HistoryQuery.Direction, MessageID?, MessageID?)? {
        guard let text = decode(cursor) else { return nil }
        let parts = text.split(separator: "|", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "h", let dir = HistoryQuery.Direction(rawValue: String(parts[1])) else { return nil }
        let after = parts[2].isEmpty ? nil : MessageID(parts[2])
        let through = parts[3].isEmpty ? nil : MessageID(parts[3])
        if !parts[2].isEmpty, after == nil { return nil }
        if !parts[3].isEmpty, through == nil { return nil }
        return (dir, after, through)
    }
}
