import RealtimeCore

/// The key schema of docs/redis-keys.md. `{channel}` is a Redis Cluster hash tag, so one
/// channel's keys share a slot and its scripts stay single-slot.
struct RedisKeys: Sendable {
    let prefix: String

    func stream(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:h" }
    func idempotency(_ c: ChannelName, _ key: String) -> String { "\(prefix):{\(c.rawValue)}:i:\(key)" }
    func idempotencyPattern(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:i:*" }
    func presence(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:p" }
    func presenceExpiry(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:pe" }
    func meta(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:m" }
    func subscriberCounts(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:n" }
    /// The pub/sub channel carrying the channel's messages and presence events to nodes.
    func pubsub(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}" }
    var channels: String { "\(prefix):channels" }
    var presenceChannels: String { "\(prefix):pchannels" }
    var nodes: String { "\(prefix):nodes" }
    var keys: String { "\(prefix):keys" }
    /// Node-wide events: key revocations and readiness probes.
    var control: String { "\(prefix):control" }

    /// The channel a pub/sub channel name belongs to, if it is one of ours.
    func channel(fromPubsub name: String) -> ChannelName? {
        let head = prefix + ":{"
        guard name.hasPrefix(head), name.hasSuffix("}") else { return nil }
        return ChannelName(trusted: String(name.dropFirst(head.count).dropLast()))
    }
}
