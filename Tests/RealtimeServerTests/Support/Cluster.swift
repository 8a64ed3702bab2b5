import AsyncHTTPClient
import Foundation
import RealtimeCore
import RealtimeTestSupport
import Testing

/// A `realtime-gateway` process (the real binary) on a free port.
final class GatewayProcess: NodeAccess, @unchecked Sendable {
    // @unchecked: `port` and `process` are set in `start` and read afterwards by the test's own task.
    private(set) var port: Int
    let key: String
    let nodeID: String
    private var process: Process?
    /// Whether the node serves HTTPS/WSS (its banner says https://).
    private(set) var tls = false

    /// A node to start (it binds a free port itself and reports it), or, with a port, an
    /// address to reach something already running.
    init(port: Int = 0, key: String, nodeID: String) {
        self.port = port
        self.key = key
        self.nodeID = nodeID
    }

    static var binary: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/realtime-gateway")
    }

    func start(environment: [String: String]) async throws {
        let p = Process()
        p.executableURL = Self.binary
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("REALTIME_") }
        for (k, v) in environment { env[k] = v }
        env["REALTIME_PORT"] = "0"
        env["REALTIME_NODE_ID"] = nodeID
        env["REALTIME_LOG_LEVEL"] = env["REALTIME_LOG_LEVEL"] ?? "critical"
        p.environment = env
        let outPath = FileManager.default.temporaryDirectory.appendingPathComponent("gw-\(UUID().uuidString)").path
        FileManager.default.createFile(atPath: outPath, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        // REALTIME_TEST_LOG_DIR keeps each node's log (for debugging a failing test).
        if let dir = ProcessInfo.processInfo.environment["REALTIME_TEST_LOG_DIR"] {
            let path = "\(dir)/\(nodeID)-\(UUID().uuidString.prefix(4)).log"
            FileManager.default.createFile(atPath: path, contents: nil)
            p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            env["REALTIME_LOG_LEVEL"] = "debug"
            p.environment = env
        } else {
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        process = p
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        // The banner names the port the node bound.
        try await eventually("node \(nodeID) to print its address", timeout: .seconds(20)) {
            let banner = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
            guard let range = banner.range(of: "listening on http://127.0.0.1:") ?? banner.range(of: "listening on https://127.0.0.1:") else {
                return false
            }
            self.tls = banner.contains("listening on https://")
            self.port = Int(banner[range.upperBound...].prefix { $0.isNumber }) ?? 0
            return self.port > 0
        }
        // A TLS node is checked by its test, with a client that trusts the test's CA.
        guard !tls else { return }
        try await eventually("node \(nodeID) ready", timeout: .seconds(20)) {
            (try? await self.rest(.GET, "/readyz", key: ""))?.status == 200
        }
    }

    var isRunning: Bool { process.map { !ProcessState.hasExited($0.processIdentifier) } ?? false }

    /// Resident memory of the node process (kB), from /proc.
    var residentKilobytes: Int? {
        guard let pid = process?.processIdentifier,
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }

    /// SIGKILL: the node dies without a word (no close frames, no presence cleanup).
    func kill9() {
        guard let p = process, isRunning else { return }
        ProcessState.killAndWait(p.processIdentifier)
    }

    /// SIGTERM and wait (bounded) for the graceful exit, without blocking a thread: the node's
    /// drain waits for this process's clients to answer their close frames.
    func terminate() async {
        guard let p = process, isRunning else { return }
        kill(p.processIdentifier, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(15)
        while isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20), clock: .suspending) }
        if isRunning { kill9() }
    }

    deinit { kill9() }
}

/// The Redis deployments the cluster tests run on.
enum Deployment: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// One redis-server of the test's own.
    case single
    /// The test process's shared Redis Cluster (3 primaries + 3 replicas, sharded pub/sub).
    case cluster
    /// The test process's shared Sentinel setup (a primary, a replica, three sentinels).
    case sentinel
    var testDescription: String { rawValue }
}

/// Real Redis and N gateway processes sharing it, as users run them.
struct Cluster {
    /// The test's own redis-server (single deployment).
    let redis: RedisServerProcess?
    let url: String
    /// The nodes' key prefix (a random one per test).
    let prefix: String
    let nodes: [GatewayProcess]
    static let key = "cluster-bootstrap-key-0123456789"
    static let secret = String(repeating: "c", count: 40)

    /// Starts `count` nodes on the deployment (or on `topology`, a test's own cluster or
    /// sentinel setup), each with a key prefix of the test's own.
    static func with(
        nodes count: Int, environment: [String: String] = [:], deployment: Deployment = .single, topology: RedisTopologyProcess? = nil,
        urlOptions: String = "", _ body: (Cluster) async throws -> Void
    ) async throws {
        var redis: RedisServerProcess?
        var url: String
        if let topology {
            url = topology.url
        } else {
            switch deployment {
            case .single:
                let server = try RedisServerProcess()
                try await server.start()
                redis = server
                url = server.url
            case .cluster: url = try await RedisTopologyProcess.shared(.cluster).url
            case .sentinel: url = try await RedisTopologyProcess.shared(.sentinel).url
            }
        }
        if !urlOptions.isEmpty { url += (url.contains("?") ? "&" : "?") + urlOptions }
        var nodes: [GatewayProcess] = []
        let prefix = environment["REALTIME_KEY_PREFIX"] ?? "t" + RandomID.hex(bytes: 3)
        let env = [
            "REALTIME_REDIS_URL": url, "REALTIME_TOKEN_SECRET": secret, "REALTIME_API_KEY": key, "REALTIME_KEY_PREFIX": prefix,
        ].merging(environment) { $1 }
        do {
            for i in 0..<count {
                let node = GatewayProcess(key: key, nodeID: "node-\(i + 1)")
                try await node.start(environment: env)
                nodes.append(node)
            }
            try await body(Cluster(redis: redis, url: url, prefix: prefix, nodes: nodes))
        } catch {
            for n in nodes { await n.terminate() }
            redis?.stop()
            throw error
        }
        for n in nodes { await n.terminate() }
        redis?.stop()
    }
}

/// Waits (bounded) for a condition, polling.
func eventually(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TestSocket.Timeout(what: what) }
        try await Task.sleep(for: .milliseconds(20), clock: .suspending)
    }
}
