/// A message as pushed to subscribers and returned by history.
public struct RealtimeMessage: Sendable, Hashable, Codable {
    public var id: String
    public var channel: String
    public var event: String
    public var data: RealtimeJSON
    public var clientID: String?
    public var timestamp: String

    enum CodingKeys: String, CodingKey {
        case id, channel, event, data, timestamp
        case clientID = "client_id"
    }
}

public struct PresenceMember: Sendable, Hashable, Codable {
    public var clientID: String
    public var userID: String?
    public var connectionID: String?
    public var data: RealtimeJSON?
    public var enteredAt: String?
    public var updatedAt: String?
    /// With `groupBy: "user"`: the user's number of connections.
    public var connections: Int?

    enum CodingKeys: String, CodingKey {
        case data, connections
        case clientID = "client_id"
        case userID = "user_id"
        case connectionID = "connection_id"
        case enteredAt = "entered_at"
        case updatedAt = "updated_at"
    }
}

public struct PresenceEvent: Sendable, Hashable, Codable {
    public enum Action: String, Sendable, Codable { case enter, update, leave }
    public var channel: String
    public var action: Action
    public var member: PresenceMember
}

public struct PublishResult: Sendable, Hashable, Codable {
    public var messageID: String
    public var channel: String?
    public var timestamp: String?
    /// `published`, or `duplicate` when the idempotency key was seen before.
    public var status: String

    enum CodingKeys: String, CodingKey {
        case channel, timestamp, status
        case messageID = "message_id"
    }
}

public struct BatchMessage: Sendable, Hashable, Codable {
    public var channel: String
    public var event: String
    public var data: RealtimeJSON
    public var idempotencyKey: String?

    public init(channel: String, event: String, data: RealtimeJSON, idempotencyKey: String? = nil) {
        self.channel = channel
        self.event = event
        self.data = data
        self.idempotencyKey = idempotencyKey
    }

    enum CodingKeys: String, CodingKey {
        case channel, event, data
        case idempotencyKey = "idempotency_key"
    }
}

/// One batch item's outcome: published, or refused alone.
public enum BatchResult: Sendable, Hashable {
    case published(messageID: String, status: String)
    case failed(code: Int, message: String)
}

public struct HistoryPage: Sendable, Hashable, Codable {
    public var messages: [RealtimeMessage]
    public var nextCursor: String?

    enum CodingKeys: String, CodingKey {
        case messages
        case nextCursor = "next_cursor"
    }
}

public struct TokenRequest: Sendable, Hashable, Codable {
    public var userID: String?
    public var clientID: String?
    public var channels: [String]?
    public var capabilities: [String: [String]]?
    public var ttlSeconds: Int?

    public init(userID: String? = nil, clientID: String? = nil, channels: [String]? = nil, capabilities: [String: [String]]? = nil, ttlSeconds: Int? = nil) {
        self.userID = userID
        self.clientID = clientID
        self.channels = channels
        self.capabilities = capabilities
        self.ttlSeconds = ttlSeconds
    }

    enum CodingKeys: String, CodingKey {
        case channels, capabilities
        case userID = "user_id"
        case clientID = "client_id"
        case ttlSeconds = "ttl_seconds"
    }
}

public struct IssuedToken: Sendable, Hashable, Codable {
    public var token: String
    public var clientID: String
    public var userID: String?
    public var expiresAt: String
    public var endpoint: String
    public var capabilities: [String: [String]]

    enum CodingKeys: String, CodingKey {
        case token, endpoint, capabilities
        case clientID = "client_id"
        case userID = "user_id"
        case expiresAt = "expires_at"
    }
}

public struct ChannelInfo: Sendable, Hashable, Codable {
    public var name: String
    public var type: String
    public var historySize: Int
    public var historyTTLSeconds: Int
    public var createdAt: String?
    public var subscribers: Int?
    public var presenceMembers: Int?
    public var lastMessageID: String?

    enum CodingKeys: String, CodingKey {
        case name, type, subscribers
        case historySize = "history_size"
        case historyTTLSeconds = "history_ttl_seconds"
        case createdAt = "created_at"
        case presenceMembers = "presence_members"
        case lastMessageID = "last_message_id"
    }
}

public struct ChannelList: Sendable, Hashable, Codable {
    public var channels: [ChannelInfo]
    public var nextCursor: String?

    enum CodingKeys: String, CodingKey {
        case channels
        case nextCursor = "next_cursor"
    }
}

public struct APIKeyInfo: Sendable, Hashable, Codable {
    public var keyID: String
    public var name: String
    public var scopes: [String]
    public var createdAt: String?
    /// The secret: only in the answer to `createKey`.
    public var key: String?

    enum CodingKeys: String, CodingKey {
        case name, scopes, key
        case keyID = "key_id"
        case createdAt = "created_at"
    }
}
