import HTTPTypes
import NIOCore
import RealtimeCore

/// `POST /v1/realtime/publish` and `POST /v1/realtime/publish/batch` (contract section 4), from
/// the request's headers and collected body to the finished response. The router's routes and
/// the connection's fast path (``PublishFastPath``) both answer through this, so the two ways
/// in cannot drift apart: same checks, in the same order, same errors.
struct PublishEndpoint: Sendable {
    enum Route: Sendable, CaseIterable {
        case single, batch

        /// The route's path (the router's and the metrics' label alike).
        var path: String {
            switch self {
            case .single: "/v1/realtime/publish"
            case .batch: "/v1/realtime/publish/batch"
            }
        }
    }

    let runtime: GatewayRuntime

    /// The routes by exact path (no query); the fast path serves `POST` to these.
    static func route(path: Substring) -> Route? {
        Route.allCases.first { path == $0.path }
    }

    /// The largest body each route reads; a larger one is answered 41300.
    func bodyLimit(_ route: Route) -> Int {
        switch route {
        case .single: runtime.configuration.limits.maxMessageBytes + 64 * 1024
        case .batch: runtime.configuration.limits.maxRequestBytes
        }
    }

    /// How much of a body is read before the request's key has been checked: a body that grows
    /// past this waits until it has (``PublishFastPath``), so a client without a valid key can
    /// make the node hold at most this much of a publish, not a whole batch
    /// (`REALTIME_MAX_REQUEST_BYTES`).
    var unauthenticatedBodyLimit: Int { bodyLimit(.single) }

    /// The key a publish presents, with the publish scope; else the error to answer.
    func authenticate(_ presentedKey: String?) async -> Result<APIKeyAuthenticator.Authenticated, RealtimeError> {
        do throws(RealtimeError) {
            let key = try await runtime.keys.authenticate(presentedKey)
            guard key.scopes.contains(.publish) else { throw .scopeMissing(APIScope.publish.rawValue) }
            return .success(key)
        } catch {
            return .failure(error)
        }
    }

    /// Answers one request. `body` is nil when it was larger than ``bodyLimit(_:)`` (checked
    /// after the credentials, as a route that reads its body after authenticating would).
    /// `presentedKey`: the API key the request presents (``RESTController/presentedKey(_:)``).
    func respond(_ route: Route, presentedKey: String?, body: ByteBuffer?) async -> JSONReply {
        await respond(route, key: await authenticate(presentedKey), body: body)
    }

    /// Answers one request whose key has been checked (``authenticate(_:)``).
    func respond(_ route: Route, key: Result<APIKeyAuthenticator.Authenticated, RealtimeError>, body: ByteBuffer?) async -> JSONReply {
        do throws(RealtimeError) {
            let key = try key.get()
            guard let body else { throw .tooLarge("request body too large") }
            guard body.readableBytes > 0 else { throw .badRequest("request body is empty; send a JSON object") }
            let bytes = Array(body.readableBytesView)
            switch route {
            case .single: return try await single(bytes, keyID: key.keyID)
            case .batch: return try await batch(bytes, keyID: key.keyID)
            }
        } catch {
            return JSONReply(error: error)
        }
    }

    private func single(_ bytes: [UInt8], keyID: String) async throws(RealtimeError) -> JSONReply {
        let body = try RequestDecoding.decode(PublishBody.self, from: bytes)
        let (outcome, channel) = try await publishOne(body, keyID: keyID)
        var w = JSONWriter()
        w.raw("{")
        w.key("message_id", first: true); w.string(outcome.id.description)
        w.key("channel"); w.string(channel.rawValue)
        w.key("timestamp"); w.string(Timestamp.iso8601(milliseconds: outcome.timestamp))
        w.key("status"); w.string(outcome.status.rawValue)
        w.raw("}")
        return JSONReply(status: outcome.status == .published ? .created : .ok, body: w.text)
    }

    private func batch(_ bytes: [UInt8], keyID: String) async throws(RealtimeError) -> JSONReply {
        let body = try RequestDecoding.decode(BatchBody.self, from: bytes)
        let max = runtime.configuration.limits.maxBatchSize
        guard body.messages.count <= max else { throw .badRequest("field 'messages' holds \(body.messages.count) items; at most \(max)") }
        var results: [String] = []
        results.reserveCapacity(body.messages.count)
        for (index, item) in body.messages.enumerated() {
            do throws(RealtimeError) {
                let message = try Self.batchItem(item, index: index)
                let (outcome, _) = try await publishOne(message, keyID: keyID)
                results.append("{\"message_id\":\"\(outcome.id)\",\"status\":\"\(outcome.status.rawValue)\"}")
            } catch {
                results.append("{\"error\":\(JSONResponse.errorObject(error))}")
            }
        }
        return JSONReply(status: .ok, body: "{\"results\":[" + results.joined(separator: ",") + "]}")
    }

    /// Publishes one message through the shared use case, rate-limited per API key.
    private func publishOne(_ body: PublishBody, keyID: String) async throws(RealtimeError) -> (PublishOutcome, ChannelName) {
        let limiter = runtime.keyLimiter
        return try await runtime.operations.publish(
            PublishInput(channel: body.channel, event: body.event, data: body.data, idempotencyKey: body.idempotencyKey),
            caller: .key(keyID: keyID)
        ) {
            do throws(RealtimeError) {
                try limiter.take(keyID)
                return nil
            } catch {
                return error.retryAfterMilliseconds ?? 1000
            }
        }
    }

    struct PublishBody: FastDecodable {
        var channel: String
        var event: String
        var data: JSONValue?
        var idempotencyKey: String?
        enum CodingKeys: String, CodingKey { case channel, event, data, idempotencyKey = "idempotency_key" }
    }

    struct BatchBody: FastDecodable {
        var messages: [JSONValue]
        init?(json: JSONValue) {
            guard case .array(let messages)? = json.objectMembers?["messages"] else { return nil }
            self.messages = messages
        }
    }

    /// Reads one batch item by hand so that a malformed item fails alone.
    static func batchItem(_ value: JSONValue, index: Int) throws(RealtimeError) -> PublishBody {
        guard case .object(let o) = value else { throw .badRequest("messages[\(index)] is not an object") }
        func string(_ field: String, required: Bool) throws(RealtimeError) -> String? {
            switch o[field] {
            case .string(let s)?: return s
            case nil, .null?:
                if required { throw .badRequest("missing field 'messages[\(index)].\(field)'") }
                return nil
            default: throw .badRequest("field 'messages[\(index)].\(field)' has the wrong type (expected string)")
            }
        }
        guard let data = o["data"] else { throw .badRequest("missing field 'messages[\(index)].data'") }
        return PublishBody(
            channel: try string("channel", required: true)!, event: try string("event", required: true)!,
            data: data, idempotencyKey: try string("idempotency_key", required: false))
    }
}

extension PublishEndpoint.PublishBody {
    init?(json: JSONValue) {
        guard let o = json.objectMembers, case .string(let channel)? = o["channel"], case .string(let event)? = o["event"],
            let idempotencyKey = JSONValue.optionalString(o["idempotency_key"])
        else { return nil }
        // A missing `data` stays nil (refused later, naming the field); a JSON null is a value.
        self.init(channel: channel, event: event, data: o["data"], idempotencyKey: idempotencyKey)
    }
}
