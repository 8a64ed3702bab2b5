import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import RealtimeCore
import RealtimeRedis
import RedisClient
import RealtimeServer

/// `realtime-gateway`: configuration -> engine -> server. Every setting is an environment
/// variable and a flag of the same name (`REALTIME_PORT` = `--port`); flags win.
@main
struct RealtimeGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "realtime-gateway",
        abstract: "A realtime messaging gateway node (REST publish, WebSocket subscribe).",
        discussion: "Settings (environment variable / flag):\n"
            + GatewayConfiguration.settings.map { "  \($0.variable) / --\($0.flag)\n      \($0.help)" }.joined(separator: "\n")
    )

    @Argument(parsing: .captureForPassthrough, help: "Settings as --flag value or --flag=value.")
    var flags: [String] = []

    func run() async throws {
        let config: GatewayConfiguration
        do {
            config = try GatewayConfiguration.load(try GatewayConfiguration.values(environment: ProcessInfo.processInfo.environment, flags: flags))
        } catch {
            FileHandle.standardError.write(Data("realtime-gateway: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let level = Logger.Level(rawValue: config.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var configuration = config
        if configuration.nodeID.isEmpty { configuration.nodeID = GatewayConfiguration.defaultNodeID() }
        var engine: Engine?
        if let url = configuration.redisURL {
            var logger = Logger(label: "realtime.redis")
            logger[metadataKey: "node"] = .string(configuration.nodeID)
            do {
                engine = try RedisEngine(
                    url: url, configuration: configuration.engine, keyPrefix: configuration.keyPrefix, nodeID: configuration.nodeID, logger: logger
                ).engine
            } catch let error as RedisError {
                throw ConfigurationError(setting: "REALTIME_REDIS_URL", problem: "\(error)")
            }
        }
        let gateway = try await Gateway(configuration: configuration, engine: engine, registry: registry)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await gateway.run()
                } catch {
                    // Said plainly (the service group logs it at debug level only): a node that
                    // cannot listen stops with the reason, and a non-zero status.
                    let listening = await gateway.listeningPort() != nil
                    let what = listening ? "stopped" : "cannot listen on \(config.host):\(config.port)"
                    FileHandle.standardError.write(Data("realtime-gateway: \(what): \(error)\n".utf8))
                    throw ExitCode.failure
                }
            }
            group.addTask {
                guard let port = await gateway.listeningPort() else { return }
                var banner = "realtime-gateway listening on \(config.tls == nil ? "http" : "https")://\(config.host):\(port) (engine: \(config.redisURL == nil ? "memory" : "redis"), node: \(gateway.configuration.nodeID))\n"
                banner += "WebSocket endpoint: ws://\(config.host):\(port)/v1/realtime/ws\n"
                if config.apiKey == nil {
                    banner += "Bootstrap API key (all scopes, shown once): \(gateway.bootstrapKey)\n"
                } else {
                    banner += "Bootstrap API key: from REALTIME_API_KEY\n"
                }
                FileHandle.standardOutput.write(Data(banner.utf8))
            }
            try await group.waitForAll()
        }
    }
}
