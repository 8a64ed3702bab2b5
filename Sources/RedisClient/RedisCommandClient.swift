import Crypto
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// What the engine needs from Redis, whatever the deployment: one server, a cluster (routed by
/// each command's key) or a Sentinel-managed primary.
public protocol RedisCommandSending: Sendable {
    /// Sends one command; an error reply throws `RedisError.server`.
    @discardableResult
    func send(buffers: [ByteBuffer]) async throws -> RESPValue
    /// Runs a Lua script by SHA, loading it on `NOSCRIPT`. All `keys` must share one slot.
    func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue
    /// Runs a script, then, on the same connection, the command `follow` names for its reply
    /// (nil: none), such as `WAIT`, which concerns the writes of its own connection only.
    func evaluate(
        _ script: RedisScript, keys: [String], arguments: [String], then follow: @Sendable (RESPValue) -> [String]?
    ) async throws -> (RESPValue, RESPValue?)
    func close()
}

extension RedisCommandSending {
    @discardableResult
    public func send(_ arguments: [String]) async throws -> RESPValue {
        try await send(buffers: arguments.map { ByteBuffer(string: $0) })
    }
}

/// Commands over a small pool of pipelined connections, reconnecting with backoff.
///
/// While Redis is unreachable, commands fail fast with `RedisError.connection` (no queueing), so
/// callers can answer "unavailable" at once; a new connection is tried after a backoff that
/// grows from 50 ms to 2 s.
public final class RedisCommandClient: RedisCommandSending {
    public let configuration: RedisConfiguration
    /// Where to connect, asked at each new connection (Sentinel: the current primary); nil
    /// means `configuration` as it is.
    let resolve: (@Sendable () async throws -> RedisConfiguration)?
    /// Whether a new connection must find a primary (`ROLE`), so that a demoted server is
    /// never written to (Sentinel).
    let requirePrimary: Bool
    let group: any EventLoopGroup
    let slots: [Slot]
    let next = Atomic<Int>(0)
    /// The group's loops; slot `i` connects on `loops[i % loops.count]`.
    let loops: [any EventLoop]
    /// A loop's index in `loops`, to find the slots that live on the calling thread's loop.
    let loopIndex: [ObjectIdentifier: Int]

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

    public init(
        configuration: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        requirePrimary: Bool = false, resolve: (@Sendable () async throws -> RedisConfiguration)? = nil
    ) {
        self.configuration = configuration
        self.resolve = resolve
        self.requirePrimary = requirePrimary
        self.group = group
        let loops = Array(group.makeIterator())
        self.loops = loops.isEmpty ? [group.next()] : loops
        self.loopIndex = Dictionary(self.loops.enumerated().map { (ObjectIdentifier($1), $0) }, uniquingKeysWith: { a, _ in a })
        self.slots = (0..<max(1, configuration.poolSize)).map { _ in Slot() }
    }

    /// The slot for the next command: called on an event loop of the group that has
    /// connections of its own (slot `i` lives on loop `i % loops.count`), one of those, so the
    /// command is written without a thread hop and the commands issued in one loop turn
    /// (concurrent publishes, say) leave in one write; otherwise round robin over all.
    private func nextSlot() -> Int {
        let n = next.wrappingAdd(1, ordering: .relaxed).oldValue & Int.max
        guard let current = MultiThreadedEventLoopGroup.currentEventLoop, let index = loopIndex[ObjectIdentifier(current)],
            index < slots.count
        else {
            return n % slots.count
        }
        let onThisLoop = (slots.count - 1 - index) / loops.count + 1
        return index + loops.count * (n % onThisLoop)
    }

    /// Sends a command on the next connection of the pool.
    @discardableResult
    public func send(buffers: [ByteBuffer]) async throws -> RESPValue {
        try await demotionChecked { try await connection().send(buffers: buffers) }
    }

    /// Runs a Lua script by SHA, loading it on `NOSCRIPT` (after a Redis restart, say).
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        try await demotionChecked { try await connection().evaluate(script, keys: keys, arguments: arguments) }
    }

    public func evaluate(
        _ script: RedisScript, keys: [String], arguments: [String], then follow: @Sendable (RESPValue) -> [String]?
    ) async throws -> (RESPValue, RESPValue?) {
        try await demotionChecked {
            let connection = try await connection()
            let reply = try await connection.evaluate(script, keys: keys, arguments: arguments)
            guard let command = follow(reply) else { return (reply, nil) }
            return (reply, try await Self.followUp { try await connection.send(command) })
        }
    }

    /// The command after a script that ran: whatever its failure, it is `followUpFailed`, so
    /// that no caller takes it for a refusal of the script or sends the script again.
    static func followUp(_ body: () async throws -> RESPValue) async throws -> RESPValue {
        do {
            return try await body()
        } catch let error as RedisError {
            throw RedisError.followUpFailed(error.description)
        }
    }

    /// A `READONLY` reply means the server was demoted to a replica (a failover): the write was
    /// refused, so nothing happened; the pool reconnects to whatever `resolve` names now.
    private func demotionChecked<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch RedisError.server(let message) where message.hasPrefix("READONLY") {
            resetConnections()
            throw RedisError.connection("the server is no longer a primary: \(message)")
        }
    }

    /// Closes every pooled connection; the next commands connect afresh (to a new primary, say).
    public func resetConnections() {
        for slot in slots {
            slot.guarded.withLock { g in
                if case .connected(let c) = g.state {
                    c.close()
                    g.state = .idle
                }
                g.retryAt = ContinuousClock.now
            }
        }
    }

    /// A live connection from the pool (round robin), connecting if needed.
    public func connection() async throws -> RedisConnection {
        let index = nextSlot()
        let slot = slots[index]
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
                let c = try await RedisConnection.connect(try await resolve?() ?? configuration, group: loops[index % loops.count])
                if requirePrimary {
                    let role = try? await c.send(["ROLE"])
                    guard role?.array?.first?.string == "master" else {
                        c.close()
                        throw RedisError.connection("\(configuration.host):\(configuration.port) is not a primary")
                    }
                }
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

