import Foundation
import NIOCore
import NIOPosix

/// A real Redis Cluster on loopback for tests: `primaries` primaries with one replica each
/// (six `redis-server` processes by default), created with `redis-cli --cluster create`.
/// Ports sit below 55536, with each bus port (port + 10000) free too. Every process is
/// daemonized with a PID file and stopped by that PID.
public final class RedisClusterProcess: @unchecked Sendable {
    // @unchecked: set up in `start`, then only read; `stop` is called once, by the owner.
    public private(set) var ports: [Int] = []
    public let primaries: Int
    private let directory: URL

    /// A seed list as the gateway's `redis+cluster://` URL will take it.
    public var seeds: [String] { ports.map { "127.0.0.1:\($0)" } }

    public init(primaries: Int = 3) throws {
        self.primaries = primaries
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    public func start() async throws {
        ports = try await Self.freePorts(count: primaries * 2)
        for port in ports {
            let dir = directory.appendingPathComponent(String(port)).path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let started = try await Command.run(
                [
                    "redis-server", "--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000", "--repl-ping-replica-period", "1", "--save", "", "--appendonly", "no",
                    "--protected-mode", "no", "--daemonize", "yes", "--pidfile", dir + "/redis.pid", "--logfile", dir + "/redis.log",
                    "--dir", dir,
                ], directory: dir)
            guard started.status == 0 else { throw ClusterError("redis-server on \(port) did not start: \(started.output)") }
        }
        for port in ports { try await waitFor(port: port, command: ["PING"]) { $0.contains("PONG") } }
        // The primaries first, then each replica joins and follows its primary: `--cluster-replicas
        // 1` in one step left a replica as a slotless primary in some runs (a join race).
        let primaryPorts = Array(ports.prefix(primaries))
        let created = try await Command.run(
            ["redis-cli", "--cluster", "create"] + primaryPorts.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "0", "--cluster-yes"],
            directory: directory.path, timeout: 120)
        guard created.status == 0 else { throw ClusterError("redis-cli --cluster create failed: \(created.output)") }
        for (primary, replica) in zip(primaryPorts, ports.dropFirst(primaries)) {
            let id = try await Command.run(["redis-cli", "-p", String(primary), "CLUSTER", "MYID"], directory: directory.path, timeout: 10)
                .output.trimmingCharacters(in: .whitespacesAndNewlines)
            _ = try await Command.run(["redis-cli", "-p", String(replica), "CLUSTER", "MEET", "127.0.0.1", String(primary)], directory: directory.path)
            // REPLICATE is refused until the replica has learnt of the primary through the bus.
            try await waitFor(port: replica, command: ["CLUSTER", "REPLICATE", id]) { $0.contains("OK") }
        }
        for port in ports { try await waitFor(port: port, command: ["CLUSTER", "INFO"]) { $0.contains("cluster_state:ok") } }
        // Every node knows every replica (each replica has joined its primary).
        let replicas = primaries
        for port in ports {
            try await waitFor(port: port, command: ["CLUSTER", "NODES"]) { nodes in
                // Fields: id, address, flags ("slave" or "myself,slave" for a replica), ..., link state.
                nodes.split(separator: "\n").map { $0.split(separator: " ") }
                    .filter { $0.count > 7 && $0[2].split(separator: ",").contains("slave") && $0[7] == "connected" }.count == replicas
            }
        }
    }

    /// Stops every node (SIGKILL, by PID) and removes its files.
    public func stop() {
        for port in ports {
            let pidFile = directory.appendingPathComponent("\(port)/redis.pid").path
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                ProcessState.killAndWait(pid)
            }
        }
        try? FileManager.default.removeItem(at: directory)
    }

    private func waitFor(port: Int, command: [String], _ ready: (String) -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let answer = try await Command.run(["redis-cli", "-p", String(port)] + command, directory: directory.path, timeout: 10)
            if ready(answer.output) { return }
            try await Task.sleep(for: .milliseconds(100), clock: .suspending)
        }
        throw ClusterError("node \(port) not ready for \(command.joined(separator: " "))")
    }

    /// `count` free ports in 20000..<45000 whose bus ports (port + 10000) are free as well.
    static func freePorts(count: Int) async throws -> [Int] {
        var found: [Int] = []
        var tries = 0
        while found.count < count {
            tries += 1
            guard tries < 2000 else { throw ClusterError("no free ports for a cluster") }
            let port = Int.random(in: 20_000..<45_000)
            guard !found.contains(port), !found.contains(port + 10_000), !found.contains(port - 10_000) else { continue }
            if await isFree(port), await isFree(port + 10_000) { found.append(port) }
        }
        return found
    }

    private static func isFree(_ port: Int) async -> Bool {
        guard let channel = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: port).get()
        else { return false }
        try? await channel.close().get()
        return true
    }

    deinit { stop() }
}

public struct ClusterError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
