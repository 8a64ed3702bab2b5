import RealtimeCore

/// The key schema of docs/redis-keys.md. `{channel}` is a Redis Cluster hash tag, so one
/// channel's keys share a slot and its scripts stay single-slot. On a cluster, the keys that are
/// not per channel share the slot of the `{global}` tag (`rt:{global}:channels`, …), and events
/// go out on sharded pub/sub.
struct RedisKeys: Sendable {
    let prefix: String
    /// The prefix of the keys that are not per channel: `rt` on one server, `rt:{global}` on a cluster.
    let globalPrefix: String
    /// `SPUBLISH` on a cluster, `PUBLISH` otherwise.
    let publishCommand: String

    init(prefix: String, clustered: Bool = false) {
        self.prefix = prefix
        self.globalPrefix = clustered ? "\(prefix):{global}" : prefix
        self.publishCommand = clustered ? "SPUBLISH" : "PUBLISH"
    }

    func stream(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:h" }
    func idempotency(_ c: ChannelName, _ key: String) -> String { "\(prefix):{\(c.rawValue)}:i:\(key)" }
    func idempotencyPattern(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:i:*" }
    func presence(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:p" }
    func presenceExpiry(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:pe" }
    func meta(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:m" }
    func subscriberCounts(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}:n" }
    /// The pub/sub channel carrying the channel's messages and presence events to nodes.
    func pubsub(_ c: ChannelName) -> String { "\(prefix):{\(c.rawValue)}" }
    var channels: String { "\(globalPrefix):channels" }
    var presenceChannels: String { "\(globalPrefix):pchannels" }
    var nodes: String { "\(globalPrefix):nodes" }
    var keys: String { "\(globalPrefix):keys" }
    /// Node-wide events: key revocations and readiness probes.
    var control: String { "\(globalPrefix):control" }

    /// The channel a pub/sub channel name belongs to, if it is one of ours.
    func channel(fromPubsub name: String) -> ChannelName? {
        let head = prefix + ":{"
        guard name.hasPrefix(head), name.hasSuffix("}") else { return nil }
        return ChannelName(trusted: String(name.dropFirst(head.count).dropLast()))
    }
}
