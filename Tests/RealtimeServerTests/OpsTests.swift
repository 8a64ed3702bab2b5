import Foundation
import NIOPosix
import RealtimeCore
import RealtimeTestSupport
import Testing

/// The operator's tools: native cluster scripts, Redis inspection, realtimectl, docker-compose.
@Suite struct OpsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs a command from the repository root; returns (exit status, stdout).
    static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> (Int32, String) {
        let result = try await Command.run(arguments, directory: root.path, environment: environment)
        return (result.status, result.output)
    }

    @Test(arguments: Deployment.allCases)
    func nativeClusterServesThroughTheLoadBalancerAndStopsCleanly(_ deployment: Deployment) async throws {
        let runDir = FileManager.default.temporaryDirectory.appendingPathComponent("rt-run-\(UUID().uuidString)").path
        // Below the kernel's ephemeral range, so no other test's free-port pick can collide.
        let base = try await RedisTopologyProcess.freeBlock(5, in: 26_000..<32_000, bus: false)
        // A Redis Cluster's six ports (and their bus ports) and a Sentinel setup's five, in the
        // blocks RedisTopologyProcess leaves to this test.
        let redisPort = switch deployment {
        case .single: base + 4
        case .cluster: try await RedisTopologyProcess.freeBlock(6, in: 15_000..<16_000, bus: true)
        case .sentinel: try await RedisTopologyProcess.freeBlock(5, in: 19_000..<20_000, bus: false)
        }
        let env = [
            "RT_BASE_PORT": String(base), "RT_REDIS_PORT": String(redisPort), "RT_RUN_DIR": runDir,
            "RT_GATEWAY_BIN": GatewayProcess.binary.path, "RT_REDIS": deployment.rawValue,
        ]
        let (status, output) = try await Self.run(["bash", "ops/cluster-up.sh"], environment: env)
        defer { _ = try? Command.runDetached(["bash", "ops/cluster-down.sh"], directory: Self.root.path, environment: env) }
        #expect(status == 0, "\(output)")
        let key = try String(contentsOfFile: runDir + "/api-key", encoding: .utf8)
        let lb = GatewayProcess(port: base, key: key, nodeID: "lb")
        let sockets = try await (0..<3).asyncMap { i in try await lb.connect(try await lb.token(client: "c\(i)")) }
        for s in sockets { _ = try await s.call("subscribe", #""channel":"via-lb""#) }
        let id = try await lb.publish("via-lb", data: "1").json["message_id"].string
        for s in sockets { #expect(try await s.next(type: "message")["id"].string == id) }
        for s in sockets { s.close() }

        let (downStatus, _) = try await Self.run(["bash", "ops/cluster-down.sh"], environment: env)
        #expect(downStatus == 0)
        let redisFiles = switch deployment {
        case .single: ["redis-single.pid"]
        case .cluster: (0..<6).map { "redis-c\($0).pid" }
        case .sentinel: ["redis-primary.pid", "redis-replica.pid", "redis-s0.pid", "redis-s1.pid", "redis-s2.pid"]
        }
        for name in ["nginx.pid", "node-1.pid", "node-2.pid", "node-3.pid"] + redisFiles {
            #expect(!FileManager.default.fileExists(atPath: runDir + "/" + name), "\(name) left behind")
        }
        #expect((try? await lb.rest(.GET, "/healthz", key: "")) == nil)
    }

    @Test(arguments: Deployment.allCases)
    func inspectShowsEveryKindOfKeyAndNeverASecret(_ deployment: Deployment) async throws {
        try await Cluster.with(nodes: 1, deployment: deployment) { cluster in
            let node = cluster.nodes[0]
            let made = try await node.rest(.POST, "/v1/realtime/keys", #"{"name":"inspected","scopes":["realtime:publish"]}"#)
            let secret = try #require(made.json["key"].string)
            let id = try await node.publish("orders:eu", data: #"{"total":5}"#, extra: #","idempotency_key":"pay-1""#).json["message_id"].string!
            let member = try await node.connect(try await node.token(client: "present"))
            _ = try await member.call("presence.enter", #""channel":"orders:eu""#)
            let prefix = try #require(try await Self.prefix(of: cluster))
            let env = ["REDIS_URL": cluster.url, "RT_PREFIX": prefix]
            func inspect(_ args: [String]) async throws -> String { try await Self.run(["bash", "ops/rt-inspect"] + args, environment: env).1 }
            #expect(try await inspect(["channels"]).contains("orders:eu"))
            #expect(try await inspect(["history", "orders:eu"]).contains(id))
            #expect(try await inspect(["presence", "orders:eu"]).contains("\"client_id\":\"present\""))
            #expect(try await inspect(["nodes"]).contains("node-1"))
            #expect(try await inspect(["idempotency", "orders:eu"]).contains("pay-1 -> \(id)"))
            let keys = try await inspect(["keys"])
            #expect(keys.contains(made.json["key_id"].string!) && keys.contains("inspected"))
            #expect(!keys.contains(secret) && !keys.contains(APIKeyMaterial.hash(secret)) && !keys.contains("secret_hash"))
        }
    }

    @Test(arguments: Deployment.allCases)
    func realtimectlDrivesTheAPI(_ deployment: Deployment) async throws {
        try await Cluster.with(nodes: 1, deployment: deployment) { cluster in
            let node = cluster.nodes[0]
            let ctl = GatewayProcess.binary.deletingLastPathComponent().appendingPathComponent("realtimectl").path
            let env = ["REALTIME_URL": node.base, "REALTIME_API_KEY": node.key]
            #expect(try await Self.run([ctl, "channels", "create", "ctl:x", "--type", "public"], environment: env).0 == 0)
            let published = try await Self.run([ctl, "publish", "ctl:x", "greeting", "--data", #"{"hi":1}"#], environment: env)
            #expect(published.0 == 0 && published.1.contains("published"))
            #expect(try await Self.run([ctl, "history", "ctl:x"], environment: env).1.contains("greeting"))
            #expect(try await Self.run([ctl, "channels", "get", "ctl:x"], environment: env).1.contains("\"public\""))
            #expect(try await Self.run([ctl, "keys", "create", "--name", "from-ctl", "--scope", "realtime:publish"], environment: env).1.contains("k_"))
            #expect(try await Self.run([ctl, "keys", "list"], environment: env).1.contains("from-ctl"))
            #expect(try await Self.run([ctl, "presence", "ctl:x"], environment: env).1.contains("members"))
            let status = try await Self.run([ctl, "status", "--redis-url", cluster.url, "--key-prefix", try await Self.prefix(of: cluster) ?? "rt"], environment: env)
            #expect(status.0 == 0 && status.1.contains("node-1"), "\(status.1)")
            // The deployment's own view: the shards of a cluster, the sentinels' primary.
            switch deployment {
            case .single: break
            case .cluster: #expect(status.1.contains("redis cluster: 3 shards") && status.1.contains("replicas: 127.0.0.1:"), "\(status.1)")
            case .sentinel: #expect(status.1.components(separatedBy: ": primary 127.0.0.1:").count == 4, "\(status.1)")
            }
            #expect(try await Self.run([ctl, "channels", "delete", "nope:never"], environment: env).0 != 0)
        }
    }

    @Test func dockerComposeFileIsValid() async throws {
        let (status, _) = try await Self.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"])
        #expect(status == 0)
        let compose = try String(contentsOf: Self.root.appendingPathComponent("docker-compose.yml"), encoding: .utf8)
        for service in ["redis:", "node1:", "node2:", "node3:", "lb:"] { #expect(compose.contains(service)) }
        // The Redis Cluster and Sentinel profiles validate too, with their services.
        for (profile, services) in [("cluster", ["redis-c5", "redis-cluster-init"]), ("sentinel", ["redis-primary", "redis-replica", "sentinel3"])] {
            let (valid, listed) = try await Self.run(["docker-compose", "-f", "docker-compose.yml", "--profile", profile, "config", "--services"])
            #expect(valid == 0)
            for service in services { #expect(listed.split(separator: "\n").contains(Substring(service)), "\(profile): \(service)") }
        }
    }


    /// The key prefix a test cluster uses (random per cluster).
    static func prefix(of cluster: Cluster) async throws -> String? { cluster.prefix }
}
