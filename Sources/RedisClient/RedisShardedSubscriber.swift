import Logging
import NIOCore
import Synchronization

/// What the engine needs from pub/sub, whatever the deployment. The subscribed channels form a
/// set (not counted); `run` keeps the links up and reports `onInterrupted` when messages may be
/// missed and `onRestored` once every channel of the set is live again.
public protocol RedisPubSub: Sendable {
    func run(
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onInterrupted: @escaping @Sendable () -> Void,
        onRestored: @escaping @Sendable () -> Void
    ) async
    /// Adds `channel`; returns once Redis confirmed it. Throws (and drops it) when no link
    /// came up within `wait`.
    func subscribe(_ channel: String, wait: Duration) async throws
    func unsubscribe(_ channel: String) async
    /// Whether every link started so far is connected, with its channels subscribed (what a
    /// node's readiness asks: a subscribe now waits for no connection).
    var isConnected: Bool { get }
}

extension RedisPubSub {
    public func subscribe(_ channel: String) async throws { try await subscribe(channel, wait: .seconds(2)) }
}

extension RedisSubscriber: RedisPubSub {}

/// Sharded pub/sub on a Redis Cluster: each channel is `SSUBSCRIBE`d on the primary that serves
/// its slot, through one ``RedisSubscriber`` (one connection) per primary.
///
/// Channels follow their slot: a reconciliation (every second, every 100 ms while a link is
/// down) compares each channel's shard with the cluster client's slot map and moves the ones
/// whose slot moved, to a new primary after a failover or to the importing node after a
/// migration (the old node's `sunsubscribe` push drops that link, which starts it). A shard
/// left without channels that is down or no longer a primary is stopped.
///
/// `onInterrupted` fires when the first link goes down; `onRestored` once every link is up and
/// every channel is subscribed on its slot's primary again.
public final class RedisShardedSubscriber: RedisPubSub {
    let cluster: RedisClusterClient
    let logger: Logger
    let state = Mutex(State())

    struct Handlers {
        var message: @Sendable (String, ByteBuffer) -> Void
        var interrupted: @Sendable () -> Void
        var restored: @Sendable () -> Void
    }

    struct Shard {
        let subscriber: RedisSubscriber
        var task: Task<Void, Never>?
    }

    struct State {
        var handlers: Handlers?
        var shards: [ClusterNodeAddress: Shard] = [:]
        /// The shard each channel is subscribed on (or is being subscribed on).
        var owner: [String: ClusterNodeAddress] = [:]
        /// Channels of the set that no shard has confirmed (a subscribe during a move failed).
        var homeless: Set<String> = []
        var down: Set<ClusterNodeAddress> = []
        var interrupted = false
        var lastRefresh = ContinuousClock.now
    }

    public init(cluster: RedisClusterClient, logger: Logger) {
        self.cluster = cluster
        self.logger = logger
    }

    public func run(
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onInterrupted: @escaping @Sendable () -> Void,
        onRestored: @escaping @Sendable () -> Void
    ) async {
        let pending = state.withLock { s -> [ClusterNodeAddress] in
            s.handlers = Handlers(message: onMessage, interrupted: onInterrupted, restored: onRestored)
            return Array(s.shards.keys)
        }
        for node in pending { start(node) }
        while !Task.isCancelled {
            await reconcile()
            let troubled = state.withLock { !$0.down.isEmpty || !$0.homeless.isEmpty }
            try? await Task.sleep(for: troubled ? .milliseconds(100) : .seconds(1), clock: .suspending)
        }
        let tasks = state.withLock { s -> [Task<Void, Never>] in
            s.handlers = nil
            defer { s.shards = [:] }
            return s.shards.values.compactMap(\.task)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }

    public func subscribe(_ channel: String, wait: Duration) async throws {
        let map = try await cluster.slotMap().map
        guard let node = map.primary(forSlot: HashSlot.of(channel)) else { throw RedisError.connection("slot of \(channel) is not served") }
        let subscriber = state.withLock { s -> RedisSubscriber in
            s.owner[channel] = node
            s.homeless.remove(channel)
            return shard(node, &s)
        }
        do {
            try await subscriber.subscribe(channel, wait: wait)
        } catch {
            state.withLock { s in if s.owner[channel] == node { s.owner[channel] = nil } }
            throw error
        }
    }

    /// No link that was up is down, and every channel has a shard that confirmed it. A shard
    /// made on demand (a first channel on another primary) is not counted while it first
    /// connects: the subscribe that made it waits for it, and counting it would turn `/readyz`
    /// to 503 for that moment on a node that serves.
    public var isConnected: Bool {
        state.withLock { $0.down.isEmpty && $0.homeless.isEmpty }
    }

    public func unsubscribe(_ channel: String) async {
        let subscriber = state.withLock { s -> RedisSubscriber? in
            s.homeless.remove(channel)
            guard let node = s.owner.removeValue(forKey: channel) else { return nil }
            return s.shards[node]?.subscriber
        }
        await subscriber?.unsubscribe(channel)
    }

    /// The shard subscriber of `node`, made (and started, when `run` is running) on first use.
    private func shard(_ node: ClusterNodeAddress, _ s: inout State) -> RedisSubscriber {
        if let shard = s.shards[node] { return shard.subscriber }
        let subscriber = RedisSubscriber(configuration: cluster.configuration(for: node), group: cluster.group, logger: logger, sharded: true)
        s.shards[node] = Shard(subscriber: subscriber)
        if s.handlers != nil {
            s.shards[node]!.task = launch(node, subscriber)
        }
        return subscriber
    }

    private func start(_ node: ClusterNodeAddress) {
        state.withLock { s in
            guard let shard = s.shards[node], shard.task == nil else { return }
            s.shards[node]!.task = launch(node, shard.subscriber)
        }
    }

    private func launch(_ node: ClusterNodeAddress, _ subscriber: RedisSubscriber) -> Task<Void, Never> {
        Task {
            await subscriber.run(
                onMessage: { [weak self] channel, payload in
                    self?.state.withLock { $0.handlers?.message }?(channel, payload)
                },
                onInterrupted: { [weak self] in self?.linkDown(node) },
                onRestored: { [weak self] in self?.linkUp(node) })
        }
    }

    // The notifications are made under the lock, so that they reach the hub in the order the
    // links changed: a `restored` computed before another link's `interrupted` but delivered
    // after it would let the hub go live over a link that is down.

    private func linkDown(_ node: ClusterNodeAddress) {
        state.withLock { s in
            s.down.insert(node)
            Self.interrupt(&s)
        }
        cluster.refreshSoon()
    }

    private func linkUp(_ node: ClusterNodeAddress) {
        state.withLock { s in
            s.down.remove(node)
            Self.restoreIfWhole(&s)
        }
    }

    private static func interrupt(_ s: inout State) {
        guard !s.interrupted else { return }
        s.interrupted = true
        s.handlers?.interrupted()
    }

    private static func restoreIfWhole(_ s: inout State) {
        guard s.interrupted, s.down.isEmpty, s.homeless.isEmpty else { return }
        s.interrupted = false
        s.handlers?.restored()
    }

    /// Moves channels whose slot has another primary now; stops shards that serve nothing.
    func reconcile() async {
        // The map is read again while a link is down, and every few seconds anyway: a node that
        // publishes nothing learns of a slot's move only this way (besides `sunsubscribe`).
        let due = state.withLock { s -> Bool in
            let due = !s.down.isEmpty || !s.homeless.isEmpty || ContinuousClock.now - s.lastRefresh > .seconds(2)
            if due { s.lastRefresh = .now }
            return due
        }
        if due { _ = try? await cluster.refresh() }
        guard let map = try? await cluster.slotMap().map else { return }
        let moves = state.withLock { s -> [(channel: String, from: RedisSubscriber?, to: ClusterNodeAddress)] in
            var moves: [(String, RedisSubscriber?, ClusterNodeAddress)] = []
            for (channel, node) in s.owner {
                guard let want = map.primary(forSlot: HashSlot.of(channel)), want != node else { continue }
                moves.append((channel, s.shards[node]?.subscriber, want))
            }
            for channel in s.homeless {
                if let want = map.primary(forSlot: HashSlot.of(channel)) { moves.append((channel, nil, want)) }
            }
            return moves
        }
        if !moves.isEmpty {
            // Messages published on the new primary before the move reached nobody here: the
            // node reads them from history once the channels are subscribed there.
            state.withLock { Self.interrupt(&$0) }
        }
        for move in moves {
            if moves.count < 20 { logger.info("redis cluster: channel follows its slot", metadata: ["channel": "\(move.channel)", "to": "\(move.to)"]) }
            let subscriber = state.withLock { s -> RedisSubscriber? in
                guard s.owner[move.channel] != nil || s.homeless.contains(move.channel) else { return nil }  // unsubscribed meanwhile
                s.owner[move.channel] = move.to
                s.homeless.remove(move.channel)
                return shard(move.to, &s)
            }
            guard let subscriber else { continue }
            await move.from?.unsubscribe(move.channel)
            do {
                try await subscriber.subscribe(move.channel, wait: .seconds(2))
            } catch {
                state.withLock { s in
                    if s.owner[move.channel] == move.to {
                        s.owner[move.channel] = nil
                        s.homeless.insert(move.channel)
                    }
                }
            }
        }
        // Shards with no channels that are down or no longer primaries are stopped (a channel
        // there later makes a new one).
        let primaries = Set(map.primaries)
        let retired = state.withLock { s -> [Task<Void, Never>] in
            let used = Set(s.owner.values)
            var retired: [Task<Void, Never>] = []
            for (node, shard) in s.shards where !used.contains(node) && (!primaries.contains(node) || s.down.contains(node)) {
                if let task = shard.task { retired.append(task) }
                s.shards[node] = nil
                s.down.remove(node)
            }
            Self.restoreIfWhole(&s)
            return retired
        }
        for task in retired { task.cancel() }
    }
}
