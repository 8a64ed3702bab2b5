import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A dedicated pub/sub connection with per-channel reference counts: `SUBSCRIBE` goes out on
/// the first `subscribe` of a channel and `UNSUBSCRIBE` after the last `unsubscribe`.
///
/// `run` keeps the connection up: it reconnects with backoff, resubscribes every counted
/// channel, reports that to `onReconnect` (messages published while it was down were missed),
/// and pings so that a silently dead connection is noticed.
public final class RedisSubscriber: Sendable {
    public let configuration: RedisConfiguration
    let group: any EventLoopGroup
    let logger: Logger
    let state = Mutex(State())
    /// Monotonic time (ns) of the last answered ping, for health checks.
    let lastPong = Atomic<Int64>(0)

    struct State {
        var counts: [String: Int] = [:]
        var connection: RedisConnection?
        var onMessage: (@Sendable (String, ByteBuffer) -> Void)?
    }

    public init(configuration: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
    }

    /// Whether the connection is up and answered a ping within `within`.
    public func isHealthy(within: Duration = .seconds(3)) -> Bool {
        guard state.withLock({ $0.connection?.isActive ?? false }) else { return false }
        let last = lastPong.load(ordering: .relaxed)
        return Self.nowNanos() - last < Int64(within.components.seconds) * 1_000_000_000
    }

    static func nowNanos() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    /// Maintains the connection until cancelled. `onMessage(channel, payload)` runs on the
    /// connection's event loop for each message; `onReconnect(channels)` after every
    /// (re)subscription of counted channels, before their new messages are handled.
    public func run(
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        beforeResubscribe: @escaping @Sendable ([String]) -> Void = { _ in },
        onReconnect: @escaping @Sendable ([String]) async -> Void
    ) async {
        state.withLock { $0.onMessage = onMessage }
        var backoff = Duration.milliseconds(50)
        while !Task.isCancelled {
            do {
                let connection = try await RedisConnection.connect(configuration, group: group) { [weak self] channel, payload in
                    guard let self else { return }
                    let handler = self.state.withLock { $0.onMessage }
                    handler?(String(buffer: channel), payload)
                }
                // Resubscribe everything counted, then publish the connection to subscribers.
                let channels = state.withLock { Array($0.counts.keys) }
                beforeResubscribe(channels)
                for channel in channels { try await connection.send(["SUBSCRIBE", channel]) }
                state.withLock { $0.connection = connection }
                // Channels counted while we were resubscribing.
                let late = state.withLock { s in s.counts.keys.filter { !channels.contains($0) } }
                beforeResubscribe(late)
                for channel in late { try await connection.send(["SUBSCRIBE", channel]) }
                lastPong.store(Self.nowNanos(), ordering: .relaxed)
                await onReconnect(channels + late)
                backoff = .milliseconds(50)
                // Ping until the connection fails.
                while !Task.isCancelled, connection.isActive {
                    try await Task.sleep(for: .seconds(1))
                    try await connection.send(["PING"])
                    lastPong.store(Self.nowNanos(), ordering: .relaxed)
                }
                connection.close()
            } catch is CancellationError {
                break
            } catch {
                logger.warning("redis subscriber connection lost", metadata: ["error": "\(error)"])
            }
            state.withLock { $0.connection?.close(); $0.connection = nil }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
        state.withLock { s in
            s.connection?.close()
            s.connection = nil
        }
    }

    /// Counts a use of `channel`; returns once Redis confirmed the subscription. Throws (and
    /// uncounts) when the connection is down for longer than `wait`.
    public func subscribe(_ channel: String, wait: Duration = .seconds(2)) async throws {
        let future = state.withLock { s -> EventLoopFuture<RESPValue>? in
            s.counts[channel, default: 0] += 1
            guard s.counts[channel] == 1, let c = s.connection, c.isActive else { return nil }
            return c.sendFuture([ByteBuffer(string: "SUBSCRIBE"), ByteBuffer(string: channel)])
        }
        do {
            if let future {
                _ = try await future.get()
            } else if !(state.withLock { $0.connection?.isActive ?? false }) {
                // Not connected: `run` subscribes counted channels when it connects.
                try await waitForConnection(wait)
            }
        } catch {
            await unsubscribe(channel)
            throw error
        }
    }

    /// Uncounts a use of `channel`, unsubscribing after the last.
    public func unsubscribe(_ channel: String) async {
        let future = state.withLock { s -> EventLoopFuture<RESPValue>? in
            guard let n = s.counts[channel] else { return nil }
            if n > 1 {
                s.counts[channel] = n - 1
                return nil
            }
            s.counts[channel] = nil
            guard let c = s.connection, c.isActive else { return nil }
            return c.sendFuture([ByteBuffer(string: "UNSUBSCRIBE"), ByteBuffer(string: channel)])
        }
        _ = try? await future?.get()
    }

    /// Channels currently counted.
    public var channels: [String] { state.withLock { Array($0.counts.keys) } }

    private func waitForConnection(_ wait: Duration) async throws {
        let deadline = ContinuousClock.now + wait
        while !(state.withLock { $0.connection?.isActive ?? false }) {
            guard ContinuousClock.now < deadline else { throw RedisError.connection("pub/sub connection unavailable") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
