import Logging
import NIOCore
import NIOWebSocket
import RealtimeCore
import Synchronization

/// One WebSocket connection's ops: authentication, its subscriptions and presence.
///
/// An actor whose executor is the connection's event loop: its state (claims, subscription
/// table, presence memberships, publish bucket) lives on that loop, beside the connection
/// handler's, with no lock. Ops run in arrival order in the session's ops task (``run(_:)``),
/// which takes them from its ``WebSocketConnection`` one at a time and exists only while ops
/// wait. Every frame to the client
/// (replies and fan-out alike) goes through its ``FrameWriter`` on the loop, in the order sent.
actor WebSocketSession: SubscriberSink {
    nonisolated let connectionID: String
    nonisolated let runtime: GatewayRuntime
    nonisolated let writer: FrameWriter
    nonisolated let loop: any EventLoop
    /// The delivery metric's count on this loop.
    nonisolated let delivered: LoopTally
    /// Counted among the node's unauthenticated connections (see `ConnectionRegistry`).
    nonisolated let awaitingAuth = Atomic<Bool>(false)
    private nonisolated let slowNoted = Atomic<Bool>(false)

    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.executor.asUnownedSerialExecutor() }

    enum SubscriptionSlot {
        /// Subscribe in progress; a deletion meanwhile removes the slot.
        case pending
        case live(HubSubscription)
    }

    /// The transport: closes go to its state machine, the token's expiry to its timer.
    weak var connection: WebSocketConnection?
    private(set) var claims: TokenClaims?
    private var subscriptions: [ChannelName: SubscriptionSlot] = [:]
    /// Presence memberships with the member as last entered, for the heartbeat's refresh.
    private var presence: [ChannelName: PresenceMember] = [:]
    private var publishBucket: TokenBucket?

    init(runtime: GatewayRuntime, channel: any Channel) {
        self.connectionID = "conn_" + RandomID.hex(bytes: 12)
        self.runtime = runtime
        self.loop = channel.eventLoop
        self.delivered = runtime.metrics.deliveredPerLoop.tally(for: channel.eventLoop)
        self.writer = FrameWriter(budget: runtime.configuration.limits.outboundQueueBytes)
    }

    /// Runs `body` on the session's loop: at once when called there, else queued to it.
    nonisolated func onLoop(_ body: @escaping @Sendable (isolated WebSocketSession) -> Void) {
        if loop.inEventLoop {
            assumeIsolated(body)
        } else {
            loop.execute { self.assumeIsolated(body) }
        }
    }

    /// Asks for the connection to close (from any thread); the first request wins.
    nonisolated func close(code: UInt16, reason: String, dropQueued: Bool = false) {
        onLoop { $0.connection?.requestClose(.init(code: code, reason: reason, dropQueued: dropQueued)) }
    }

    // MARK: The ops task

    /// The ops task: handles each op its connection hands over, in order, until none is left
    /// (or the connection closes).
    func run(_ connection: WebSocketConnection) async {
        while let work = connection.nextWork() {
            switch work {
            case .authenticate(let token):
                _ = await authenticate(token: token, ref: nil, initial: true)
            case .message(let bytes):
                await handle(bytes)
            case .binary:
                push(Self.error(.badRequest("binary frames are not ops: send each op as a JSON text frame"), ref: nil))
            }
        }
    }

    /// Leaves every channel and presence set, once the connection is closing and no op is in
    /// flight; nothing more is fanned out to it after that.
    func cleanup() async {
        let subs = subscriptions.values.compactMap { slot -> HubSubscription? in
            if case .live(let sub) = slot { return sub }
            return nil
        }
        let present = Array(presence.keys)
        subscriptions = [:]
        setPresence([:])
        for sub in subs { await runtime.hub.unsubscribe(sub) }
        runtime.metrics.subscriptions.decrement(by: Double(subs.count))
        for channel in present { _ = try? await runtime.engine.presence.leave(channel, connectionID: connectionID) }
    }

    // MARK: SubscriberSink (called on the loop, or for closes from anywhere)

    nonisolated var eventLoop: (any EventLoop)? { loop }

    nonisolated func write(_ frame: WireFrame) -> Bool {
        written(writer.write(frame))
    }

    nonisolated func write(_ run: WireFrameRun) -> Bool {
        written(writer.write(run.bytes, frames: run.frames.count))
    }

    private nonisolated func written(_ result: FrameWriter.WriteResult) -> Bool {
        switch result {
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

    nonisolated func flush() {
        let frames = writer.flush()
        if frames > 0 { delivered.add(frames) }
    }

    nonisolated func slowConsumer() {
        close(code: 4008, reason: "slow consumer", dropQueued: true)
        if !slowNoted.exchange(true, ordering: .relaxed) { runtime.metrics.slowConsumers.increment() }
    }

    nonisolated func channelEnded(_ channel: ChannelName) {
        onLoop { session in
            let wasSubscribed = session.subscriptions.removeValue(forKey: channel) != nil
            session.removePresence(channel)
            if wasSubscribed { session.push(Self.reply("unsubscribed", ref: nil) { $0.key("channel"); $0.string(channel.rawValue) }) }
        }
    }

    // MARK: Authentication

    /// Verifies a token (initial connect or `auth` refresh). Failure at connect closes with 4001.
    func authenticate(token: String, ref: JSONValue?, initial: Bool) async -> Bool {
        let claims: TokenClaims
        do {
            claims = try await runtime.verifyToken(token)
        } catch {
            push(Self.error(error, ref: ref))
            if initial || self.claims == nil { close(code: 4001, reason: error.code == 40140 ? "token expired" : "token invalid") }
            return false
        }
        let previous = self.claims
        if let previous, previous.clientID != claims.clientID {
            push(Self.error(.tokenInvalid("a refreshed token must carry the same client_id"), ref: ref))
            return false
        }
        let expiresAt = Timestamp.iso8601(milliseconds: claims.expiresAt * 1000)
        self.claims = claims
        runtime.registry.authenticated(self, keyID: claims.keyID)
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
        }
        // After `connected`, so that is always the first frame, ahead of any `token_expiring`.
        connection?.tokenAccepted(expiresAt: claims.expiresAt)
        if previous != nil { await dropSubscriptionsNoLongerAllowed(claims) }
        return true
    }

    private func dropSubscriptionsNoLongerAllowed(_ claims: TokenClaims) async {
        for channel in Array(subscriptions.keys) {
            guard let settings = try? await runtime.settings(channel) else { continue }
            if (try? runtime.authorize(.subscribe, readOnly: true, on: settings, claims: claims)) == nil {
                await unsubscribe(channel)
                push(Self.reply("unsubscribed", ref: nil) { $0.key("channel"); $0.string(channel.rawValue) })
            }
        }
    }

    // MARK: Subscriptions and presence (the table is changed only here)

    /// Reserves a slot for a subscribe in progress.
    func reserveSubscription(_ channel: ChannelName) throws(RealtimeError) {
        let limit = runtime.configuration.limits.maxSubscriptionsPerConnection
        guard subscriptions[channel] == nil else { throw .conflict("already subscribed to '\(channel)'") }
        guard subscriptions.count < limit else { throw .badRequest("subscription limit of \(limit) channels reached") }
        subscriptions[channel] = .pending
    }

    /// Makes a reserved slot live; false when it was dropped meanwhile (channel deleted).
    func activateSubscription(_ subscription: HubSubscription) -> Bool {
        guard case .pending = subscriptions[subscription.channel] else { return false }
        subscriptions[subscription.channel] = .live(subscription)
        return true
    }

    func dropReservation(_ channel: ChannelName) {
        if case .pending = subscriptions[channel] { subscriptions[channel] = nil }
    }

    func unsubscribe(_ channel: ChannelName) async {
        if case .live(let sub) = subscriptions.removeValue(forKey: channel) {
            await runtime.hub.unsubscribe(sub)
            runtime.metrics.subscriptions.decrement()
        }
        try? await leavePresence(channel)
    }

    func isPresent(on channel: ChannelName) -> Bool { presence[channel] != nil }
    var presenceCount: Int { presence.count }

    func recordPresence(_ channel: ChannelName, _ member: PresenceMember) {
        var next = presence
        next[channel] = member
        setPresence(next)
    }

    /// Forgets a membership; true when there was one.
    @discardableResult
    func removePresence(_ channel: ChannelName) -> Bool {
        guard presence[channel] != nil else { return false }
        var next = presence
        next[channel] = nil
        setPresence(next)
        return true
    }

    /// Keeps the registry's list of sessions with presence (the heartbeat's work) in step.
    private func setPresence(_ next: [ChannelName: PresenceMember]) {
        if next.isEmpty != presence.isEmpty { runtime.registry.presenceChanged(self, present: !next.isEmpty) }
        presence = next
    }

    /// This connection's presence memberships, for the node's heartbeat.
    var presenceMemberships: [(channel: ChannelName, member: PresenceMember)] {
        presence.map { (channel: $0.key, member: $0.value) }
    }

    /// Takes one publish from the connection's rate bucket; the wait in ms when empty.
    func takePublishToken(now: Int64) -> Int? {
        if publishBucket == nil { publishBucket = TokenBucket(rate: runtime.configuration.limits.connectionPublishRate, now: now) }
        return publishBucket!.take(now: now)
    }

    // MARK: Frames

    /// Sends a reply or notice, in order with every other frame to this client.
    nonisolated func push(_ text: String) {
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
