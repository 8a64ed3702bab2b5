import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A real Redis Cluster (3 primaries + 3 replicas) or Sentinel setup (a primary, a replica and
/// three sentinels) on loopback, started with the project's own `ops/redis-up.sh`, so the tests
/// exercise what operators run. Ports are free ones below the kernel's ephemeral range: a
/// cluster in 10000..<15000 (bus ports 20000..<25000), a sentinel setup in 16000..<19000
/// (15000..<16000 and 19000..<20000 are left to the ops scripts' own test, which starts Redis
/// without this type and cannot retry on a port another topology took meanwhile).
///
/// Every process is daemonized with a PID file; ``stop()`` ends them by those PIDs, and so does
/// the exit of the test process (an `atexit` hook) for shared topologies never stopped by hand.
public final class RedisTopologyProcess: @unchecked Sendable {
    // @unchecked: set up in `start`, then only read.
    public enum Kind: String, Sendable { case cluster, sentinel }

    public let kind: Kind
    /// Every server, bus, replication link and sentinel speaks TLS only (`RT_REDIS_TLS=1`).
    public let tls: Bool
    public private(set) var basePort = 0
    public private(set) var url = ""
    let directory: String

    public init(_ kind: Kind, tls: Bool = false) {
        self.kind = kind
        self.tls = tls
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("rt-topology-\(UUID().uuidString.prefix(8))").path
    }

    /// The ports of the data nodes: six for a cluster (primaries first), two for Sentinel.
    public var dataPorts: [Int] { (0..<(kind == .cluster ? 6 : 2)).map { basePort + $0 } }
    /// The sentinels' ports.
    public var sentinelPorts: [Int] { kind == .sentinel ? (2..<5).map { basePort + $0 } : [] }

    public static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Starts the topology (fast cluster failure detection: 1 s node timeout).
    public func start(nodeTimeoutMilliseconds: Int = 1000) async throws {
        for _ in 0..<5 {
            basePort = try await Self.freeBlock(kind == .cluster ? 6 : 5, in: kind == .cluster ? 10_000..<15_000 : 16_000..<19_000, bus: kind == .cluster)
            let result = try await Command.run(
                ["bash", Self.repositoryRoot + "/ops/redis-up.sh", kind.rawValue], directory: Self.repositoryRoot,
                environment: [
                    "RT_RUN_DIR": directory, "RT_REDIS_PORT": String(basePort), "RT_REDIS_NODE_TIMEOUT_MS": String(nodeTimeoutMilliseconds),
                    "RT_REDIS_TLS": tls ? "1" : "",
                ],
                timeout: 150)
            if result.status == 0, let last = result.output.split(separator: "\n").last, last.hasPrefix(tls ? "rediss" : "redis") {
                url = String(last)
                Self.live.withLock { $0.insert(directory) }
                return
            }
            await stop()  // a port was taken meanwhile: try another block
        }
        throw TopologyError("could not start a redis \(kind.rawValue) in \(directory)")
    }

    /// The PID of one process: `c0`…`c5` (cluster nodes by port order), `primary`, `replica`, `s0`…`s2`.
    public func pid(_ name: String) -> pid_t? {
        (try? String(contentsOfFile: "\(directory)/redis-\(name).pid", encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// The process name of the data node on `port`.
    public func name(ofPort port: Int) -> String {
        kind == .cluster ? "c\(port - basePort)" : (port == basePort ? "primary" : "replica")
    }

    /// SIGKILL one process and wait until it is gone.
    public func kill(_ name: String) {
        if let pid = pid(name) { ProcessState.killAndWait(pid) }
    }

    /// Freezes one process (SIGSTOP): its connections stay open and nothing is answered.
    public func suspend(_ name: String) {
        if let pid = pid(name) { Glibc.kill(pid, SIGSTOP) }
    }

    /// Lets a suspended process run again (SIGCONT).
    public func resume(_ name: String) {
        if let pid = pid(name) { Glibc.kill(pid, SIGCONT) }
    }

    /// `redis-cli -p port args…`: its output.
    public func cli(_ port: Int, _ arguments: [String]) async throws -> String {
        let tlsArguments = tls ? ["--tls", "--cacert", directory + "/tls/ca.crt"] : []
        return try await Command.run(["redis-cli", "-p", String(port)] + tlsArguments + arguments, directory: directory, timeout: 30).output
    }

    /// Stops every process of the topology (by PID) and removes its files.
    public func stop() async {
        _ = try? await Command.run(
            ["bash", Self.repositoryRoot + "/ops/redis-down.sh"], directory: Self.repositoryRoot, environment: ["RT_RUN_DIR": directory], timeout: 60)
        Self.live.withLock { _ = $0.remove(directory) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: Shared topologies

    /// One cluster and one sentinel setup per test process, for tests that only need a working
    /// deployment (each uses a key prefix of its own). Stopped when the process exits.
    public static func shared(_ kind: Kind) async throws -> RedisTopologyProcess {
        try await sharedStarter.get(kind)
    }

    private static let sharedStarter = SharedStarter()

    actor SharedStarter {
        var started: [Kind: Task<RedisTopologyProcess, any Error>] = [:]
        func get(_ kind: Kind) async throws -> RedisTopologyProcess {
            if let task = started[kind] { return try await task.value }
            let task = Task {
                let topology = RedisTopologyProcess(kind)
                try await topology.start(nodeTimeoutMilliseconds: 2000)
                return topology
            }
            started[kind] = task
            RedisTopologyProcess.installExitHook()
            return try await task.value
        }
    }

    static let live = Mutex<Set<String>>([])
    private static let hookInstalled = Mutex(false)

    static func installExitHook() {
        guard hookInstalled.withLock({ done in defer { done = true }; return !done }) else { return }
        atexit {
            for directory in RedisTopologyProcess.live.withLock({ $0 }) {
                // Synchronous at exit: read each PID file and kill.
                let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
                for file in files where file.hasPrefix("redis-") && file.hasSuffix(".pid") {
                    if let text = try? String(contentsOfFile: "\(directory)/\(file)", encoding: .utf8),
                        let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
                    {
                        Glibc.kill(pid, SIGKILL)
                    }
                }
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
    }

    /// The first port of `count` consecutive free ports in `range` (with their bus ports, port +
    /// 10000, free too when `bus`).
    public static func freeBlock(_ count: Int, in range: Range<Int>, bus: Bool) async throws -> Int {
        for _ in 0..<200 {
            let base = Int.random(in: range.lowerBound..<(range.upperBound - count))
            var free = true
            for port in base..<(base + count) {
                let portFree = await isFree(port)
                let busFree = bus ? await isFree(port + 10_000) : true
                if !portFree || !busFree {
                    free = false
                    break
                }
            }
            if free { return base }
        }
        throw TopologyError("no free block of \(count) ports in \(range)")
    }

    private static func isFree(_ port: Int) async -> Bool {
        guard let channel = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: port).get()
        else { return false }
        try? await channel.close().get()
        return true
    }
}

public struct TopologyError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
