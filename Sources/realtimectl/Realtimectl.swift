import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RedisClient

/// `realtimectl`: keys, channels, publish, history, presence and cluster status, through the
/// REST API of any node (and Redis, for the cluster's node list).
@main
struct Realtimectl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "realtimectl",
        abstract: "Operate a realtime cluster through its REST API.",
        discussion: "The node URL and API key come from --url/--key or REALTIME_URL/REALTIME_API_KEY.",
        subcommands: [Keys.self, Channels.self, Publish.self, History.self, Presence.self, Status.self]
    )
}

struct Connection: ParsableArguments {
    @Option(help: "Node base URL (default: $REALTIME_URL or http://127.0.0.1:8080).")
    var url: String?
    @Option(help: "API key (default: $REALTIME_API_KEY).")
    var key: String?

    var baseURL: String {
        var u = url ?? ProcessInfo.processInfo.environment["REALTIME_URL"] ?? "http://127.0.0.1:8080"
        while u.hasSuffix("/") { u.removeLast() }
        return u
    }

    var apiKey: String { key ?? ProcessInfo.processInfo.environment["REALTIME_API_KEY"] ?? "" }

    /// Performs a request and prints the JSON reply; a non-2xx status exits 1.
    func call(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if !apiKey.isEmpty { request.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        let text = String(buffer: bytes)
        if !text.isEmpty { print(pretty(text)) }
        if response.status.code >= 300 { throw ExitCode(1) }
    }

    func pretty(_ text: String) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)),
            let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        else { return text }
        return String(decoding: data, as: UTF8.self)
    }
}

func quoted(_ s: String) -> String {
    let data = try! JSONSerialization.data(withJSONObject: [s], options: [])
    return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
}

func percent(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? s }

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage API keys.", subcommands: [List.self, Create.self, Revoke.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        func run() async throws { try await connection.call(.GET, "/v1/realtime/keys") }
    }

    struct Create: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Option var name: String
        @Option(name: .customLong("scope"), help: "realtime:publish, realtime:subscribe, realtime:tokens or realtime:admin (repeat).")
        var scopes: [String]
        func run() async throws {
            try await connection.call(.POST, "/v1/realtime/keys", body: #"{"name":\#(quoted(name)),"scopes":[\#(scopes.map(quoted).joined(separator: ","))]}"#)
        }
    }

    struct Revoke: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var keyID: String
        func run() async throws { try await connection.call(.DELETE, "/v1/realtime/keys/\(percent(keyID))") }
    }
}

struct Channels: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage channels.", subcommands: [List.self, Get.self, Create.self, Delete.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Option var limit = 100
        @Option var cursor: String?
        func run() async throws {
            try await connection.call(.GET, "/v1/realtime/channels?limit=\(limit)" + (cursor.map { "&cursor=\($0)" } ?? ""))
        }
    }

    struct Get: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws { try await connection.call(.GET, "/v1/realtime/channels/\(percent(name))") }
    }

    struct Create: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        @Option var type: String?
        @Option var historySize: Int?
        @Option var historyTTLSeconds: Int?
        func run() async throws {
            var fields = [#""name":\#(quoted(name))"#]
            if let type { fields.append(#""type":\#(quoted(type))"#) }
            if let historySize { fields.append(#""history_size":\#(historySize)"#) }
            if let historyTTLSeconds { fields.append(#""history_ttl_seconds":\#(historyTTLSeconds)"#) }
            try await connection.call(.POST, "/v1/realtime/channels", body: "{" + fields.joined(separator: ",") + "}")
        }
    }

    struct Delete: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws { try await connection.call(.DELETE, "/v1/realtime/channels/\(percent(name))") }
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Publish a message.")
    @OptionGroup var connection: Connection
    @Argument var channel: String
    @Argument var event: String
    @Option(help: "Message data as JSON (default null).")
    var data = "null"
    @Option var idempotencyKey: String?
    func run() async throws {
        let idem = idempotencyKey.map { #","idempotency_key":\#(quoted($0))"# } ?? ""
        try await connection.call(.POST, "/v1/realtime/publish", body: #"{"channel":\#(quoted(channel)),"event":\#(quoted(event)),"data":\#(data)\#(idem)}"#)
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read a channel's history.")
    @OptionGroup var connection: Connection
    @Argument var channel: String
    @Option var limit = 100
    @Option var direction = "backwards"
    @Option var sinceID: String?
    func run() async throws {
        let since = sinceID.map { "&since_id=\($0)" } ?? ""
        try await connection.call(.GET, "/v1/realtime/channels/\(percent(channel))/history?limit=\(limit)&direction=\(direction)\(since)")
    }
}

struct Presence: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a channel's presence members.")
    @OptionGroup var connection: Connection
    @Argument var channel: String
    @Flag var byUser = false
    func run() async throws {
        try await connection.call(.GET, "/v1/realtime/channels/\(percent(channel))/presence" + (byUser ? "?group_by=user" : ""))
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Node health and, with Redis, the cluster's nodes and their heartbeat age.")
    @OptionGroup var connection: Connection
    @Option(help: "Redis URL (default: $REALTIME_REDIS_URL) to list the cluster's nodes.")
    var redisURL: String?
    @Option var keyPrefix = "rt"

    func run() async throws {
        var healthy = true
        for path in ["/healthz", "/readyz"] {
            let response = try? await HTTPClient.shared.execute(HTTPClientRequest(url: connection.baseURL + path), timeout: .seconds(5))
            let code = response.map { Int($0.status.code) } ?? 0
            print("\(connection.baseURL)\(path): \(code == 0 ? "unreachable" : String(code))")
            healthy = healthy && code == 200
        }
        if let url = redisURL ?? ProcessInfo.processInfo.environment["REALTIME_REDIS_URL"] {
            var logger = Logger(label: "realtimectl")
            logger.logLevel = .error
            let deployment = try RedisDeployment(url: url, logger: logger)
            defer { deployment.commands.close() }
            if let cluster = deployment.cluster {
                // The shards: which primary serves which slots, and its replicas.
                let map = try await cluster.refresh()
                print("redis cluster: \(map.primaries.count) shards\(map.coversEverySlot ? "" : "  (slots unserved!)")")
                for primary in map.primaries {
                    let ranges = map.ranges.filter { $0.primary == primary }
                    let slots = ranges.map { "\($0.slots.lowerBound)-\($0.slots.upperBound)" }.joined(separator: ",")
                    let replicas = Set(ranges.flatMap(\.replicas)).map(\.description).sorted().joined(separator: ", ")
                    print("  primary \(primary)  slots \(slots)  replicas: \(replicas.isEmpty ? "none" : replicas)")
                }
            }
            if let sentinel = deployment.sentinel {
                // The sentinels' view: each one's answer for the primary.
                print("redis sentinel: master \(sentinel.masterName)")
                for node in sentinel.sentinels {
                    let one = RedisSentinel(sentinels: [node], masterName: sentinel.masterName, template: sentinel.template, sentinelPassword: sentinel.sentinelPassword, logger: logger)
                    if let primary = try? await one.primary() {
                        print("  sentinel \(node): primary \(primary.host):\(primary.port)")
                    } else {
                        print("  sentinel \(node): unreachable or no primary")
                    }
                }
            }
            let global = deployment.sharded ? "\(keyPrefix):{global}" : keyPrefix
            let reply = try await deployment.commands.send(["ZRANGE", "\(global):nodes", "0", "-1", "WITHSCORES"])
            let items = reply.array ?? []
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            print("nodes:")
            var i = 0
            while i + 1 < items.count {
                let age = now - (items[i + 1].int ?? 0)
                print("  \(items[i].string ?? "?")  last heartbeat \(Double(age) / 1000) s ago\(age > 15_000 ? "  (stale)" : "")")
                i += 2
            }
        }
        if !healthy { throw ExitCode(1) }
    }
}
