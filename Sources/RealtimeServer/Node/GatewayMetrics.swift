import Prometheus

/// The node's own Prometheus metrics, registered on the registry `/metrics` renders.
struct GatewayMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let connections: Gauge
    let connectionsOpened: Counter
    let published: Counter
    let duplicates: Counter
    let delivered: Counter
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
        slowConsumers = registry.makeCounter(name: "realtime_slow_consumers_total", help: "Connections closed with 4008")
        rateLimited = registry.makeCounter(name: "realtime_rate_limited_total", help: "Publishes refused with 42900")
        subscriptions = registry.makeGauge(name: "realtime_subscriptions", help: "Channel subscriptions on this node")
    }
}
