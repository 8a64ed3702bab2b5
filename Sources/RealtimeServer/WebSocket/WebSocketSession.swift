import Logging
import NIOCore
import NIOWebSocket
import RealtimeCore
import Synchronization

/// One WebSocket connection: authentication, ops, its subscriptions and presence. Every frame
/// to the client (replies and fan-out alike) goes through its ``FrameWriter`` on the channel's
/// event loop, in the order it was sent.
final class WebSocketSession: SubscriberSink {
    let connectionID: String
    let runtime: GatewayRuntime
    let closer = CloseLatch()
    let writer: FrameWriter
    let loop: any EventLoop
    let state = Mutex(State())
    /// Counted among the node's unauthenticated connections (see `ConnectionRegistry`).
    let awaitingAuth = Atomic<Bool>(false)

    enum SubscriptionSlot {
        /// Subscribe in progress; a deletion meanwhile removes the slot.
        case pending
        case live(HubSubscription)
    }

    struct State {
        var claims: TokenClaims?
        var subscriptions: [ChannelName: SubscriptionSlot] = [:]
        /// Presence memberships with the member as last entered, for the heartbeat's refresh.
        var presence: [ChannelName: PresenceMember] = [:]
        var publishBucket: TokenBucket?
        /// Expiry for which `token_expiring` was already sent.
        var warnedFor: Int64?
    }

    init(runtime: GatewayRuntime, channel: any Channel) {
        self.connectionID = "conn_" + RandomID.hex(bytes: 12)
        self.runtime = runtime
        self.loop = channel.eventLoop
        self.writer = FrameWriter(budget: runtime.configuration.limits.outboundQueueBytes)
    }

    var claims: TokenClaims? { state.withLock { $0.claims } }

    // MARK: SubscriberSink

    var eventLoop: (any EventLoop)? { loop }

    func write(_ frame: WireFrame) -> Bool {
        switch writer.write(frame) {
        case .written(let first):
            return first
        case .queued:
            break
        case .overflowed:
            slowConsumer()
        case .stopped:
            break
        }
        return false
    }

    func flush() {
        let frames = writer.flush()
        if frames > 0 { runtime.metrics.delivered.increment(by: Int64(frames)) }
    }

    func slowConsumer() {
        closer.close(code: 4008, reason: "slow consumer", dropQueued: true)
        noteSlowConsumerIfNeeded()
    }

    private let slowNoted = Atomic<Bool>(false)
    private func noteSlowConsumerIfNeeded() {
        if !slowNoted.exchange(true, ordering: .relaxed) { runtime.metrics.slowConsumers.increment() }
    }

    func channelEnded(_ channel: ChannelName) {
        let wasSubscribed = state.withLock { $0.subscriptions.removeValue(forKey: channel) != nil }
        state.withLock { _ = $0.presence.removeValue(forKey: channel) }
        if wasSubscribed { push(Self.reply("unsubscribed", ref: nil) { $0.key("channel"); $0.string(channel.rawValue) }) }
    }

    // MARK: Lifecycle

    /// Leaves every channel and presence set; runs once the connection is closing (its
    /// ``WebSocketConnection`` starts it after any op in flight), so nothing more is fanned out
    /// to it.
    func cleanup() async {
        let (subs, present) = state.withLock { s -> ([HubSubscription], [ChannelName]) in
            let subs = s.subscriptions.values.compactMap { slot -> HubSubscription? in
                if case .live(let sub) = slot { return sub }
                return nil
            }
            let present = Array(s.presence.keys)
            s.subscriptions = [:]
            s.presence = [:]
            return (subs, present)
        }
        for sub in subs { await runtime.hub.unsubscribe(sub) }
        runtime.metrics.subscriptions.decrement(by: Double(subs.count))
        for channel in present { _ = try? await runtime.engine.presence.leave(channel, connectionID: connectionID) }
    }

    /// Looks at the token's lifetime: pushes `token_expiring` before expiry, closes with 4001 at
    /// expiry (or at `authDeadline` when no token arrived). Returns the milliseconds until the
    /// next look is due, or nil once the connection is closing.
    func checkExpiry(authDeadline: Int64) -> Int64? {
        let warning = Int64(runtime.configuration.timing.tokenExpiryWarningSeconds) * 1000
        while true {
            let now = runtime.clock.nowMilliseconds()
            switch state.withLock({ ($0.claims?.expiresAt, $0.warnedFor) }) {
            case (nil, _):
                guard now >= authDeadline else { return authDeadline - now }
                push(Self.error(.noCredentials("no auth frame within \(runtime.configuration.timing.authTimeoutSeconds) s"), ref: nil))
                closer.close(code: 4001, reason: "authentication timeout")
                return nil
            case (let exp?, let warned):
                let expiresAt = exp * 1000
                if now >= expiresAt {
                    push(Self.error(.tokenExpired(), ref: nil))
                    closer.close(code: 4001, reason: "token expired")
                    return nil
                }
                if warned != exp, now >= expiresAt - warning {
                    state.withLock { $0.warnedFor = exp }
                    push(Self.frame("token_expiring") { $0.key("expires_at"); $0.string(Timestamp.iso8601(milliseconds: expiresAt)) })
                    continue
                }
                return (warned == exp ? expiresAt : expiresAt - warning) - now
            }
        }
    }

    /// Verifies a token (initial connect or `auth` refresh). Failure at connect closes with 4001.
    func authenticate(token: String, ref: JSONValue?, initial: Bool) async -> Bool {
        let claims: TokenClaims
        do {
            claims = try await runtime.verifyToken(token)
        } catch {
            push(Self.error(error, ref: ref))
            if initial || self.claims == nil { closer.close(code: 4001, reason: error.code == 40140 ? "token expired" : "token invalid") }
            return false
        }
        let previous = self.claims
        if let previous, previous.clientID != claims.clientID {
            push(Self.error(.tokenInvalid("a refreshed token must carry the same client_id"), ref: ref))
            return false
        }
        let expiresAt = Timestamp.iso8601(milliseconds: claims.expiresAt * 1000)
        // `connected` is queued before the claims are visible to the expiry timer, so it is
        // always the first frame, ahead of any `token_expiring`.
        defer { state.withLock { $0.claims = claims } }
        runtime.registry.authenticated(self)
        if previous == nil {
            push(Self.frame("connected") {
                $0.key("connection_id"); $0.string(connectionID)
                $0.key("client_id"); $0.string(claims.clientID)
                if let uid = claims.userID { $0.key("user_id"); $0.string(uid) }
                $0.key("expires_at"); $0.string(expiresAt)
                $0.key("heartbeat_seconds"); $0.raw(String(runtime.configuration.timing.heartbeatSeconds))
                $0.key("max_message_bytes"); $0.raw(String(runtime.configuration.limits.maxMessageBytes))
            })
        } else {
            push(Self.reply("ack", ref: ref) { $0.key("expires_at"); $0.string(expiresAt) })
            state.withLock { $0.claims = claims }
            await dropSubscriptionsNoLongerAllowed(claims)
        }
        return true
    }

    private func dropSubscriptionsNoLongerAllowed(_ claims: TokenClaims) async {
        let channels = state.withLock { Array($0.subscriptions.keys) }
        for channel in channels {
            guard let settings = try? await runtime.settings(channel) else { continue }
            if (try? runtime.authorize(.subscribe, readOnly: true, on: settings, claims: claims)) == nil {
                await unsubscribe(channel)
                push(Self.reply("unsubscribed", ref: nil) { $0.key("channel"); $0.string(channel.rawValue) })
            }
        }
    }

    // MARK: Frames

    /// Sends a reply or notice, in order with every other frame to this client.
    func push(_ text: String) {
        let frame = WireFrame(text: text)
        if loop.inEventLoop {
            _ = write(frame)
            flush()
        } else {
            loop.execute {
                _ = self.write(frame)
                self.flush()
            }
        }
    }

    static func frame(_ type: String, _ body: (inout JSONWriter) -> Void = { _ in }) -> String {
        var w = JSONWriter()
        w.raw("{\"type\":")
        w.string(type)
        body(&w)
        w.raw("}")
        return w.text
    }

    static func reply(_ type: String, ref: JSONValue?, _ body: (inout JSONWriter) -> Void = { _ in }) -> String {
        frame(type) { w in
            if let ref { w.key("ref"); w.write(ref) }
            body(&w)
        }
    }

    static func error(_ error: RealtimeError, ref: JSONValue?) -> String {
        reply("error", ref: ref) { w in
            w.key("code"); w.raw(String(error.code))
            w.key("message"); w.string(error.message)
            if let retry = error.retryAfterMilliseconds { w.key("retry_after_ms"); w.raw(String(retry)) }
        }
    }
}
