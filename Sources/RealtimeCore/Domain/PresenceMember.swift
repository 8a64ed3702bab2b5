/// One connection present on one channel.
public struct PresenceMember: Sendable, Equatable, Codable {
    public var clientID: String
    public var userID: String?
    public var connectionID: String
    /// Compact JSON text of the member's data, if any.
    public var data: String?
    public var enteredAt: Int64
    public var updatedAt: Int64

    public init(clientID: String, userID: String?, connectionID: String, data: String?, enteredAt: Int64, updatedAt: Int64) {
        self.clientID = clientID
        self.userID = userID
        self.connectionID = connectionID
        self.data = data
        self.enteredAt = enteredAt
        self.updatedAt = updatedAt
    }

    /// `{"client_id","user_id"?,"connection_id","data"?,"entered_at","updated_at"}`.
    public var json: String {
        var w = JSONWriter()
        w.raw("{")
        w.key("client_id", first: true)
        w.string(clientID)
        if let userID {
            w.key("user_id")
            w.string(userID)
        }
        w.key("connection_id")
        w.string(connectionID)
        if let data {
            w.key("data")
            w.raw(data)
        }
        w.key("entered_at")
        w.string(Timestamp.iso8601(milliseconds: enteredAt))
        w.key("updated_at")
        w.string(Timestamp.iso8601(milliseconds: updatedAt))
        w.raw("}")
        return w.text
    }
}

/// A presence change on a channel, fanned out to the channel's subscribers.
public struct PresenceEvent: Sendable, Equatable {
    public enum Action: String, Sendable { case enter, update, leave }
    public var channel: ChannelName
    public var action: Action
    public var member: PresenceMember

    public init(channel: ChannelName, action: Action, member: PresenceMember) {
        self.channel = channel
        self.action = action
        self.member = member
    }

    /// `{"type":"presence_event","channel","action","member":{..}}`.
    public var pushJSON: String {
        var w = JSONWriter()
        w.raw("{\"type\":\"presence_event\"")
        w.key("channel")
        w.string(channel.rawValue)
        w.key("action")
        w.string(action.rawValue)
        w.key("member")
        w.raw(member.json)
        w.raw("}")
        return w.text
    }
}
