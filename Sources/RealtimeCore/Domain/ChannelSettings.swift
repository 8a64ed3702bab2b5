/// How a channel authorizes its operations (contract section 4).
public enum ChannelType: String, Sendable, Codable, CaseIterable {
    /// Any valid token may subscribe, read history and presence; publish and presence entry need the capability.
    case `public`
    /// Every operation needs the capability.
    case `private`
    /// As private, and subscribing with the `presence` capability enters presence automatically.
    case presence
}

/// A channel's settings: explicit after `POST /channels`, implicit (defaults) otherwise.
public struct ChannelSettings: Sendable, Equatable {
    public var name: ChannelName
    public var type: ChannelType
    public var historySize: Int
    public var historyTTLSeconds: Int
    /// Milliseconds since the epoch.
    public var createdAt: Int64
    /// False for a channel that exists only implicitly, by use.
    public var explicit: Bool
    /// When a publish is acknowledged: once the primary applied it, or once a replica has it too.
    public var durability: Durability

    public init(
        name: ChannelName, type: ChannelType, historySize: Int, historyTTLSeconds: Int, createdAt: Int64, explicit: Bool,
        durability: Durability = .primary
    ) {
        self.durability = durability
        self.name = name
        self.type = type
        self.historySize = historySize
        self.historyTTLSeconds = historyTTLSeconds
        self.createdAt = createdAt
        self.explicit = explicit
    }

    /// The channel's id on the wire: its name, which is already unique and stable across nodes.
    public var channelID: String { name.rawValue }
}

/// When a publish on a channel is acknowledged (`durability` in the channel's settings).
public enum Durability: String, Sendable, Equatable {
    /// Once the primary applied it (Redis replication is asynchronous: a failover right after
    /// may lose it; the epoch then tells resuming subscribers).
    case primary
    /// Once at least one replica has it too (Redis `WAIT 1`); without that in time the publish
    /// answers `50400` (applied on the primary, not yet safe), and a retry with the same
    /// idempotency key waits again. The memory engine has no replicas: there it means `primary`.
    case replicated
}

/// Defaults for channels used without being created.
public struct ChannelDefaults: Sendable, Equatable {
    public var type: ChannelType
    public var historySize: Int
    public var historyTTLSeconds: Int
    /// Upper bound accepted for `history_size`.
    public var maxHistorySize: Int
    /// Upper bound accepted for `history_ttl_seconds` (one year by default, contract §10).
    public var maxHistoryTTLSeconds: Int

    public init(
        type: ChannelType = .private, historySize: Int = 1000, historyTTLSeconds: Int = 86_400, maxHistorySize: Int = 100_000,
        maxHistoryTTLSeconds: Int = 31_536_000
    ) {
        self.type = type
        self.historySize = historySize
        self.historyTTLSeconds = historyTTLSeconds
        self.maxHistorySize = maxHistorySize
        self.maxHistoryTTLSeconds = maxHistoryTTLSeconds
    }
}

/// Live figures for `GET /channels/{name}`.
public struct ChannelStats: Sendable, Equatable {
    public var subscribers: Int
    public var presenceMembers: Int
    public var lastMessageID: MessageID?

    public init(subscribers: Int, presenceMembers: Int, lastMessageID: MessageID?) {
        self.subscribers = subscribers
        self.presenceMembers = presenceMembers
        self.lastMessageID = lastMessageID
    }
}
