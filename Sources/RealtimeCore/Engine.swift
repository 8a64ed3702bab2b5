/// What an engine tells the node: traffic on attached channels, and node-wide control events.
public enum EngineEvent: Sendable {
    /// A message published on a channel this node is attached to. Per channel, messages arrive
    /// in id order, each once.
    case message(Message)
    /// A presence change on a channel this node is attached to, in the order the engine applied it.
    case presence(PresenceEvent)
    /// The channel was deleted: its history and presence are gone; subscriptions end.
    case channelDeleted(ChannelName)
    /// An API key was revoked: tokens it minted are no longer valid on any node.
    case keyRevoked(keyID: String)
}

/// A history read: `limit` messages strictly after `after` and up to and including `through`,
/// oldest first (`forwards`) or newest first (`backwards`).
public struct HistoryQuery: Sendable, Equatable {
    public enum Direction: String, Sendable { case forwards, backwards }
    public var limit: Int
    public var direction: Direction
    public var after: MessageID?
    public var through: MessageID?

    public init(limit: Int, direction: Direction, after: MessageID? = nil, through: MessageID? = nil) {
        self.limit = limit
        self.direction = direction
        self.after = after
        self.through = through
    }
}

public struct HistoryPage: Sendable, Equatable {
    public var messages: [Message]
    /// True when more messages match the query beyond `limit`.
    public var hasMore: Bool

    public init(messages: [Message], hasMore: Bool) {
        self.messages = messages
        self.hasMore = hasMore
    }
}

/// Retained messages after a resume position.
public struct Replay: Sendable, Equatable {
    /// Every retained message with an id greater than the position, oldest first.
    public var messages: [Message]
    /// True when nothing published after the position has been trimmed or expired, so
    /// `messages` is exactly what the client missed.
    public var complete: Bool

    public init(messages: [Message], complete: Bool) {
        self.messages = messages
        self.complete = complete
    }
}

/// Settings every engine needs, shared by all nodes of a cluster.
public struct EngineConfiguration: Sendable, Equatable {
    /// A member whose heartbeat is older than this is removed, with one `leave` event.
    public var presenceTTLSeconds: Int
    /// How long an idempotency key keeps returning the original message id.
    public var idempotencyWindowSeconds: Int
    public var channelDefaults: ChannelDefaults

    public init(presenceTTLSeconds: Int = 30, idempotencyWindowSeconds: Int = 86_400, channelDefaults: ChannelDefaults = .init()) {
        self.presenceTTLSeconds = presenceTTLSeconds
        self.idempotencyWindowSeconds = idempotencyWindowSeconds
        self.channelDefaults = channelDefaults
    }
}

/// The storage and transport behind a node: history, fan-out between nodes, presence, channel
/// settings and API keys. Designed around Redis semantics; the memory engine mirrors them.
///
/// Contract every implementation keeps (checked by the shared conformance suite):
/// - Message ids are `"<ms>-<seq>"` and strictly increase per channel.
/// - `publish` is atomic: the idempotency check, the history append, the idempotency record and
///   the fan-out event happen together or not at all. A repeated idempotency key within the
///   window returns the original id with status `duplicate` and publishes nothing.
/// - After `attach(channel)` returns, every message and presence event of that channel reaches
///   the event handler given to `run`, in order, once, until the matching `detach`. Attach and
///   detach are counted: the node is detached after as many detaches as attaches.
/// - Presence members expire `presenceTTLSeconds` after their last heartbeat; an expired member is
///   removed with exactly one `leave` event, however many nodes sweep at once.
/// - Every operation either completes or throws; `RealtimeError.engineUnavailable` (50300)
///   means nothing was changed.
public protocol Engine: Sendable {
    var configuration: EngineConfiguration { get }

    /// Runs the engine's background work (pub/sub, sweeps, heartbeats) and delivers events to
    /// `handler` until the calling task is cancelled or the service shuts down gracefully.
    func run(delivering handler: @escaping @Sendable (EngineEvent) -> Void) async throws

    /// Starts (or counts another) delivery of the channel's events to this node.
    func attach(_ channel: ChannelName) async throws
    /// Ends one delivery started by `attach`.
    func detach(_ channel: ChannelName) async

    /// Publishes with the channel's stored history settings (the defaults when it has none),
    /// read in the same atomic step; see the protocol's atomicity contract.
    func publish(_ request: PublishRequest) async throws -> PublishOutcome
    func history(_ channel: ChannelName, _ query: HistoryQuery) async throws -> HistoryPage
    /// Retained messages after `position`, for gap-free resume.
    func replay(_ channel: ChannelName, after position: MessageID) async throws -> Replay

    /// Adds or replaces the member (keyed by connection id) and publishes `enter` or `update`.
    /// Returns the action published.
    @discardableResult
    func enterPresence(_ channel: ChannelName, member: PresenceMember) async throws -> PresenceEvent.Action
    /// Removes the member and publishes `leave`; returns false when it was not present.
    @discardableResult
    func leavePresence(_ channel: ChannelName, connectionID: String) async throws -> Bool
    func presenceMembers(_ channel: ChannelName) async throws -> [PresenceMember]
    /// Pushes the expiry of these members `presenceTTLSeconds` into the future.
    func refreshPresence(_ members: [(channel: ChannelName, connectionID: String)]) async throws
    /// Removes members whose heartbeat is older than the TTL, publishing one `leave` each.
    /// Returns how many this call removed.
    @discardableResult
    func sweepExpiredPresence() async throws -> Int

    /// Creates a channel; returns the stored settings and whether this call created them.
    /// Throws `40900` when the channel exists with different settings.
    func createChannel(_ settings: ChannelSettings) async throws -> (settings: ChannelSettings, created: Bool)
    /// The channel's settings: explicit ones, or the defaults for a channel never created.
    func channelSettings(_ name: ChannelName) async throws -> ChannelSettings
    /// Known channels (created, or used since), sorted by name, after the cursor name.
    func listChannels(limit: Int, after cursor: ChannelName?) async throws -> (channels: [ChannelSettings], hasMore: Bool)
    /// Removes history, presence (publishing `leave` for each member first), settings and
    /// idempotency records, then publishes `channelDeleted`. Returns false when unknown.
    @discardableResult
    func deleteChannel(_ name: ChannelName) async throws -> Bool
    func channelStats(_ name: ChannelName) async throws -> ChannelStats
    /// This node's current number of local subscribers on a channel, for cluster-wide figures.
    func reportLocalSubscribers(_ channel: ChannelName, count: Int) async

    func storeKey(_ record: APIKeyRecord) async throws
    func key(id: String) async throws -> APIKeyRecord?
    /// Keys not revoked.
    func listKeys() async throws -> [APIKeyRecord]
    /// Marks the key revoked and publishes `keyRevoked`; false when unknown or already revoked.
    @discardableResult
    func revokeKey(id: String) async throws -> Bool

    /// Throws unless storage and the event round trip work.
    func checkReady() async throws
}
