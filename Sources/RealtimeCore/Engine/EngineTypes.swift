/// A handler of engine events, held by reference.
///
/// **Decision**: never keep a closure directly in a `Mutex` (`Mutex<((EngineEvent) -> Void)?>`):
/// with optimizations, Swift 6.3's `withLock { $0 }` writes back a reabstracted copy of the
/// closure on every read, so each call wraps it in one more thunk, and after some tens of
/// thousands of events calling it overflows the stack (found by `bench/shards.sh`: a node
/// crashed with 116,000 nested thunk frames). A class reference has no abstraction to change.
public final class EventHandler: Sendable {
    public let deliver: @Sendable (EngineEvent) -> Void

    public init(_ deliver: @escaping @Sendable (EngineEvent) -> Void) {
        self.deliver = deliver
    }
}

/// What the engine tells the node: traffic on subscribed channels, node-wide control events,
/// and the state of its live link.
public enum EngineEvent: Sendable {
    /// A message published on a channel the broker is subscribed to. Per channel, messages
    /// arrive in id order; the hub drops any id at or below the last it delivered.
    case message(Message)
    /// A presence change on a subscribed channel, in the order the store applied it.
    case presence(PresenceEvent)
    /// The channel was deleted: its history and presence are gone; subscriptions end.
    case channelDeleted(ChannelName)
    /// An API key was revoked: tokens it minted are no longer valid on any node.
    case keyRevoked(keyID: String)
    /// Live delivery stopped (the broker's link dropped): events of every subscribed channel may
    /// be missed from now until `restored`.
    case interrupted
    /// Every subscribed channel is live again. What was published in between is only in
    /// history; the hub reads it from there.
    case restored
    /// The channel's epoch changed: its stream lost entries that subscribers may have seen (a
    /// failover to a replica that missed the last writes). Positions from before are void.
    case epochChanged(ChannelName, epoch: String)
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

/// One page of retained messages after a resume position.
public struct Replay: Sendable, Equatable {
    /// Retained messages with an id greater than the position, oldest first, at most the limit.
    public var messages: [Message]
    /// True when nothing published after the position has been trimmed or expired, so the pages
    /// from this position are exactly what the client missed.
    public var complete: Bool
    /// True when more retained messages follow the last one of this page.
    public var hasMore: Bool
    /// The channel's epoch now ('' before its first publish).
    public var epoch: String
    /// The newest id the channel's stream has ever held (`.zero` when none).
    public var newest: MessageID
    /// True when the stream should still hold the position (it is above everything trimmed or
    /// expired) and does not: entries were lost, as after a failover to a replica that missed
    /// the last writes, or the position was never this stream's.
    public var positionLost: Bool

    public init(messages: [Message], complete: Bool, hasMore: Bool = false, epoch: String = "", newest: MessageID = .zero, positionLost: Bool = false) {
        self.messages = messages
        self.complete = complete
        self.hasMore = hasMore
        self.epoch = epoch
        self.newest = newest
        self.positionLost = positionLost
    }
}

/// Settings every engine needs, shared by all nodes of a cluster.
public struct EngineConfiguration: Sendable, Equatable {
    /// A member whose heartbeat is older than this is removed, with one `leave` event.
    public var presenceTTLSeconds: Int
    /// How long an idempotency key keeps returning the original message id.
    public var idempotencyWindowSeconds: Int
    public var channelDefaults: ChannelDefaults
    /// Messages read per round trip when replaying or catching up (bounded replies keep one
    /// slow read from holding up the commands pipelined behind it).
    public var replayPageSize: Int

    public init(
        presenceTTLSeconds: Int = 30, idempotencyWindowSeconds: Int = 86_400, channelDefaults: ChannelDefaults = .init(),
        replayPageSize: Int = 500
    ) {
        self.presenceTTLSeconds = presenceTTLSeconds
        self.idempotencyWindowSeconds = idempotencyWindowSeconds
        self.channelDefaults = channelDefaults
        self.replayPageSize = replayPageSize
    }
}
