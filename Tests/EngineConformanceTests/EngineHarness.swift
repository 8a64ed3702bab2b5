import Logging
import NIOCore
import RealtimeCore
import RealtimeRedis
import RealtimeTestSupport
import Synchronization
import Testing

/// The engines the conformance suite runs against: memory, Redis on one server, on a Redis
/// Cluster (sharded pub/sub) and behind Sentinel. The cluster and the sentinel setup are shared
/// by the whole test process (each test has a key prefix of its own).
enum EngineKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory
    case redis
    case redisCluster
    case redisSentinel
    var testDescription: String { rawValue }
}

/// Records what an engine delivers, for assertions that wait for asynchronous delivery.
final class EventRecorder: Sendable {
    let events = Mutex<[EngineEvent]>([])

    func record(_ e: EngineEvent) { events.withLock { $0.append(e) } }

    var messages: [Message] {
        events.withLock { $0.compactMap { if case .message(let m) = $0 { return m } else { return nil } } }
    }

    var presence: [PresenceEvent] {
        events.withLock { $0.compactMap { if case .presence(let p) = $0 { return p } else { return nil } } }
    }

    var all: [EngineEvent] { events.withLock { $0 } }

    /// Waits (bounded) until `condition` holds.
    func waitFor(_ what: String, timeout: Duration = .seconds(10), until condition: () -> Bool) async throws {
        try await wait(what, timeout: timeout) { _ in condition() }
    }

    /// Waits (bounded) until `condition` holds over the recorded events.
    func wait(_ what: String, timeout: Duration = .seconds(5), until condition: (EventRecorder) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition(self) {
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out waiting for \(what)")
                throw CancellationError()
            }
            try await Task.sleep(for: .milliseconds(5), clock: .suspending)
        }
    }
}

struct EngineUnderTest {
    let engine: Engine
    let clock: ManualClock
    let events: EventRecorder
    /// A node hub on top of the engine, when asked for (it then receives the engine's events).
    let hub: ChannelHub?
}

/// A subscriber sink that records message ids.
final class IDSink: SubscriberSink {
    let received = Mutex<[MessageID]>([])
    var eventLoop: (any EventLoop)? { nil }
    func write(_ frame: WireFrame) -> Bool {
        let text = String(buffer: frame.text)
        if text.hasPrefix("{\"type\":\"message\""), let r = text.range(of: "\"id\":\""), let id = MessageID(text[r.upperBound...].prefix { $0 != "\"" }) {
            received.withLock { $0.append(id) }
        }
        return false
    }
    func flush() {}
    func slowConsumer() {}
    func channelEnded(_ channel: ChannelName) {}
    var ids: [MessageID] { received.withLock { $0 } }
}

/// Makes a fresh engine of the kind, runs it while `body` runs, then stops it.
func withEngine(
    _ kind: EngineKind, configuration: EngineConfiguration = .init(), hub withHub: Bool = false, _ body: (EngineUnderTest) async throws -> Void
) async throws {
    let clock = ManualClock(milliseconds: 1_800_000_000_000)
    let engine: Engine
    var server: RedisServerProcess?
    switch kind {
    case .memory: engine = MemoryEngine(configuration: configuration, clock: clock).engine
    case .redis:
        let s = try RedisServerProcess()
        try await s.start()
        server = s
        var logger = Logger(label: "test-redis")
        logger.logLevel = .critical
        engine = try RedisEngine(url: s.url, configuration: configuration, nodeID: "test-node", clock: clock, presenceClock: clock, logger: logger).engine
    case .redisCluster, .redisSentinel:
        let topology = try await RedisTopologyProcess.shared(kind == .redisCluster ? .cluster : .sentinel)
        var logger = Logger(label: "test-redis")
        logger.logLevel = .critical
        engine = try RedisEngine(
            url: topology.url, configuration: configuration, keyPrefix: "t" + RandomID.hex(bytes: 4), nodeID: "test-node", clock: clock,
            presenceClock: clock, logger: logger
        ).engine
    }
    defer { server?.stop() }
    let recorder = EventRecorder()
    let hub = withHub ? ChannelHub(engine: engine) : nil
    try await withThrowingTaskGroup(of: Void.self) { group in
        if let hub {
            group.addTask { try await hub.run() }
        } else {
            group.addTask { try await engine.run(delivering: { recorder.record($0) }) }
        }
        // Let `run` install its handler (and, for Redis, its pub/sub connection) before the test acts.
        try await Task.sleep(for: .milliseconds(20), clock: .suspending)
        // Ready: commands answered and every pub/sub link up (a loaded machine may take a while
        // to reach a Sentinel's primary; a test that starts before would race that).
        let ready = ContinuousClock.now + .seconds(60)
        while (try? await engine.broker.checkReady()) == nil {
            guard ContinuousClock.now < ready else {
                Issue.record("the \(kind) engine did not become ready")
                break
            }
            try await Task.sleep(for: .milliseconds(20), clock: .suspending)
        }
        do {
            try await body(EngineUnderTest(engine: engine, clock: clock, events: recorder, hub: hub))
        } catch {
            group.cancelAll()
            throw error
        }
        group.cancelAll()
    }
}

func channel(_ name: String) -> ChannelName { try! ChannelName(validating: name) }

func settings(_ name: String, type: ChannelType = .private, historySize: Int = 1000, ttl: Int = 86_400) -> ChannelSettings {
    ChannelSettings(name: channel(name), type: type, historySize: historySize, historyTTLSeconds: ttl, createdAt: 1_800_000_000_000, explicit: true)
}

func member(_ connection: String, client: String = "alice", user: String? = "u1", data: String? = nil) -> PresenceMember {
    PresenceMember(clientID: client, userID: user, connectionID: connection, data: data, enteredAt: 1_800_000_000_000, updatedAt: 1_800_000_000_000)
}
