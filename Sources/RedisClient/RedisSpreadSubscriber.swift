import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Pub/sub on one server (or a Sentinel-managed primary) over one connection per event loop:
/// each channel is subscribed on the connection its name hashes to.
///
/// With one connection, one event loop would read and route every message of every channel
/// the node follows, the node's ceiling on many cores. Spread, the messages of different
/// channels are read and handed to the hub on different loops in parallel, while each channel's
/// messages still arrive on one connection, in publish order. Redis does the same work: a
/// channel has one subscriber connection per node either way.
///
/// `onInterrupted` fires when the first link goes down; `onRestored` once every link is up and
/// has every one of its channels subscribed again (as with one link: the hub recovers every
/// channel, whichever link dropped).
public final class RedisSpreadSubscriber: RedisPubSub {
    let links: [RedisSubscriber]
    let state = Mutex(State())

    struct State {
        var interrupted: (@Sendable () -> Void)?
        var restored: (@Sendable () -> Void)?
        var down: Set<Int> = []
    }

    /// - Parameter links: how many connections (nil: one per loop of `group`).
    public init(
        configuration: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, links: Int? = nil,
        logger: Logger, resolve: (@Sendable () async throws -> RedisConfiguration)? = nil
    ) {
        let loops = Array(group.makeIterator())
        let count = max(1, links ?? loops.count)
        self.links = (0..<count).map { i in
            RedisSubscriber(configuration: configuration, group: loops.isEmpty ? group : loops[i % loops.count], logger: logger, resolve: resolve)
        }
    }

    /// The link a channel lives on: FNV-1a of its name, the same in every process.
    func link(for channel: String) -> RedisSubscriber {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in channel.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return links[Int(hash % UInt64(links.count))]
    }

    public func run(
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onInterrupted: @escaping @Sendable () -> Void,
        onRestored: @escaping @Sendable () -> Void
    ) async {
        state.withLock { s in
            s.interrupted = onInterrupted
            s.restored = onRestored
        }
        await withTaskGroup(of: Void.self) { group in
            for (index, link) in links.enumerated() {
                group.addTask {
                    await link.run(
                        onMessage: onMessage,
                        onInterrupted: { [weak self] in self?.linkDown(index) },
                        onRestored: { [weak self] in self?.linkUp(index) })
                }
            }
        }
    }

    /// The notifications are made under the lock, so that they reach the hub in the order the
    /// links changed: a `restored` computed before another link's `interrupted` but delivered
    /// after it would let the hub go live over a link that is down.
    private func linkDown(_ index: Int) {
        state.withLock { s in
            let first = s.down.isEmpty
            s.down.insert(index)
            if first { s.interrupted?() }
        }
    }

    private func linkUp(_ index: Int) {
        state.withLock { s in
            guard s.down.remove(index) != nil, s.down.isEmpty else { return }
            s.restored?()
        }
    }

    public func subscribe(_ channel: String, wait: Duration) async throws {
        try await link(for: channel).subscribe(channel, wait: wait)
    }

    public func unsubscribe(_ channel: String) async {
        await link(for: channel).unsubscribe(channel)
    }

    public var isConnected: Bool { links.allSatisfy(\.isConnected) }

    /// Closes every link now (their server was demoted, say); each connects again at once.
    public func reconnect() {
        for link in links { link.reconnect() }
    }
}
