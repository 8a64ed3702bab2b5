/// The storage and transport behind a node, as four narrow parts, each with a memory and a
/// Redis implementation and one conformance suite (Tests/EngineConformanceTests).
///
/// The node's ``ChannelHub`` sits on top: it alone counts local subscribers per channel, runs
/// the live-first / buffer / replay / merge procedure, and remembers the last id it delivered
/// per channel. The parts below only keep storage and transport mechanics.
public struct Engine: Sendable {
    public var configuration: EngineConfiguration
    public var broker: any Broker
    public var presence: any PresenceStore
    public var channels: any ChannelStore
    public var keys: any KeyStore

    public init(configuration: EngineConfiguration, broker: any Broker, presence: any PresenceStore, channels: any ChannelStore, keys: any KeyStore) {
        self.configuration = configuration
        self.broker = broker
        self.presence = presence
        self.channels = channels
        self.keys = keys
    }

    /// Runs the broker (delivering its events to `handler`) and, once a second, the presence
    /// sweep and the channel store's upkeep, until the calling task is cancelled.
    public func run(delivering handler: @escaping @Sendable (EngineEvent) -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await broker.run(delivering: handler) }
            group.addTask {
                while !Task.isCancelled {
                    await channels.upkeep()
                    _ = try? await presence.sweep()
                    try? await Task.sleep(for: .seconds(1), clock: .suspending)
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}

/// Publishes atomically, carries a channel's events to the nodes subscribed to it, and keeps
/// its history as a stream.
///
/// Contract (checked by the conformance suite):
/// - Message ids are `"<ms>-<seq>"` and strictly increase per channel.
/// - `publish` is atomic: the idempotency check, the history append, the idempotency record and
///   the fan-out event happen together or not at all. A repeated idempotency key within the
///   window returns the original id with status `duplicate` and publishes nothing.
/// - After `subscribe(channel)` returns, every later message and presence event of that channel
///   reaches `run`'s handler in order, until `unsubscribe`, except while the link is down: the
///   broker then sends `interrupted`, and `restored` once every subscribed channel is live again.
///   Subscriptions are not counted: the hub calls `subscribe` once per channel and never twice
///   in a row without an `unsubscribe` between.
/// - `position` read after `subscribe` returns names the newest message published before it;
///   everything newer arrives live.
/// - Errors: `engineUnavailable` (50300) means nothing was sent; `outcomeUnknown` (50400) means
///   a write was sent and not answered, so it may have been applied.
public protocol Broker: Sendable {
    /// Runs the broker's link and background work, delivering events to `handler`, until the
    /// calling task is cancelled.
    func run(delivering handler: @escaping @Sendable (EngineEvent) -> Void) async throws
    func subscribe(_ channel: ChannelName) async throws
    func unsubscribe(_ channel: ChannelName) async
    /// Publishes with the channel's stored history settings (the defaults when it has none),
    /// read in the same atomic step.
    func publish(_ request: PublishRequest) async throws -> PublishOutcome
    func history(_ channel: ChannelName, _ query: HistoryQuery) async throws -> HistoryPage
    /// At most `limit` retained messages after `position`, oldest first, for gap-free resume.
    func replay(_ channel: ChannelName, after position: MessageID, limit: Int) async throws -> Replay
    /// The id of the newest message ever published on the channel (`.zero` when none).
    func position(_ channel: ChannelName) async throws -> MessageID
    /// The channel's epoch: it changes when the stream loses entries subscribers may have seen,
    /// so positions taken before are void. Made by the first publish ('' before it; a stream
    /// whose metadata was lost gets a new one).
    func epoch(_ channel: ChannelName) async throws -> String
    /// Changes the epoch if it is still `from` (one change however many nodes notice the loss
    /// at once) and publishes `epochChanged`; returns the epoch now.
    func changeEpoch(_ channel: ChannelName, from: String) async throws -> String
    /// Throws unless storage and the event round trip work.
    func checkReady() async throws
}

/// Presence members per channel, with expiry.
///
/// Contract:
/// - `enter` adds or replaces the member (keyed by connection id) and publishes `enter` or
///   `update` on the channel's event path; `leave` removes it and publishes one `leave`.
/// - A member expires `presenceTTLSeconds` after its last `enter` or `refresh`, by one clock
///   for the whole cluster; `sweep` removes expired members with exactly one `leave` each,
///   however many nodes sweep at once.
/// - `refresh` extends live members and enters again (with an `enter` event) those that were
///   swept meanwhile; it returns the ones it entered again.
public protocol PresenceStore: Sendable {
    @discardableResult
    func enter(_ channel: ChannelName, member: PresenceMember) async throws -> PresenceEvent.Action
    @discardableResult
    func leave(_ channel: ChannelName, connectionID: String) async throws -> Bool
    func members(_ channel: ChannelName) async throws -> [PresenceMember]
    @discardableResult
    func refresh(_ members: [(channel: ChannelName, member: PresenceMember)]) async throws -> [PresenceEvent]
    @discardableResult
    func sweep() async throws -> Int
}

/// Channel settings and the registry of known channels.
///
/// Contract: settings are shared by every node; a channel never created has the defaults;
/// `delete` removes history, presence (publishing `leave` for each member first), settings and
/// idempotency records, then publishes `channelDeleted`.
public protocol ChannelStore: Sendable {
    /// Creates a channel; returns the stored settings and whether this call created them.
    /// Throws `40900` when the channel exists with different settings.
    func create(_ settings: ChannelSettings) async throws -> (settings: ChannelSettings, created: Bool)
    /// The channel's settings: explicit ones, or the defaults for a channel never created.
    func settings(_ name: ChannelName) async throws -> ChannelSettings
    /// Known channels (created, or used since), sorted by name, after the cursor name.
    func list(limit: Int, after cursor: ChannelName?) async throws -> (channels: [ChannelSettings], hasMore: Bool)
    @discardableResult
    func delete(_ name: ChannelName) async throws -> Bool
    func stats(_ name: ChannelName) async throws -> ChannelStats
    /// This node's number of local subscribers on a channel, for cluster-wide figures. Called by
    /// one task at a time, so a later report never loses to an earlier one.
    func reportLocalSubscribers(_ channel: ChannelName, count: Int) async throws
    /// Periodic upkeep (the node's liveness mark), once a second.
    func upkeep() async
}

/// API key records, shared by every node.
///
/// Contract: `key(id:)` may serve a cached record for at most 2 s; `revoke` marks the key
/// revoked and publishes `keyRevoked` to every node.
public protocol KeyStore: Sendable {
    func store(_ record: APIKeyRecord) async throws
    func key(id: String) async throws -> APIKeyRecord?
    /// Keys not revoked.
    func list() async throws -> [APIKeyRecord]
    @discardableResult
    func revoke(id: String) async throws -> Bool
}
