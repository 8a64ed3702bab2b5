import AsyncHTTPClient
import NIOHTTP1

typealias HTTPMethodAlias = NIOHTTP1.HTTPMethod
import Foundation
import Logging
import NIOCore
import RealtimeCore
import RealtimeServer
import ServiceLifecycle
import Testing

/// A real gateway node on a free loopback port, run in a ServiceGroup and shut down gracefully.
struct TestNode {
    let gateway: Gateway
    let port: Int
    let group: ServiceGroup
    var key: String { gateway.bootstrapKey }

    static func configuration(_ adjust: (inout GatewayConfiguration) -> Void = { _ in }) -> GatewayConfiguration {
        var c = GatewayConfiguration()
        c.port = 0
        c.apiKey = "test-bootstrap-key-0123456789"
        c.tokenSecrets = [TokenSecret(id: "t1", secret: String(repeating: "k", count: 32))]
        c.timing.shutdownTimeoutSeconds = 5
        adjust(&c)
        return c
    }

    /// Runs `body` against a fresh node, then shuts the node down gracefully.
    /// - Parameter clock: the node's clock (tokens, rate limits, message timestamps); a
    ///   ``ManualClock`` makes an outcome that depends on elapsed time independent of the machine's pace.
    static func with(
        engine: Engine? = nil, clock: any RealtimeClock = SystemClock(),
        _ adjust: (inout GatewayConfiguration) -> Void = { _ in }, _ body: (TestNode) async throws -> Void
    ) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let gateway = try await Gateway(configuration: configuration(adjust), engine: engine, clock: clock, logger: logger)
        let group = ServiceGroup(configuration: .init(services: gateway.services, logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let node = TestNode(gateway: gateway, port: try #require(await gateway.listeningPort()), group: group)
            do {
                try await body(node)
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

extension TestNode: NodeAccess {}

extension JSONValue {
    subscript(key: String) -> JSONValue {
        if case .object(let o) = self { return o[key] ?? .null }
        return .null
    }

    subscript(index: Int) -> JSONValue {
        if case .array(let a) = self, index < a.count { return a[index] }
        return .null
    }

    var string: String? { if case .string(let s) = self { return s } else { return nil } }
    var int: Int? {
        switch self {
        case .integer(let i): return Int(i)
        case .number(let d): return Int(d)
        default: return nil
        }
    }
    var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    var array: [JSONValue] { if case .array(let a) = self { return a } else { return [] } }
    var isNull: Bool { self == .null }
    var keys: Set<String> { if case .object(let o) = self { return Set(o.keys) } else { return [] } }
}

/// REST and WebSocket helpers for any node under test (in-process or a separate process).
protocol NodeAccess {
    var port: Int { get }
    var key: String { get }
}

/// A REST reply, decoded.
struct Reply: Sendable {
    var status: Int
    var json: JSONValue
    var headers: [(String, String)]
}

extension TestNode {
    typealias Reply = RealtimeServerTests.Reply
}

extension NodeAccess {
    var base: String { "http://127.0.0.1:\(port)" }
    var wsURL: String { "ws://127.0.0.1:\(port)/v1/realtime/ws" }


    /// A REST call with the bootstrap key unless another (or none: "") is given.
    func rest(_ method: HTTPMethod, _ path: String, _ body: String? = nil, key: String? = nil, headers: [(String, String)] = []) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        let k = key ?? self.key
        if !k.isEmpty { request.headers.add(name: "Authorization", value: "Bearer \(k)") }
        for (n, v) in headers { request.headers.add(name: n, value: v) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(20))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        let json = bytes.readableBytes == 0 ? JSONValue.null : JSONParser.parse(Array(bytes.readableBytesView)) ?? .string(String(buffer: bytes))
        return Reply(status: Int(response.status.code), json: json, headers: response.headers.map { ($0.name, $0.value) })
    }

    /// Mints a client token through the REST API.
    func token(_ body: String) async throws -> String {
        let reply = try await rest(.POST, "/v1/realtime/token", body)
        #expect(reply.status == 201, "token request failed: \(reply.json)")
        return reply.json["token"].string ?? ""
    }

    func token(client: String = "alice", user: String? = nil, caps: String = #"{"*":["*"]}"#, ttl: Int = 3600, key: String? = nil) async throws -> String {
        let uid = user.map { #","user_id":"\#($0)""# } ?? ""
        let reply = try await rest(.POST, "/v1/realtime/token", #"{"client_id":"\#(client)"\#(uid),"capabilities":\#(caps),"ttl_seconds":\#(ttl)}"#, key: key)
        #expect(reply.status == 201, "token request failed: \(reply.json)")
        return reply.json["token"].string ?? ""
    }

    /// Connects with a token and waits for `connected`.
    func connect(_ token: String, reading: Bool = true, compression: Bool = false) async throws -> TestSocket {
        let socket = try await TestSocket.connect(wsURL + "?token=" + token, compression: compression)
        let hello = try await socket.next()
        #expect(hello["type"].string == "connected", "expected connected, got \(hello)")
        if !reading { socket.pause() }
        return socket
    }

    @discardableResult
    func publish(_ channel: String, event: String = "e", data: String = "{}", extra: String = "") async throws -> Reply {
        try await rest(.POST, "/v1/realtime/publish", #"{"channel":"\#(channel)","event":"\#(event)","data":\#(data)\#(extra)}"#)
    }

    /// Waits (bounded) for a condition on the node, polling.
    func eventually(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw TestSocket.Timeout(what: what) }
            try await Task.sleep(for: .milliseconds(20), clock: .suspending)
        }
    }
}
