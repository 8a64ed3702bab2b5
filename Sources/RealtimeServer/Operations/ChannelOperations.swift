import RealtimeCore

/// Who asks for an operation: a backend with an API key (its scope already checked by the REST
/// layer) or a client connection with a token (checked here against the channel's type and the
/// token's capabilities).
enum Caller {
    case key(keyID: String)
    case client(TokenClaims)
}

/// A publish as either transport received it, before validation.
struct PublishInput {
    var channel: String?
    var event: String?
    /// Nil when the field was missing; `.null` is a value.
    var data: JSONValue?
    var idempotencyKey: String?
}

/// The use cases REST and WebSocket share: publish, history and presence. Each validates,
/// authorises, rate-limits, counts and maps engine errors in one place, whichever transport
/// called it.
struct ChannelOperations: Sendable {
    let runtime: GatewayRuntime

    var engine: Engine { runtime.engine }

    func channel(_ raw: String?) throws(RealtimeError) -> ChannelName {
        guard let raw else { throw .badRequest("missing field 'channel'") }
        return try ChannelName(validating: raw)
    }

    /// Checks a client's right to `op` on the channel (API keys were checked by scope).
    func authorize(_ op: ChannelOperation, readOnly: Bool, _ channel: ChannelName, _ caller: Caller) async throws(RealtimeError) {
        guard case .client(let claims) = caller else { return }
        let settings = try await runtime.settings(channel)
        try runtime.authorize(op, readOnly: readOnly, on: settings, claims: claims)
    }

    /// Validates, authorises and publishes one message. `rateLimit` returns the milliseconds to
    /// wait when the caller's budget is spent (per key for REST, per connection for WebSocket).
    func publish(_ input: PublishInput, caller: Caller, rateLimit: @Sendable () async -> Int?) async throws(RealtimeError) -> (PublishOutcome, ChannelName) {
        let channel = try channel(input.channel)
        guard let event = input.event else { throw .badRequest("missing field 'event'") }
        guard let data = input.data else { throw .badRequest("missing field 'data' (null is a value; send \"data\": null for none)") }
        if let key = input.idempotencyKey, key.isEmpty || key.utf8.count > 256 {
            throw .badRequest("field 'idempotency_key' must be 1-256 bytes")
        }
        let text = data.jsonText
        try runtime.checkMessageSize(event: event, data: text)
        try await authorize(.publish, readOnly: false, channel, caller)
        if let wait = await rateLimit() {
            runtime.metrics.rateLimited.increment()
            throw .rateLimited(retryAfterMilliseconds: wait)
        }
        var clientID: String?
        if case .client(let claims) = caller { clientID = claims.clientID }
        let outcome: PublishOutcome
        do {
            outcome = try await engine.broker.publish(
                PublishRequest(channel: channel, event: event, data: text, clientID: clientID, idempotencyKey: input.idempotencyKey))
        } catch {
            throw GatewayRuntime.engineError(error)
        }
        (outcome.status == .published ? runtime.metrics.published : runtime.metrics.duplicates).increment()
        return (outcome, channel)
    }

    func history(_ channel: ChannelName, _ query: HistoryQuery, caller: Caller) async throws(RealtimeError) -> HistoryPage {
        try await authorize(.history, readOnly: true, channel, caller)
        do { return try await engine.broker.history(channel, query) } catch { throw GatewayRuntime.engineError(error) }
    }

    func presence(_ channel: ChannelName, caller: Caller) async throws(RealtimeError) -> [PresenceMember] {
        try await authorize(.presence, readOnly: true, channel, caller)
        do { return try await engine.presence.members(channel) } catch { throw GatewayRuntime.engineError(error) }
    }
}
