import Foundation
import Logging
import NIOCore
import RealtimeCore
import RedisClient
import Synchronization

/// The clustered engine: Redis streams hold history, pub/sub carries events between nodes,
/// hashes with an expiry sorted set hold presence (docs/redis-keys.md). One object implements
/// the four parts of ``Engine`` over one command client and one pub/sub connection; it keeps
/// only Redis mechanics: which channels are subscribed, the key schema and the scripts. The
/// node's hub owns counts, merges and the last delivered id.
public final class RedisEngine: Sendable {
    public let configuration: EngineConfiguration
    let deployment: RedisDeployment
    let redis: any RedisCommandSending
    let subscriber: any RedisPubSub
    let keys: RedisKeys
    let scripts: RedisScripts
    let nodeID: String
    /// Nil in production: presence expiry then runs on Redis `TIME`, one clock for the whole
    /// cluster. Tests inject a clock they can move.
    let presenceClock: (any RealtimeClock)?
    let clock: any RealtimeClock
    let logger: Logger
    let handler = Mutex<EventHandler?>(nil)
    /// Readiness probes this node sent and has not seen come back yet (bounded: one per probe
    /// in flight; other nodes' probes are ignored).
    let probes = Mutex<[String: Bool]>([:])
    let keyCache = Mutex<[String: (record: APIKeyRecord?, fetchedAt: Int64)]>([:])

    /// How long a node trusts a cached API key record; revocations also clear it at once.
    static let keyCacheMilliseconds: Int64 = 2000
    /// How long a publish on a `durability: replicated` channel waits for a replica (`WAIT`).
    static let replicationWaitMilliseconds = 2000
    /// A node whose heartbeat is older than this no longer counts in live figures.
    static let nodeStaleMilliseconds: Int64 = 15_000

    public init(
        url: String, configuration: EngineConfiguration, keyPrefix: String = "rt", nodeID: String,
        clock: any RealtimeClock = SystemClock(), presenceClock: (any RealtimeClock)? = nil,
        logger: Logger = Logger(label: "realtime.redis")
    ) throws {
        let deployment = try RedisDeployment(url: url, logger: logger)
        self.deployment = deployment
        self.configuration = configuration
        self.redis = deployment.commands
        self.subscriber = deployment.pubsub
        self.keys = RedisKeys(prefix: keyPrefix, clustered: deployment.sharded)
        self.scripts = RedisScripts(sharded: deployment.sharded)
        self.nodeID = nodeID
        self.clock = clock
        self.presenceClock = presenceClock
        self.logger = logger
    }

    /// The four parts of the engine, all served by this object.
    public var engine: Engine {
        Engine(configuration: configuration, broker: self, presence: self, channels: self, keys: self)
    }

    /// Runs `body`, answering a Redis client error with the contract's error (``contractError(_:write:)``).
    func call<T>(write: Bool = false, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as RedisError {
            throw Self.contractError(error, write: write)
        }
    }

    /// A Redis client error as the contract reports it:
    /// - not sent, or refused for a passing reason before anything ran
    ///   (``RedisError/isTransientRefusal``: Redis loading its data after a restart, say): 50300;
    /// - sent and unanswered (or answered with a reply that does not parse), or a script that
    ///   ran whose follow-up failed: 50400 for a write (it may have been applied), 50300 for a read;
    /// - any other error reply: 50000.
    static func contractError(_ error: RedisError, write: Bool) -> RealtimeError {
        switch error {
        case .server(let message) where error.isTransientRefusal:
            return .engineUnavailable("redis refused the command for now (\(message.prefix { $0 != " " })); nothing was applied, retry later")
        case .server(let message):
            return .internal("redis: \(message)")
        case .timeout, .connectionLost, .followUpFailed, .protocolError:
            return write ? .outcomeUnknown() : .engineUnavailable("engine did not answer in time; retry later")
        case .connection, .invalidURL, .crossSlot:
            return .engineUnavailable()
        }
    }

    /// `now` for presence scripts: empty means "use Redis TIME".
    var presenceNow: String { presenceClock.map { String($0.nowMilliseconds()) } ?? "" }

    // MARK: Events

    func received(_ pubsubChannel: String, _ payload: ByteBuffer) {
        if pubsubChannel == keys.control {
            receivedControl(payload)
            return
        }
        guard let channel = keys.channel(fromPubsub: pubsubChannel), let event = RedisWire.decode(payload, channel: channel) else { return }
        handler.withLock { $0 }?.deliver(event)
    }

    func receivedControl(_ payload: ByteBuffer) {
        let text = String(buffer: payload)
        if text.hasPrefix("k\n") {
            let keyID = String(text.dropFirst(2))
            keyCache.withLock { _ = $0.removeValue(forKey: keyID) }
            handler.withLock { $0 }?.deliver(.keyRevoked(keyID: keyID))
        } else if text.hasPrefix("r\n") {
            let nonce = String(text.dropFirst(2))
            probes.withLock { p in if p[nonce] != nil { p[nonce] = true } }
        }
    }
}

extension RedisEngine: Broker {
    public func run(delivering handler: @escaping @Sendable (EngineEvent) -> Void) async throws {
        self.handler.withLock { $0 = EventHandler(handler) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await self.subscriber.run(
                    onMessage: { [weak self] channel, payload in self?.received(channel, payload) },
                    onInterrupted: { handler(.interrupted) },
                    onRestored: { handler(.restored) })
            }
            group.addTask { await self.deployment.run() }
            group.addTask {
                // Node-wide events; retried until the connection is up.
                while !Task.isCancelled {
                    if (try? await self.subscriber.subscribe(self.keys.control, wait: .seconds(5))) != nil { break }
                }
            }
            await group.waitForAll()
        }
        _ = try? await redis.send(["ZREM", keys.nodes, nodeID])
        self.handler.withLock { $0 = nil }
        redis.close()
    }

    public func subscribe(_ channel: ChannelName) async throws {
        do {
            try await subscriber.subscribe(keys.pubsub(channel))
        } catch {
            throw RealtimeError.engineUnavailable("cannot subscribe to the channel's events")
        }
    }

    public func unsubscribe(_ channel: ChannelName) async {
        await subscriber.unsubscribe(keys.pubsub(channel))
    }

    public func position(_ channel: ChannelName) async throws -> MessageID {
        try await call {
            let newest = try await redis.send(["XREVRANGE", keys.stream(channel), "+", "-", "COUNT", "1"])
            if let entry = newest.array?.first, let id = entry.array?.first?.string.flatMap({ MessageID($0) }) { return id }
            let recorded = try await redis.send(["HGET", keys.meta(channel), "last_id"])
            return recorded.string.flatMap { MessageID($0) } ?? .zero
        }
    }

    public func publish(_ request: PublishRequest) async throws -> PublishOutcome {
        let c = request.channel
        let defaults = configuration.channelDefaults
        let window = request.idempotencyKey == nil ? "" : String(Int64(configuration.idempotencyWindowSeconds).multipliedReportingOverflow(by: 1000).partialValue)
        let (reply, waited) = try await call(write: true) {
            try await redis.evaluate(
                scripts.publish,
                keys: [keys.stream(c), request.idempotencyKey.map { keys.idempotency(c, $0) } ?? keys.stream(c), keys.meta(c)],
                arguments: [
                    request.event, request.data, request.clientID ?? "", String(max(defaults.historySize, 0)),
                    String(max(defaults.historyTTLSeconds, 1) * 1000), window, keys.pubsub(c), String(clock.nowMilliseconds()),
                    RandomID.uniqueHex(bytes: 6),
                ],
                then: { reply in
                    // `durability: replicated`: acknowledged once a replica has it too.
                    reply.array?.last?.int == 1 ? ["WAIT", "1", String(Self.replicationWaitMilliseconds)] : nil
                })
        }
        guard let parts = reply.array, parts.count == 4, let status = parts[0].int, let id = parts[1].string.flatMap({ MessageID($0) }) else {
            throw RealtimeError.internal("unexpected publish reply \(reply)")
        }
        if let waited, (waited.int ?? 0) < 1 {
            throw RealtimeError.outcomeUnknown(
                "outcome unknown: applied on the primary but no replica confirmed it in time (durability: replicated); retry with the same idempotency_key")
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

    public func replay(_ channel: ChannelName, after position: MessageID, limit: Int) async throws -> Replay {
        let limit = max(limit, 1)
        let reply = try await call {
            try await redis.evaluate(
                scripts.replay, keys: [keys.stream(channel), keys.meta(channel)],
                arguments: [position.description, String(limit + 1)])
        }
        guard let parts = reply.array, parts.count == 5, let gone = parts[0].string.flatMap({ MessageID($0) }), let epoch = parts[2].string,
            let newest = parts[3].string.flatMap({ MessageID($0) }), let held = parts[4].int
        else {
            throw RealtimeError.internal("unexpected replay reply")
        }
        let messages = (parts[1].array ?? []).compactMap { RedisWire.message(fromEntry: $0, channel: channel) }
        return Replay(
            messages: Array(messages.prefix(limit)), complete: gone <= position, hasMore: messages.count > limit, epoch: epoch, newest: newest,
            positionLost: position != .zero && position > gone && held == 0)
    }

    public func epoch(_ channel: ChannelName) async throws -> String {
        // Made by the first publish; nothing is stored for a channel only read.
        try await call { try await redis.send(["HGET", keys.meta(channel), "epoch"]) }.string ?? ""
    }

    public func changeEpoch(_ channel: ChannelName, from: String) async throws -> String {
        let reply = try await call(write: true) {
            try await redis.evaluate(
                scripts.changeEpoch, keys: [keys.meta(channel)], arguments: [from, RandomID.hex(bytes: 6), keys.pubsub(channel)])
        }
        guard let epoch = reply.string else { throw RealtimeError.internal("unexpected epoch reply") }
        logger.warning("channel epoch changed: its stream lost entries subscribers had seen", metadata: ["channel": "\(channel)", "epoch": "\(epoch)"])
        return epoch
    }

    public func checkReady() async throws {
        try await call { _ = try await redis.send(["PING"]) }
        // Every pub/sub link, not only the control channel's: a subscribe on a link still
        // connecting would wait for it, and fail with 50300 if it took longer than the wait.
        guard subscriber.isConnected else { throw RealtimeError.engineUnavailable("pub/sub connection down") }
        let nonce = nodeID + "-" + RandomID.hex(bytes: 6)
        probes.withLock { $0[nonce] = false }
        defer { probes.withLock { _ = $0.removeValue(forKey: nonce) } }
        try await call { _ = try await redis.send([keys.publishCommand, keys.control, "r\n" + nonce]) }
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline {
            if probes.withLock({ $0[nonce] == true }) { return }
            try await Task.sleep(for: .milliseconds(10), clock: .suspending)
        }
        throw RealtimeError.engineUnavailable("pub/sub round trip failed")
    }
}
