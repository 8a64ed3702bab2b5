import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Finds the primary that Redis Sentinel names for `masterName`, and follows failovers.
///
/// - ``primary()`` asks the sentinels in turn (`SENTINEL get-master-addr-by-name`); when none
///   answers it falls back to the last primary it learnt, which the connection's `ROLE` check
///   then confirms or refuses.
/// - ``watch(onSwitch:)`` listens for `+switch-master` on one sentinel at a time (moving to the
///   next when that one fails) and reports the new primary, so that pools and the pub/sub link
///   reconnect at once instead of waiting for their connections to fail.
public final class RedisSentinel: Sendable {
    public let sentinels: [ClusterNodeAddress]
    public let masterName: String
    /// Credentials, TLS and timeouts for the data nodes.
    public let template: RedisConfiguration
    public let sentinelPassword: String?
    let group: any EventLoopGroup
    let logger: Logger
    let known = Mutex<ClusterNodeAddress?>(nil)

    public init(
        sentinels: [ClusterNodeAddress], masterName: String, template: RedisConfiguration, sentinelPassword: String?,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) {
        self.sentinels = sentinels
        self.masterName = masterName
        self.template = template
        self.sentinelPassword = sentinelPassword
        self.group = group
        self.logger = logger
    }

    /// How to reach a sentinel: the template's TLS and timeouts, its own password, no database.
    func sentinelConfiguration(_ node: ClusterNodeAddress) -> RedisConfiguration {
        var c = RedisConfiguration(host: node.host, port: node.port, password: sentinelPassword, tls: template.tls)
        c.tlsCAFile = template.tlsCAFile
        c.connectTimeout = min(template.connectTimeout, .seconds(1))
        c.commandTimeout = min(template.commandTimeout, .seconds(2))
        return c
    }

    /// The primary's configuration, as the sentinels name it now.
    public func primary() async throws -> RedisConfiguration {
        var lastError: any Error = RedisError.connection("no sentinel given")
        for sentinel in sentinels {
            do {
                let connection = try await RedisConnection.connect(sentinelConfiguration(sentinel), group: group)
                defer { connection.close() }
                let reply = try await connection.send(["SENTINEL", "get-master-addr-by-name", masterName])
                guard let parts = reply.array, parts.count == 2, let host = parts[0].string, let port = parts[1].int.map(Int.init) else {
                    lastError = RedisError.connection("sentinel \(sentinel) knows no primary named \(masterName)")
                    continue
                }
                let address = ClusterNodeAddress(host: host, port: port)
                known.withLock { $0 = address }
                return template.at(address)
            } catch {
                lastError = error
            }
        }
        if let address = known.withLock({ $0 }) { return template.at(address) }
        throw RedisError.connection("no primary known for \(masterName): \(lastError)")
    }

    /// The last primary learnt, if any.
    public var lastKnownPrimary: ClusterNodeAddress? { known.withLock { $0 } }

    /// Listens for `+switch-master` until cancelled; calls `onSwitch` with each new primary.
    public func watch(onSwitch: @escaping @Sendable (ClusterNodeAddress) -> Void) async {
        var index = 0
        while !Task.isCancelled {
            let sentinel = sentinels[index % sentinels.count]
            index += 1
            do {
                let name = masterName
                let connection = try await RedisConnection.connect(sentinelConfiguration(sentinel), group: group) { [weak self] _, payload in
                    // "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
                    let words = String(buffer: payload).split(separator: " ")
                    guard words.count == 5, words[0] == name, let port = Int(words[4]) else { return }
                    let address = ClusterNodeAddress(host: String(words[3]), port: port)
                    self?.known.withLock { $0 = address }
                    self?.logger.warning("redis sentinel: primary switched", metadata: ["master": "\(name)", "primary": "\(address)"])
                    onSwitch(address)
                }
                defer { connection.close() }
                try await connection.send(["SUBSCRIBE", "+switch-master"])
                while !Task.isCancelled, connection.isActive {
                    try await Task.sleep(for: .seconds(1), clock: .suspending)
                    try await connection.send(["PING"])
                }
            } catch is CancellationError {
                return
            } catch {
                logger.debug("redis sentinel watch: \(sentinel) unavailable", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .milliseconds(200), clock: .suspending)
        }
    }
}

/// The command client, pub/sub link and background work for a deployment named by a URL.
public struct RedisDeployment: Sendable {
    public let topology: RedisTopology
    public let commands: any RedisCommandSending
    public let pubsub: any RedisPubSub
    /// Whether node-to-node messages use sharded pub/sub (`SPUBLISH`): on a cluster.
    public let sharded: Bool
    public let cluster: RedisClusterClient?
    public let sentinel: RedisSentinel?

    public init(url: String, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) throws(RedisError) {
        topology = try RedisTopology(url: url)
        switch topology {
        case .single(let configuration):
            commands = RedisCommandClient(configuration: configuration, group: group)
            pubsub = RedisSpreadSubscriber(configuration: configuration, group: group, logger: logger)
            sharded = false
            cluster = nil
            sentinel = nil
        case .cluster(let seeds, let template):
            let client = RedisClusterClient(seeds: seeds, template: template, group: group, logger: logger)
            commands = client
            pubsub = RedisShardedSubscriber(cluster: client, logger: logger)
            sharded = true
            cluster = client
            sentinel = nil
        case .sentinel(let sentinels, let masterName, let template, let password):
            let watcher = RedisSentinel(sentinels: sentinels, masterName: masterName, template: template, sentinelPassword: password, group: group, logger: logger)
            commands = RedisCommandClient(configuration: template, group: group, requirePrimary: true, resolve: { try await watcher.primary() })
            pubsub = RedisSpreadSubscriber(configuration: template, group: group, logger: logger, resolve: { try await watcher.primary() })
            sharded = false
            cluster = nil
            sentinel = watcher
        }
    }

    /// Background work of the deployment until cancelled: following Sentinel failovers (the
    /// pools and the pub/sub link reconnect to the new primary at once).
    public func run() async {
        guard let sentinel else { return }
        let commands = self.commands as? RedisCommandClient
        let pubsub = self.pubsub as? RedisSpreadSubscriber
        await sentinel.watch { _ in
            commands?.resetConnections()
            pubsub?.reconnect()
        }
    }
}
