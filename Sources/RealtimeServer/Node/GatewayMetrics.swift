import NIOCore
import Prometheus
import Synchronization

/// The node's own Prometheus metrics, registered on the registry `/metrics` renders.
struct GatewayMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let connections: Gauge
    let connectionsOpened: Counter
    let published: Counter
    let duplicates: Counter
    let delivered: Counter
    /// `delivered`, counted per event loop (``LoopTally``).
    let deliveredPerLoop: LoopTallies
    let slowConsumers: Counter
    let rateLimited: Counter
    let subscriptions: Gauge

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        connections = registry.makeGauge(name: "realtime_connections", help: "Open WebSocket connections on this node")
        connectionsOpened = registry.makeCounter(name: "realtime_connections_opened_total", help: "WebSocket connections accepted")
        published = registry.makeCounter(name: "realtime_messages_published_total", help: "Messages published through this node")
        duplicates = registry.makeCounter(name: "realtime_messages_duplicate_total", help: "Publishes answered as duplicates of an idempotency key")
        delivered = registry.makeCounter(name: "realtime_frames_delivered_total", help: "Frames queued to local subscribers")
        deliveredPerLoop = LoopTallies(delivered)
        slowConsumers = registry.makeCounter(name: "realtime_slow_consumers_total", help: "Connections closed with 4008")
        rateLimited = registry.makeCounter(name: "realtime_rate_limited_total", help: "Publishes refused with 42900")
        subscriptions = registry.makeGauge(name: "realtime_subscriptions", help: "Channel subscriptions on this node")
    }
}

/// A count kept on one event loop and added to a shared counter once per turn of that loop.
/// A fan-out task writes, and a flush pass flushes, hundreds of sockets in one go; counting each
/// into the shared counter would be an atomic update of one cache line from every core for
/// each socket.
final class LoopTally: @unchecked Sendable {
    private let loop: any EventLoop
    private let counter: Counter
    /// Touched only on `loop`.
    private var pending: Int64 = 0

    init(loop: any EventLoop, counter: Counter) {
        self.loop = loop
        self.counter = counter
    }

    /// Counts `n`; call on the loop. The shared counter gets the turn's total once the tasks
    /// already queued on the loop have run.
    func add(_ n: Int) {
        loop.assertInEventLoop()
        if pending == 0 { loop.execute { self.report() } }
        pending += Int64(n)
    }

    private func report() {
        counter.increment(by: pending)
        pending = 0
    }
}

/// One ``LoopTally`` per event loop for a counter, made on first use.
final class LoopTallies: Sendable {
    private let counter: Counter
    private let tallies = Mutex<[ObjectIdentifier: LoopTally]>([:])

    init(_ counter: Counter) { self.counter = counter }

    /// The tally of `loop` (a lookup under a lock: once per connection, not per use).
    func tally(for loop: any EventLoop) -> LoopTally {
        tallies.withLock { table in
            let key = ObjectIdentifier(loop)
            if let found = table[key] { return found }
            let made = LoopTally(loop: loop, counter: counter)
            table[key] = made
            return made
        }
    }
}
