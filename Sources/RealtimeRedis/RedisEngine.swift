import Foundation
import Logging
import NIOCore
import RealtimeCore
import RedisClient
import Synchronization

/// The clustered engine: Redis streams hold history, pub/sub carries events between nodes,
/// hashes with an expiry sorted set hold presence (docs/redis-keys.md).
///
/// A node subscribes in Redis only to channels it has local subscribers for. It remembers the
/// last message id it delivered per channel; when its pub/sub connection comes back after a
/// drop, it reads what it missed from the stream before delivering new messages, so a Redis
/// or network blip costs no messages that Redis still holds.
public final class RedisEngine: Engine {
    public let configuration: EngineConfiguration
    let redis: RedisCommandClient
    let subscriber: RedisSubscriber
    let keys: RedisKeys
    let nodeID: String
    let clock: any RealtimeClock
    let logger: Logger
    let dispatch = Mutex(Dispatch())
    let keyCache = Mutex<[String: (record: APIKeyRecord?, fetchedAt: Int64)]>([:])

    struct Track {
        var count = 1
        /// The last message id delivered (or, before any, the stream's last id at attach).
        var lastSeen = MessageID.zero
        /// Events held while missed messages are read after a reconnect.
        var catchingUp = false
        var buffer: [EngineEvent] = []
    }

    struct Dispatch {
        var handler: (@Sendable (EngineEvent) -> Void)?
        var tracks: [ChannelName: Track] = [:]
        var probes: Set<String> = []
    }

    /// How long a node trusts a cached API key record; revocations also clear it at once.
    static let keyCacheMilliseconds: Int64 = 2000
    /// A node whose heartbeat is older than this no longer counts in live figures.
    static let nodeStaleMilliseconds: Int64 = 15_000

    public init(
        url: String, configuration: EngineConfiguration, keyPrefix: String = "rt", nodeID: String,
        clock: any RealtimeClock = SystemClock(), logger: Logger = Logger(label: "realtime.redis")
    ) throws {
        let redisConfig = try RedisConfiguration(url: url)
        self.configuration = configuration
        self.redis = RedisCommandClient(configuration: redisConfig)
        self.subscriber = RedisSubscriber(configuration: redisConfig, logger: logger)
        self.keys = RedisKeys(prefix: keyPrefix)
        self.nodeID = nodeID
        self.clock = clock
        self.logger = logger
    }

    // MARK: Running

    public func run(delivering handler: @escaping @Sendable (EngineEvent) -> Void) async throws {
        dispatch.withLock { $0.handler = handler }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await self.subscriber.run(
                    onMessage: { [weak self] channel, payload in self?.received(channel, payload) },
                    beforeResubscribe: { [weak self] channels in self?.holdForCatchUp(channels) },
                    onReconnect: { [weak self] channels in await self?.catchUp(channels) })
            }
            group.addTask {
                // Node-wide events; retried until the connection is up.
                while !Task.isCancelled {
                    if (try? await self.subscriber.subscribe(self.keys.control, wait: .seconds(5))) != nil { break }
                }
            }
            group.addTask { await self.periodic() }
            // Everything above runs until the task is cancelled.
            await group.waitForAll()
        }
        _ = try? await redis.send(["ZREM", keys.nodes, nodeID])
        dispatch.withLock { $0.handler = nil }
        redis.close()
    }

    /// Node heartbeat and the presence sweep, once a second.
    func periodic() async {
        var tick = 0
        while !Task.isCancelled {
            if tick % 2 == 0 { _ = try? await redis.send(["ZADD", keys.nodes, String(clock.nowMilliseconds()), nodeID]) }
            _ = try? await sweepExpiredPresence()
            tick += 1
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Maps client errors to the contract: unreachable -> 50300, anything else -> 50000.
    func call<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as RedisError {
            switch error {
            case .server(let message): throw RealtimeError.internal("redis: \(message)")
            default: throw RealtimeError.engineUnavailable()
            }
        }
    }

    // MARK: Events

    func received(_ pubsubChannel: String, _ payload: ByteBuffer) {
        if pubsubChannel == keys.control {
            receivedControl(payload)
            return
        }
        guard let channel = keys.channel(fromPubsub: pubsubChannel), let event = RedisWire.decode(payload, channel: channel) else { return }
        dispatch.withLock { d in
            guard d.tracks[channel] != nil else { return }
            if d.tracks[channel]!.catchingUp {
                d.tracks[channel]!.buffer.append(event)
                return
            }
            Self.deliver(event, &d, channel)
        }
    }

    /// Delivers in order, once: messages at or below the last delivered id are dropped.
    static func deliver(_ event: EngineEvent, _ d: inout Dispatch, _ channel: ChannelName) {
        if case .message(let m) = event {
            guard m.id > d.tracks[channel]!.lastSeen else { return }
            d.tracks[channel]!.lastSeen = m.id
        }
        d.handler?(event)
    }

    func receivedControl(_ payload: ByteBuffer) {
        let text = String(buffer: payload)
        if text.hasPrefix("k\n") {
            let keyID = String(text.dropFirst(2))
            keyCache.withLock { _ = $0.removeValue(forKey: keyID) }
            let handler = dispatch.withLock { $0.handler }
            handler?(.keyRevoked(keyID: keyID))
        } else if text.hasPrefix("r\n") {
            dispatch.withLock { _ = $0.probes.insert(String(text.dropFirst(2))) }
        }
    }

    func holdForCatchUp(_ pubsubChannels: [String]) {
        dispatch.withLock { d in
            for name in pubsubChannels {
                guard let c = keys.channel(fromPubsub: name), d.tracks[c] != nil else { continue }
                d.tracks[c]!.catchingUp = true
            }
        }
    }

    /// After a reconnect: delivers what each channel missed from its stream, then what arrived
    /// meanwhile, and resumes live delivery.
    func catchUp(_ pubsubChannels: [String]) async {
        for name in pubsubChannels {
            guard let channel = keys.channel(fromPubsub: name) else { continue }
            guard let since = dispatch.withLock({ $0.tracks[channel]?.lastSeen }) else { continue }
            var missed: [Message] = []
            if let reply = try? await redis.send(["XRANGE", keys.stream(channel), "(\(since)", "+"]), let entries = reply.array {
                missed = entries.compactMap { RedisWire.message(fromEntry: $0, channel: channel) }
            } else {
                logger.warning("could not read missed messages after reconnect", metadata: ["channel": "\(channel)"])
            }
            dispatch.withLock { d in
                guard d.tracks[channel] != nil else { return }
                for m in missed { Self.deliver(.message(m), &d, channel) }
                let held = d.tracks[channel]!.buffer
                d.tracks[channel]!.buffer = []
                d.tracks[channel]!.catchingUp = false
                for e in held { Self.deliver(e, &d, channel) }
            }
        }
    }

    public func attach(_ channel: ChannelName) async throws {
        let first = dispatch.withLock { d -> Bool in
            if d.tracks[channel] != nil {
                d.tracks[channel]!.count += 1
                return false
            }
            // Hold events until the position is known.
            d.tracks[channel] = Track(count: 1, lastSeen: .zero, catchingUp: true)
            return true
        }
        guard first else { return }
        do {
            let position = try await lastID(channel)
            try await subscriber.subscribe(keys.pubsub(channel))
            dispatch.withLock { d in
                guard d.tracks[channel] != nil else { return }
                d.tracks[channel]!.lastSeen = position
                let held = d.tracks[channel]!.buffer
                d.tracks[channel]!.buffer = []
                d.tracks[channel]!.catchingUp = false
                for e in held { Self.deliver(e, &d, channel) }
            }
        } catch {
            dispatch.withLock { _ = $0.tracks.removeValue(forKey: channel) }
            throw RealtimeError.engineUnavailable("cannot subscribe to the channel's events")
        }
    }

    public func detach(_ channel: ChannelName) async {
        let last = dispatch.withLock { d -> Bool in
            guard let t = d.tracks[channel] else { return false }
            if t.count > 1 {
                d.tracks[channel]!.count -= 1
                return false
            }
            d.tracks[channel] = nil
            return true
        }
        if last { await subscriber.unsubscribe(keys.pubsub(channel)) }
    }

    /// The stream's last id (or the recorded last id once the stream expired).
    func lastID(_ channel: ChannelName) async throws -> MessageID {
        let newest = try await redis.send(["XREVRANGE", keys.stream(channel), "+", "-", "COUNT", "1"])
        if let entry = newest.array?.first, let id = entry.array?.first?.string.flatMap({ MessageID($0) }) { return id }
        let recorded = try await redis.send(["HGET", keys.meta(channel), "last_id"])
        return recorded.string.flatMap { MessageID($0) } ?? .zero
    }

    // MARK: Publish and history

    public func publish(_ request: PublishRequest) async throws -> PublishOutcome {
        let c = request.channel
        let defaults = configuration.channelDefaults
        let window = request.idempotencyKey == nil ? "" : String(configuration.idempotencyWindowSeconds * 1000)
        let reply = try await call {
            try await redis.evaluate(
                RedisScripts.publish,
                keys: [keys.stream(c), request.idempotencyKey.map { keys.idempotency(c, $0) } ?? keys.stream(c), keys.meta(c)],
                arguments: [
                    request.event, request.data, request.clientID ?? "", String(max(defaults.historySize, 0)),
                    String(max(defaults.historyTTLSeconds, 1) * 1000), window, keys.pubsub(c), String(clock.nowMilliseconds()),
                ].map { ByteBuffer(string: $0) })
        }
        guard let parts = reply.array, parts.count == 3, let status = parts[0].int, let id = parts[1].string.flatMap({ MessageID($0) }) else {
            throw RealtimeError.internal("unexpected publish reply \(reply)")
        }
        if parts[2].int == 1 { _ = try? await redis.send(["ZADD", keys.channels, "NX", "0", c.rawValue]) }
        return PublishOutcome(id: id, status: status == 1 ? .published : .duplicate, timestamp: Int64(id.milliseconds))
    }

    public func history(_ channel: ChannelName, _ query: HistoryQuery) async throws -> HistoryPage {
        let low = query.after.map { "(\($0)" } ?? "-"
        let high = query.through.map { "\($0)" } ?? "+"
        let count = String(max(query.limit, 0) + 1)
        let command = query.direction == .forwards
            ? ["XRANGE", keys.stream(channel), low, high, "COUNT", count]
            : ["XREVRANGE", keys.stream(channel), high, low, "COUNT", count]
        if query.limit <= 0 { return HistoryPage(messages: [], hasMore: false) }
        let reply = try await call { try await redis.send(command) }
        let messages = (reply.array ?? []).compactMap { RedisWire.message(fromEntry: $0, channel: channel) }
        return HistoryPage(messages: Array(messages.prefix(query.limit)), hasMore: messages.count > query.limit)
    }

    public func replay(_ channel: ChannelName, after position: MessageID) async throws -> Replay {
        let reply = try await call {
            try await redis.evaluate(RedisScripts.replay, keys: [keys.stream(channel), keys.meta(channel)], arguments: [ByteBuffer(string: position.description)])
        }
        guard let parts = reply.array, parts.count == 2, let gone = parts[0].string.flatMap({ MessageID($0) }) else {
            throw RealtimeError.internal("unexpected replay reply")
        }
        let messages = (parts[1].array ?? []).compactMap { RedisWire.message(fromEntry: $0, channel: channel) }
        return Replay(messages: messages, complete: gone <= position)
    }

    public func checkReady() async throws {
        try await call { _ = try await redis.send(["PING"]) }
        let nonce = nodeID + "-" + RandomID.hex(bytes: 6)
        try await call { _ = try await redis.send(["PUBLISH", keys.control, "r\n" + nonce]) }
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline {
            if dispatch.withLock({ $0.probes.remove(nonce) != nil }) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw RealtimeError.engineUnavailable("pub/sub round trip failed")
    }
}
