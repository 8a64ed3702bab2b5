import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A dedicated pub/sub connection for a set of channels. Not reference-counted: its user (the
/// node's hub) subscribes a channel once and unsubscribes it once.
///
/// `run` keeps the connection up: it reconnects with backoff, resubscribes every channel in the
/// set, and pings so that a silently dead connection is noticed. It reports `onInterrupted` as
/// soon as the connection is lost (messages may be missed from then on) and `onRestored` once
/// every channel of the set is subscribed again.
public final class RedisSubscriber: Sendable {
    public let configuration: RedisConfiguration
    /// `SSUBSCRIBE`/`SUNSUBSCRIBE` (a cluster shard's channels) instead of `SUBSCRIBE`/`UNSUBSCRIBE`.
    public let sharded: Bool
    /// Where to connect, asked at each (re)connection (Sentinel: the current primary).
    let resolve: (@Sendable () async throws -> RedisConfiguration)?
    let group: any EventLoopGroup
    let logger: Logger
    let state = Mutex(State())
    /// Monotonic time (ns) of the last answered ping, for health checks.
    let lastPong = Atomic<Int64>(0)

    struct State {
        var channels: Set<String> = []
        var connection: RedisConnection?
        var onMessage: (@Sendable (String, ByteBuffer) -> Void)?
    }

    public init(
        configuration: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        sharded: Bool = false, resolve: (@Sendable () async throws -> RedisConfiguration)? = nil
    ) {
        self.configuration = configuration
        self.sharded = sharded
        self.resolve = resolve
        self.group = group
        self.logger = logger
    }

    /// Whether the connection is up and answered a ping within `within`.
    public func isHealthy(within: Duration = .seconds(3)) -> Bool {
        guard isConnected else { return false }
        let last = lastPong.load(ordering: .relaxed)
        return Self.nowNanos() - last < Int64(within.components.seconds) * 1_000_000_000
    }

    /// Whether the connection is up; `run` publishes it only once the set is subscribed on it.
    public var isConnected: Bool { state.withLock { $0.connection?.isActive ?? false } }

    static func nowNanos() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    /// Maintains the connection until cancelled. `onMessage(channel, payload)` runs on the
    /// connection's event loop for each message.
    public func run(
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onInterrupted: @escaping @Sendable () -> Void = {},
        onRestored: @escaping @Sendable () -> Void = {}
    ) async {
        state.withLock { $0.onMessage = onMessage }
        var backoff = Duration.milliseconds(50)
        var everConnected = false
        while !Task.isCancelled {
            do {
                let connection = try await RedisConnection.connect(try await resolve?() ?? configuration, group: group) { [weak self] channel, payload in
                    guard let self else { return }
                    let handler = self.state.withLock { $0.onMessage }
                    handler?(String(buffer: channel), payload)
                }
                // Resubscribe the set until it is stable, then publish the connection; channels
                // added meanwhile wait for it (see `subscribe`).
                var done: Set<String> = []
                while true {
                    let missing = state.withLock { $0.channels.subtracting(done) }
                    if missing.isEmpty {
                        let published = state.withLock { s -> Bool in
                            guard s.channels.subtracting(done).isEmpty else { return false }
                            s.connection = connection
                            return true
                        }
                        if published { break }
                        continue
                    }
                    for channel in missing { try await connection.send([subscribeCommand, channel]) }
                    done.formUnion(missing)
                }
                lastPong.store(Self.nowNanos(), ordering: .relaxed)
                if everConnected { onRestored() }
                everConnected = true
                backoff = .milliseconds(50)
                // Ping until the connection fails.
                while !Task.isCancelled, connection.isActive {
                    try await Task.sleep(for: .seconds(1), clock: .suspending)
                    try await connection.send(["PING"])
                    lastPong.store(Self.nowNanos(), ordering: .relaxed)
                }
                connection.close()
            } catch is CancellationError {
                break
            } catch {
                logger.warning("redis subscriber connection lost", metadata: ["error": "\(error)"])
            }
            let wasConnected = state.withLock { s -> Bool in
                let was = s.connection != nil
                s.connection?.close()
                s.connection = nil
                return was
            }
            if wasConnected { onInterrupted() }
            try? await Task.sleep(for: backoff, clock: .suspending)
            backoff = min(backoff * 2, .seconds(2))
        }
        state.withLock { s in
            s.connection?.close()
            s.connection = nil
        }
    }

    /// Adds `channel` to the set; returns once Redis confirmed the subscription. Throws (and
    /// removes it again) when the connection is down for longer than `wait`.
    public func subscribe(_ channel: String, wait: Duration = .seconds(2)) async throws {
        let future = state.withLock { s -> EventLoopFuture<RESPValue>? in
            s.channels.insert(channel)
            guard let c = s.connection, c.isActive else { return nil }
            return c.sendFuture([ByteBuffer(string: subscribeCommand), ByteBuffer(string: channel)])
        }
        do {
            if let future {
                _ = try await future.get()
            } else {
                // Not connected: `run` subscribes the set before it publishes the connection.
                try await waitForConnection(wait)
            }
        } catch {
            await unsubscribe(channel)
            throw error
        }
    }

    /// Removes `channel` from the set and unsubscribes it.
    public func unsubscribe(_ channel: String) async {
        let future = state.withLock { s -> EventLoopFuture<RESPValue>? in
            guard s.channels.remove(channel) != nil, let c = s.connection, c.isActive else { return nil }
            return c.sendFuture([ByteBuffer(string: sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE"), ByteBuffer(string: channel)])
        }
        _ = try? await future?.get()
    }

    var subscribeCommand: String { sharded ? "SSUBSCRIBE" : "SUBSCRIBE" }

    /// Closes the connection now (its server was demoted, say); `run` connects again at once.
    public func reconnect() {
        state.withLock { $0.connection?.close() }
    }

    /// Channels in the set.
    public var channels: [String] { state.withLock { Array($0.channels) } }

    private func waitForConnection(_ wait: Duration) async throws {
        let deadline = ContinuousClock.now + wait
        while !isConnected {
            guard ContinuousClock.now < deadline else { throw RedisError.connection("pub/sub connection unavailable") }
            try await Task.sleep(for: .milliseconds(10), clock: .suspending)
        }
    }
}
