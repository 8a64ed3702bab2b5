import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus
import RealtimeCore
import ServiceLifecycle
import Synchronization

/// One gateway node: the engine, the REST and WebSocket server, and the node's background work,
/// as services for a `ServiceGroup` (in that order, so graceful shutdown drains WebSocket
/// clients first, then stops the server, then the engine).
public struct Gateway: Sendable {
    public let configuration: GatewayConfiguration
    /// The bootstrap API key in effect (configured or generated).
    public let bootstrapKey: String
    let runtime: GatewayRuntime
    let boundPort = BoundPort()
    /// The listener's TLS context, when TLS is configured.
    let tls: TLSContextStore?

    /// - Parameters:
    ///   - engine: nil builds the memory engine.
    ///   - registry: where `/metrics` reads from; `main` bootstraps swift-metrics with the same one.
    public init(
        configuration: GatewayConfiguration, engine: Engine? = nil, registry: PrometheusCollectorRegistry = .init(),
        clock: any RealtimeClock = SystemClock(), logger: Logger? = nil
    ) async throws {
        var configuration = configuration
        if configuration.tokenSecrets.isEmpty {
            configuration.tokenSecrets = [TokenSecret(id: "default", secret: RandomID.base64URL(bytes: 32))]
        }
        if configuration.nodeID.isEmpty { configuration.nodeID = GatewayConfiguration.defaultNodeID() }
        var logger = logger ?? Logger(label: "realtime.gateway")
        logger[metadataKey: "node"] = .string(configuration.nodeID)
        let key = configuration.apiKey ?? "rk_" + RandomID.base64URL(bytes: 24)
        self.bootstrapKey = key
        self.configuration = configuration
        // A bad certificate or key stops the node here, naming the setting.
        self.tls = try configuration.tls.map { settings throws(ConfigurationError) in try TLSContextStore(settings) }
        let engine = engine ?? MemoryEngine(configuration: configuration.engine, clock: clock).engine
        let tokens = await TokenAuthority(secrets: configuration.tokenSecrets, clock: clock)
        self.runtime = GatewayRuntime(
            configuration: configuration, engine: engine, tokens: tokens, bootstrapKeyHash: APIKeyMaterial.hash(key),
            metrics: GatewayMetrics(registry: registry), clock: clock, logger: logger)
    }

    /// The port the server listens on, once it does (useful with port 0); nil when the server
    /// stopped without listening (its address was taken, say).
    public func listeningPort() async -> Int? { await boundPort.wait() }

    /// The node's services, in start order.
    public var services: [any Service] {
        [
            EngineService(runtime: runtime), ListeningService(server: application(), port: boundPort),
            PresenceHeartbeatService(runtime: runtime), KeyRecheckService(runtime: runtime),
            DrainService(runtime: runtime),
        ] + (tls.map { [TLSReloadService(store: $0, logger: runtime.logger)] } ?? [])
    }

    /// Runs the node until SIGTERM or SIGINT, then shuts down within the configured bound.
    public func run() async throws {
        let timeout = Duration.seconds(configuration.timing.shutdownTimeoutSeconds)
        var config = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: runtime.logger)
        config.maximumGracefulShutdownDuration = timeout
        config.maximumCancellationDuration = .seconds(2)
        try await ServiceGroup(configuration: config).run()
    }

    func application() -> some Service {
        // HEAD is answered wherever GET is (load balancers probe `/healthz` with either).
        let router = Router(context: GatewayRequestContext.self, options: .autoGenerateHeadEndpoints)
        // Request metrics go to swift-metrics (the binary bootstraps it with the same registry).
        router.middlewares.add(MetricsMiddleware())
        let routes = RouteMethods()
        // Outside the error middleware, so error answers carry its header too.
        if let tls { router.middlewares.add(TLSMiddleware(requireClientCertificate: tls.settings.clientCAFile != nil)) }
        router.middlewares.add(ErrorMiddleware(routes: routes))
        RESTController(runtime: runtime).register(on: router)
        OperationsController(runtime: runtime).register(on: router)
        let webSocket = WebSocketController(runtime: runtime)
        webSocket.register(on: router)
        WebAssetsController().register(on: router)
        routes.record(router)
        // Frames this large are refused by the decoder (1009); messages over the configured
        // limit but within it get a 41300 error first.
        let frameLimit = max(4 * configuration.limits.maxInboundFrameBytes, 1 << 20)
        let tls = self.tls
        let fastPath =
            configuration.publishFastPath
            ? PublishFastPath.Service(
                endpoint: PublishEndpoint(runtime: runtime), hsts: tls == nil ? nil : TLSMiddleware.hsts,
                requireClientCertificate: tls?.settings.clientCAFile != nil, metrics: PublishRouteMetrics()) : nil
        let server = HTTPServerBuilder { responder in
            GatewayServerChannel(
                responder: responder, webSocket: webSocket, maxFrameSize: frameLimit, tls: tls,
                headReadTimeout: .seconds(Int64(configuration.timing.httpHeadReadTimeoutSeconds)),
                idleTimeout: .seconds(Int64(configuration.timing.httpIdleTimeoutSeconds)), fastPath: fastPath)
        }
        let port = boundPort
        return Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { channel in port.set(channel.localAddress?.port ?? 0) },
            logger: runtime.logger
        )
    }
}

/// The listening port, published once the server is up, or nil to every waiter once the
/// server has stopped without it.
final class BoundPort: Sendable {
    /// nil while pending; then the first outcome, which stands: a port, or none.
    private let state = Mutex<(outcome: Int??, waiters: [CheckedContinuation<Int?, Never>])>((nil, []))

    func set(_ port: Int) { settle(port) }

    /// The server stopped: a waiter that has no port by now never gets one.
    func end() { settle(nil) }

    private func settle(_ port: Int?) {
        let (outcome, waiters) = state.withLock { s in
            if s.outcome == nil { s.outcome = .some(port) }
            defer { s.waiters = [] }
            return (s.outcome ?? nil, s.waiters)
        }
        for w in waiters { w.resume(returning: outcome) }
    }

    func wait() async -> Int? {
        await withCheckedContinuation { c in
            let outcome = state.withLock { s -> Int?? in
                if s.outcome == nil { s.waiters.append(c) }
                return s.outcome
            }
            if let outcome { c.resume(returning: outcome) }
        }
    }
}

/// The HTTP server, which ends ``BoundPort``'s wait however it stops: whoever waits for the
/// port (the banner, a test) would otherwise wait forever when binding failed, and with it
/// the process, which then neither served nor exited.
struct ListeningService<Server: Service>: Service {
    let server: Server
    let port: BoundPort

    func run() async throws {
        defer { port.end() }
        try await server.run()
    }
}

extension GatewayConfiguration {
    /// Host name plus a random suffix, so two nodes on one host differ.
    public static func defaultNodeID() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let host = gethostname(&buffer, buffer.count) == 0 ? String(cString: buffer) : "node"
        return host + "-" + RandomID.hex(bytes: 3)
    }
}
