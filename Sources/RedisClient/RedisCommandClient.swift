import Crypto
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Commands over a small pool of pipelined connections, reconnecting with backoff.
///
/// While Redis is unreachable, commands fail fast with `RedisError.connection` (no queueing), so
/// callers can answer "unavailable" at once; a new connection is tried after a backoff that
/// grows from 50 ms to 2 s.
public final class RedisCommandClient: Sendable {
    public let configuration: RedisConfiguration
    let group: any EventLoopGroup
    let slots: [Slot]
    let next = Atomic<Int>(0)

    final class Slot: Sendable {
        enum State {
            case idle
            case connecting([CheckedContinuation<RedisConnection, any Error>])
            case connected(RedisConnection)
        }
        struct Guarded {
            var state = State.idle
            var retryAt = ContinuousClock.now
            var backoff = Duration.milliseconds(50)
        }
        let guarded = Mutex(Guarded())
    }

    public init(configuration: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.group = group
        self.slots = (0..<max(1, configuration.poolSize)).map { _ in Slot() }
    }

    /// Sends a command on the next connection of the pool.
    @discardableResult
    public func send(_ arguments: [String]) async throws -> RESPValue {
        try await connection().send(arguments)
    }

    @discardableResult
    public func send(buffers: [ByteBuffer]) async throws -> RESPValue {
        try await connection().send(buffers: buffers)
    }

    /// Runs a Lua script by SHA, loading it on `NOSCRIPT` (after a Redis restart, say).
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [ByteBuffer]) async throws -> RESPValue {
        let connection = try await connection()
        let tail = [ByteBuffer(string: String(keys.count))] + keys.map { ByteBuffer(string: $0) } + arguments
        do {
            return try await connection.send(buffers: [ByteBuffer(string: "EVALSHA"), ByteBuffer(string: script.sha1)] + tail)
        } catch RedisError.server(let message) where message.hasPrefix("NOSCRIPT") {
            try await connection.send(["SCRIPT", "LOAD", script.source])
            return try await connection.send(buffers: [ByteBuffer(string: "EVALSHA"), ByteBuffer(string: script.sha1)] + tail)
        }
    }

    /// A live connection from the pool (round robin), connecting if needed.
    public func connection() async throws -> RedisConnection {
        let slot = slots[next.wrappingAdd(1, ordering: .relaxed).oldValue % slots.count]
        enum Step { case use(RedisConnection), connect, wait, fail }
        let step = slot.guarded.withLock { g -> Step in
            switch g.state {
            case .connected(let c) where c.isActive: return .use(c)
            case .connecting: return .wait
            default:
                guard ContinuousClock.now >= g.retryAt else { return .fail }
                g.state = .connecting([])
                return .connect
            }
        }
        switch step {
        case .use(let c): return c
        case .fail: throw RedisError.connection("redis at \(configuration.host):\(configuration.port) unreachable (retrying)")
        case .wait:
            return try await withCheckedThrowingContinuation { c in
                let ready = slot.guarded.withLock { g -> Result<RedisConnection, any Error>? in
                    switch g.state {
                    case .connecting(var waiters):
                        waiters.append(c)
                        g.state = .connecting(waiters)
                        return nil
                    case .connected(let conn): return .success(conn)
                    case .idle: return .failure(RedisError.connection("redis unreachable"))
                    }
                }
                if let ready { c.resume(with: ready) }
            }
        case .connect:
            do {
                let c = try await RedisConnection.connect(configuration, group: group)
                let waiters = slot.guarded.withLock { g -> [CheckedContinuation<RedisConnection, any Error>] in
                    guard case .connecting(let w) = g.state else { return [] }
                    g.state = .connected(c)
                    g.backoff = .milliseconds(50)
                    return w
                }
                for w in waiters { w.resume(returning: c) }
                return c
            } catch {
                let waiters = slot.guarded.withLock { g -> [CheckedContinuation<RedisConnection, any Error>] in
                    guard case .connecting(let w) = g.state else { return [] }
                    g.state = .idle
                    g.retryAt = ContinuousClock.now + g.backoff
                    g.backoff = min(g.backoff * 2, .seconds(2))
                    return w
                }
                for w in waiters { w.resume(throwing: error) }
                throw error
            }
        }
    }

    public func close() {
        for slot in slots {
            slot.guarded.withLock { g in
                if case .connected(let c) = g.state { c.close() }
                g.state = .idle
            }
        }
    }
}

/// A Lua script with its SHA-1, for `EVALSHA`.
public struct RedisScript: Sendable {
    public let source: String
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = Insecure.SHA1.hash(data: Array(source.utf8)).map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }
}

