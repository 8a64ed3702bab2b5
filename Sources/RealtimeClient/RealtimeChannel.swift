import Foundation
import Synchronization

/// What happened to a channel's subscription.
public enum ChannelEvent: Sendable, Equatable {
    /// Subscribed (again); `resumed` tells whether history covered the gap since the last id.
    case subscribed(resumed: Bool)
    /// A resubscribe could not resume from `sinceID`: messages were missed beyond history.
    case missedMessages(sinceID: String)
    /// The server ended the subscription (channel deleted, or capability lost).
    case unsubscribed
}

/// One channel on a ``RealtimeConnection``: its messages, presence events and subscription
/// events as async sequences, and the ops on it.
public final class RealtimeChannel: Sendable {
    public let name: String
    public let messages: AsyncStream<RealtimeMessage>
    public let presenceEvents: AsyncStream<PresenceEvent>
    public let events: AsyncStream<ChannelEvent>
    let connection: RealtimeConnection

    private let messageSink: AsyncStream<RealtimeMessage>.Continuation
    private let presenceSink: AsyncStream<PresenceEvent>.Continuation
    private let eventSink: AsyncStream<ChannelEvent>.Continuation

    private struct State {
        var wanted = false
        var lastID: String?
        /// The channel's epoch from the last `subscribed`: sent back with `since_id`.
        var epoch: String?
        /// Entered presence data (`.some(nil)`: entered without data); nil: not entered.
        var presence: RealtimeJSON??
        /// Bumped by every enter/update, so a newer call is always sent.
        var presenceVersion = 0
        /// (connection generation, presence version) last sent.
        var presenceSent: (generation: Int, version: Int)?
        /// The subscribe of a connection generation, shared by the caller of `subscribe` and the
        /// reconnect path so each connection subscribes once.
        var subscribing: (generation: Int, task: Task<Bool, any Error>)?
    }

    private let state = Mutex(State())

    init(name: String, connection: RealtimeConnection) {
        self.name = name
        self.connection = connection
        (messages, messageSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        (presenceEvents, presenceSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(100))
    }

    /// The id of the last message received; resubscribes resume from it.
    public var lastID: String? { state.withLock { $0.lastID } }

    /// The channel's epoch from the last `subscribed`. Store it with ``lastID``: a resume with
    /// both answers `false` (``ChannelEvent/missedMessages(sinceID:)``) when a Redis failover
    /// lost messages after that id, instead of leaving a silent gap.
    public var epoch: String? { state.withLock { $0.epoch } }

    /// Subscribes now (waiting for the connection) and after every reconnect.
    /// `sinceID` (with the `epoch` stored alongside it) resumes from a message id you stored earlier.
    @discardableResult
    public func subscribe(sinceID: String? = nil, epoch: String? = nil) async throws -> Bool {
        state.withLock {
            $0.wanted = true
            if let sinceID {
                $0.lastID = sinceID
                $0.epoch = epoch
            }
        }
        try await connection.waitUntilConnected()
        return try await subscription(in: await connection.generation).value
    }

    public func unsubscribe() async throws {
        state.withLock { $0.wanted = false }
        _ = try await connection.request("unsubscribe", ["channel": .string(name)])
    }

    /// Publishes over the connection (needs the `publish` capability).
    @discardableResult
    /// Publishes once: with `idempotencyKey`, or a key of the SDK's own, retried (per the
    /// connection's `publishRetry`) on `50300`/`50400`/`42900`, a reply that never came or a
    /// connection that was down, so a retry never doubles it.
    public func publish(event: String, data: RealtimeJSON = .null, idempotencyKey: String? = nil) async throws -> PublishResult {
        let fields: [String: RealtimeJSON] = [
            "channel": .string(name), "event": .string(event), "data": data,
            "idempotency_key": .string(idempotencyKey ?? RetryPolicy.newIdempotencyKey()),
        ]
        let connection = self.connection
        let reply = try await connection.options.publishRetry.run { try await connection.request("publish", fields) }
        return PublishResult(messageID: reply["message_id"]?.string ?? "", channel: name, timestamp: nil, status: reply["status"]?.string ?? "published")
    }

    /// Enters presence; entered again after every reconnect until ``leavePresence()``.
    public func enterPresence(_ data: RealtimeJSON? = nil) async throws {
        try await setPresence(data, op: "presence.enter")
    }

    public func updatePresence(_ data: RealtimeJSON?) async throws {
        try await setPresence(data, op: "presence.update")
    }

    private func setPresence(_ data: RealtimeJSON?, op: String) async throws {
        let version = state.withLock { s -> Int in
            s.presence = .some(data)
            s.presenceVersion += 1
            return s.presenceVersion
        }
        try await connection.waitUntilConnected()
        try await sendPresence(version: version, generation: await connection.generation, op: op)
    }

    /// Sends presence unless this version was already sent on this connection (by the
    /// reconnect path, which always sends the newest data).
    private func sendPresence(version: Int, generation: Int, op: String) async throws {
        let data = state.withLock { s -> RealtimeJSON?? in
            guard let data = s.presence, s.presenceVersion == version else { return nil }
            if let sent = s.presenceSent, sent.generation == generation, sent.version >= version { return nil }
            s.presenceSent = (generation, version)
            return data
        }
        guard let data else { return }
        _ = try await connection.request(op, presenceFields(data))
    }

    public func leavePresence() async throws {
        state.withLock {
            $0.presence = nil
            $0.presenceSent = nil
        }
        _ = try await connection.request("presence.leave", ["channel": .string(name)])
    }

    public func presence() async throws -> [PresenceMember] {
        let reply = try await connection.request("presence.get", ["channel": .string(name)])
        return try Self.decode([PresenceMember].self, reply["members"] ?? [])
    }

    public func history(limit: Int? = nil, forwards: Bool = false, sinceID: String? = nil) async throws -> [RealtimeMessage] {
        var fields: [String: RealtimeJSON] = ["channel": .string(name)]
        if let limit { fields["limit"] = .number(Double(limit)) }
        if forwards { fields["direction"] = "forwards" }
        if let sinceID { fields["since_id"] = .string(sinceID) }
        let reply = try await connection.request("history", fields)
        return try Self.decode([RealtimeMessage].self, reply["messages"] ?? [])
    }

    // MARK: From the connection

    func connectionReady(generation: Int) async {
        let (wanted, version) = state.withLock { ($0.wanted, $0.presence == nil ? nil : $0.presenceVersion) }
        if wanted { _ = try? await subscription(in: generation).value }
        if let version { try? await sendPresence(version: version, generation: generation, op: "presence.enter") }
    }

    private func subscription(in generation: Int) -> Task<Bool, any Error> {
        state.withLock { s in
            if let current = s.subscribing, current.generation == generation { return current.task }
            let task = Task { try await self.resubscribe() }
            s.subscribing = (generation, task)
            return task
        }
    }

    private func resubscribe() async throws -> Bool {
        let (since, epoch) = state.withLock { ($0.lastID, $0.epoch) }
        var fields: [String: RealtimeJSON] = ["channel": .string(name)]
        if let since { fields["since_id"] = .string(since) }
        if since != nil, let epoch, !epoch.isEmpty { fields["epoch"] = .string(epoch) }
        let reply = try await connection.request("subscribe", fields)
        let resumed = reply["resumed"]?.bool ?? false
        state.withLock { $0.epoch = reply["epoch"]?.string }
        eventSink.yield(.subscribed(resumed: resumed))
        if let since, !resumed { eventSink.yield(.missedMessages(sinceID: since)) }
        return resumed
    }

    func deliver(_ message: RealtimeMessage) {
        state.withLock { $0.lastID = message.id }
        messageSink.yield(message)
    }

    func deliver(_ event: PresenceEvent) { presenceSink.yield(event) }

    /// A `subscribed` without a `ref`: the node found messages missing (trimmed before it could
    /// read them back, or lost in a Redis failover) and goes on; the epoch may be new.
    func resynced(epoch: String?) {
        let since = state.withLock { s -> String? in
            if let epoch { s.epoch = epoch }
            return s.lastID
        }
        eventSink.yield(.subscribed(resumed: false))
        if let since { eventSink.yield(.missedMessages(sinceID: since)) }
    }

    func ended() {
        state.withLock { $0.wanted = false }
        eventSink.yield(.unsubscribed)
    }

    private func presenceFields(_ data: RealtimeJSON?) -> [String: RealtimeJSON] {
        var fields: [String: RealtimeJSON] = ["channel": .string(name)]
        if let data { fields["data"] = data }
        return fields
    }

    static func decode<T: Decodable>(_ type: T.Type, _ json: RealtimeJSON) throws -> T {
        try JSONDecoder().decode(T.self, from: JSONEncoder().encode(json))
    }
}
