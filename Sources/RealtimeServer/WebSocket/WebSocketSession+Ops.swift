import NIOCore
import RealtimeCore

extension WebSocketSession {
    /// Handles one complete client message; every failure becomes an `error` push and the
    /// connection stays open.
    func handle(_ bytes: [UInt8]) async {
        let frame: ClientFrame
        do {
            frame = try RequestDecoding.decode(ClientFrame.self, from: bytes)
        } catch {
            // The ref comes back even when other fields are wrong (contract §10).
            push(Self.error(error, ref: Self.ref(in: bytes)))
            return
        }
        guard let claims else {
            if frame.op == "auth", let token = frame.token {
                _ = await authenticate(token: token, ref: frame.ref, initial: true)
            } else {
                push(Self.error(.noCredentials("authenticate first: send {\"op\":\"auth\",\"token\":...}"), ref: frame.ref))
                close(code: 4001, reason: "not authenticated")
            }
            return
        }
        do {
            try await perform(frame, claims: claims)
        } catch {
            push(Self.error(error, ref: frame.ref))
        }
    }

    /// The `ref` of a frame that is a JSON object, whatever else is wrong with it: any JSON
    /// value, as an op that decoded gets it back (`docs/protocol.md`: echoed as sent).
    static func ref(in bytes: [UInt8]) -> JSONValue? {
        JSONParser.parse(bytes)?.objectMembers?["ref"]?.nonNull
    }

    private func perform(_ frame: ClientFrame, claims: TokenClaims) async throws(RealtimeError) {
        switch frame.op {
        case "ping":
            push(Self.reply("pong", ref: frame.ref))
        case "auth":
            guard let token = frame.token else { throw .badRequest("missing field 'token'") }
            _ = await authenticate(token: token, ref: frame.ref, initial: false)
        case "subscribe":
            try await subscribe(frame, claims: claims)
        case "unsubscribe":
            let channel = try channelName(frame)
            await unsubscribe(channel)
            push(Self.reply("unsubscribed", ref: frame.ref) { $0.key("channel"); $0.string(channel.rawValue) })
        case "publish":
            try await publish(frame, claims: claims)
        case "presence.enter", "presence.update":
            try await enterPresence(frame, claims: claims)
        case "presence.leave":
            let channel = try channelName(frame)
            let settings = try await runtime.settings(channel)
            try runtime.authorize(.presence, readOnly: false, on: settings, claims: claims)
            try await leavePresence(channel)
            push(Self.reply("ack", ref: frame.ref))
        case "presence.get":
            let channel = try runtime.operations.channel(frame.channel)
            let members = try await runtime.operations.presence(channel, caller: .client(claims))
            push(Self.reply("presence", ref: frame.ref) { w in
                w.key("channel"); w.string(channel.rawValue)
                w.key("members"); w.raw("[" + members.map(\.json).joined(separator: ",") + "]")
            })
        case "history":
            let channel = try runtime.operations.channel(frame.channel)
            let query = try HistoryParameters.query(
                limit: frame.limit, direction: frame.direction, sinceID: frame.sinceID, untilID: nil,
                maxLimit: runtime.configuration.limits.maxHistoryLimit)
            let page = try await runtime.operations.history(channel, query, caller: .client(claims))
            push(Self.reply("history", ref: frame.ref) { w in
                w.key("channel"); w.string(channel.rawValue)
                w.key("messages"); w.raw("[" + page.messages.map { $0.json(asPush: false) }.joined(separator: ",") + "]")
            })
        default:
            throw .badRequest("unknown op '\(frame.op.prefix(64))'")
        }
    }

    private func channelName(_ frame: ClientFrame) throws(RealtimeError) -> ChannelName {
        try runtime.operations.channel(frame.channel)
    }

    private func subscribe(_ frame: ClientFrame, claims: TokenClaims) async throws(RealtimeError) {
        let channel = try channelName(frame)
        var since: MessageID?
        if let raw = frame.sinceID {
            guard let id = MessageID(raw) else { throw .badRequest("field 'since_id' is not a message id (<ms>-<seq>)") }
            since = id
        }
        if let epoch = frame.epoch, epoch.utf8.count > 64 { throw .badRequest("field 'epoch' must be at most 64 characters") }
        let settings = try await runtime.settings(channel)
        try runtime.authorize(.subscribe, readOnly: true, on: settings, claims: claims)
        try reserveSubscription(channel)
        let subscription: HubSubscription?
        do {
            subscription = try await runtime.hub.subscribe(channel, sink: self, since: since, sinceEpoch: frame.epoch.flatMap { $0.isEmpty ? nil : $0 }) { [self] outcome in
                push(Self.reply("subscribed", ref: frame.ref) { w in
                    w.key("channel"); w.string(channel.rawValue)
                    w.key("resumed"); w.raw(outcome.resumed ? "true" : "false")
                    w.key("replayed"); w.raw(String(outcome.replayed))
                    w.key("epoch"); w.string(outcome.epoch)
                })
            }
        } catch {
            dropReservation(channel)
            throw GatewayRuntime.engineError(error)
        }
        guard let subscription else { return }
        guard activateSubscription(subscription) else {
            await runtime.hub.unsubscribe(subscription)
            return
        }
        runtime.metrics.subscriptions.increment()
        // Presence channels enter presence on subscribe for tokens allowed to be present.
        if settings.type == .presence, claims.capabilities.allows(.presence, on: channel) {
            try await enter(channel, data: nil, claims: claims)
        }
    }

    private func publish(_ frame: ClientFrame, claims: TokenClaims) async throws(RealtimeError) {
        let clock = runtime.clock
        let (outcome, _) = try await runtime.operations.publish(
            PublishInput(channel: frame.channel, event: frame.event, data: frame.data, idempotencyKey: frame.idempotencyKey),
            caller: .client(claims)
        ) { [self] in
            await takePublishToken(now: clock.nowMilliseconds())
        }
        push(Self.reply("ack", ref: frame.ref) { w in
            w.key("message_id"); w.string(outcome.id.description)
            w.key("status"); w.string(outcome.status.rawValue)
        })
    }

    private func enterPresence(_ frame: ClientFrame, claims: TokenClaims) async throws(RealtimeError) {
        let channel = try channelName(frame)
        let settings = try await runtime.settings(channel)
        try runtime.authorize(.presence, readOnly: false, on: settings, claims: claims)
        let data = frame.data.flatMap { $0 == .null ? nil : $0.jsonText }
        if let data, data.utf8.count > runtime.configuration.limits.maxPresenceDataBytes {
            throw .tooLarge("presence data is \(data.utf8.count) bytes; the limit is \(runtime.configuration.limits.maxPresenceDataBytes)")
        }
        try await enter(channel, data: data, claims: claims)
        push(Self.reply("ack", ref: frame.ref))
    }

    private func enter(_ channel: ChannelName, data: String?, claims: TokenClaims) async throws(RealtimeError) {
        let limit = runtime.configuration.limits.maxPresencePerConnection
        guard isPresent(on: channel) || presenceCount < limit else { throw .badRequest("presence limit of \(limit) channels per connection reached (REALTIME_MAX_PRESENCE_PER_CONNECTION)") }
        let now = runtime.clock.nowMilliseconds()
        let member = PresenceMember(clientID: claims.clientID, userID: claims.userID, connectionID: connectionID, data: data, enteredAt: now, updatedAt: now)
        do { try await runtime.engine.presence.enter(channel, member: member) } catch { throw GatewayRuntime.engineError(error) }
        recordPresence(channel, member)
    }

    func leavePresence(_ channel: ChannelName) async throws(RealtimeError) {
        guard removePresence(channel) else { return }
        do { try await runtime.engine.presence.leave(channel, connectionID: connectionID) } catch { throw GatewayRuntime.engineError(error) }
    }

}

/// History query parameters shared by REST and WebSocket.
enum HistoryParameters {
    static func query(limit: Int?, direction: String?, sinceID: String?, untilID: String?, maxLimit: Int) throws(RealtimeError) -> HistoryQuery {
        let limit = limit ?? min(100, maxLimit)
        guard limit >= 1, limit <= maxLimit else { throw .badRequest("field 'limit' must be from 1 to \(maxLimit)") }
        let dir: HistoryQuery.Direction
        switch direction {
        case nil, "backwards": dir = .backwards
        case "forwards": dir = .forwards
        default: throw .badRequest("field 'direction' must be 'backwards' or 'forwards'")
        }
        var after: MessageID?
        var through: MessageID?
        if let sinceID {
            guard let id = MessageID(sinceID) else { throw .badRequest("field 'since_id' is not a message id (<ms>-<seq>)") }
            after = id
        }
        if let untilID {
            guard let id = MessageID(untilID) else { throw .badRequest("field 'until_id' is not a message id (<ms>-<seq>)") }
            through = id
        }
        return HistoryQuery(limit: limit, direction: dir, after: after, through: through)
    }
}
