/// A published message as stored in history and delivered to subscribers.
public struct Message: Sendable, Equatable {
    public var id: MessageID
    public var channel: ChannelName
    public var event: String
    /// Compact JSON text of the message's `data`.
    public var data: String
    public var clientID: String?
    /// Publish time, milliseconds since the epoch.
    public var timestamp: Int64

    public init(id: MessageID, channel: ChannelName, event: String, data: String, clientID: String?, timestamp: Int64) {
        self.id = id
        self.channel = channel
        self.event = event
        self.data = data
        self.clientID = clientID
        self.timestamp = timestamp
    }

    /// The message object of the contract: `{"id","channel","event","data","client_id"?,"timestamp"}`,
    /// optionally preceded by `"type":"message"` for WebSocket pushes.
    public func json(asPush: Bool) -> String {
        var w = JSONWriter(capacity: data.utf8.count + event.utf8.count + 128)
        w.raw("{")
        if asPush {
            w.key("type", first: true)
            w.raw("\"message\"")
            w.key("channel")
        } else {
            w.key("channel", first: true)
        }
        w.string(channel.rawValue)
        w.key("id")
        w.raw("\"\(id)\"")
        w.key("event")
        w.string(event)
        w.key("data")
        w.raw(data)
        if let clientID {
            w.key("client_id")
            w.string(clientID)
        }
        w.key("timestamp")
        w.raw("\"\(Timestamp.iso8601(milliseconds: timestamp))\"")
        w.raw("}")
        return w.text
    }
}

/// What a publisher asks an engine to publish.
public struct PublishRequest: Sendable {
    public var channel: ChannelName
    public var event: String
    public var data: String
    public var clientID: String?
    public var idempotencyKey: String?

    public init(channel: ChannelName, event: String, data: String, clientID: String? = nil, idempotencyKey: String? = nil) {
        self.channel = channel
        self.event = event
        self.data = data
        self.clientID = clientID
        self.idempotencyKey = idempotencyKey
    }
}

/// The result of a publish: a new message, or the original id for a repeated idempotency key.
public struct PublishOutcome: Sendable, Equatable {
    public enum Status: String, Sendable { case published, duplicate }
    public var id: MessageID
    public var status: Status
    /// Publish time of the (original) message, milliseconds since the epoch.
    public var timestamp: Int64

    public init(id: MessageID, status: Status, timestamp: Int64) {
        self.id = id
        self.status = status
        self.timestamp = timestamp
    }
}
