import Foundation
import RealtimeCore
import RealtimeTestSupport
@testable import RealtimeServer
import Testing

/// Publishes are answered below the router (``PublishFastPath``); everything else goes through
/// it. These check what a client relies on across the two: answers in request order on a
/// pipelined connection, the same answers whichever way a publish went, and a connection that
/// keeps serving after a refused or abandoned publish.
@Suite struct PublishFastPathTests {
    static let testKey = TestNode.configuration().apiKey!
    static var auth: String { authorization(testKey) }
    static func authorization(_ key: String) -> String { "Authorization: Bearer \(key)\r\n" }

    static func publish(_ channel: String, data: String, key: String = testKey, extraHeaders: String = "") -> String {
        let body = #"{"channel":"\#(channel)","event":"e","data":\#(data)}"#
        return "POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\n\(authorization(key))\(extraHeaders)Content-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    static func get(_ path: String, key: String = testKey) -> String { "GET \(path) HTTP/1.1\r\nHost: x\r\n\(authorization(key))\r\n" }

    /// Six requests in one write, publishes mixed with requests for the router: six answers in
    /// order, and the history request (third) sees the publish before it but not the one after.
    @Test(arguments: [false, true]) func pipelinedRequestsAreAnsweredInRequestOrder(redis: Bool) async throws {
        try await Self.onNode(redis: redis) { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            let batch = #"{"messages":[{"channel":"p","event":"e","data":3}]}"#
            let key = node.key
            let requests = [
                Self.get("/healthz", key: key),
                Self.publish("p", data: "1", key: key),
                Self.get("/v1/realtime/channels/p/history?direction=forwards", key: key),
                Self.publish("p", data: "2", key: key),
                "POST /v1/realtime/publish/batch HTTP/1.1\r\nHost: x\r\n\(Self.authorization(key))Content-Length: \(batch.utf8.count)\r\n\r\n\(batch)",
                Self.get("/v1/realtime/channels/p/history?direction=forwards", key: key),
            ]
            try await peer.sendRaw(Array(requests.joined().utf8))
            try await eventually("six answers", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 6 }
            let answers = HTTPStream.parse(peer.bytes)
            #expect(answers.map(\.status) == [200, 201, 200, 201, 200, 200])
            #expect(answers[2].json["messages"].array.compactMap { $0["data"].int } == [1])
            #expect(answers[4].json["results"][0]["status"].string == "published")
            #expect(answers[5].json["messages"].array.compactMap { $0["data"].int } == [1, 2, 3])
            #expect(answers[1].json["message_id"] == answers[5].json["messages"][0]["id"])
            #expect(answers.allSatisfy { $0.header("date") != nil })
            try await peer.close()
        }
    }

    /// Many publishes pipelined on one connection are applied and answered in order.
    @Test func manyPipelinedPublishesKeepTheirOrder() async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            try await peer.sendRaw(Array((1...200).map { Self.publish("seq", data: "\($0)") }.joined().utf8))
            try await eventually("200 answers", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 200 }
            let ids = HTTPStream.parse(peer.bytes).compactMap { $0.json["message_id"].string.flatMap(MessageID.init) }
            #expect(ids.count == 200 && ids == ids.sorted())
            let h = try await node.rest(.GET, "/v1/realtime/channels/seq/history?direction=forwards&limit=1000")
            #expect(h.json["messages"].array.compactMap { $0["data"].int } == Array(1...200))
            try await peer.close()
        }
    }

    /// `Connection: close` gets its answer, then the node closes the connection.
    @Test func aPublishThatAsksToCloseIsAnsweredThenClosed() async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            try await peer.sendRaw(Array(Self.publish("c", data: "1", extraHeaders: "Connection: close\r\n").utf8))
            try await eventually("the connection to close", timeout: .seconds(20)) { peer.isClosed }
            let answers = HTTPStream.parse(peer.bytes)
            #expect(answers.map(\.status) == [201])
            #expect(answers.first?.header("connection") == "close")
        }
    }

    /// A body over the route's limit is refused 41300 (after the key is checked) and the same
    /// connection goes on serving; a chunked body is read like any other.
    @Test func anOversizedBodyIsRefusedAndTheConnectionServesOn() async throws {
        try await TestNode.with({ $0.limits.maxMessageBytes = 16 }) { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            let big = #"{"channel":"o","event":"e","data":""# + String(repeating: "x", count: 80_000) + #""}"#
            let oversized = "POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\n\(Self.auth)Content-Length: \(big.utf8.count)\r\n\r\n\(big)"
            let unauthorised = "POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\nContent-Length: \(big.utf8.count)\r\n\r\n\(big)"
            let chunkBody = #"{"channel":"o","event":"e","data":1}"#
            let half = chunkBody.utf8.count / 2
            let chunked =
                "POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\n\(Self.auth)Transfer-Encoding: chunked\r\n\r\n"
                + String(half, radix: 16) + "\r\n" + String(chunkBody.prefix(half)) + "\r\n"
                + String(chunkBody.utf8.count - half, radix: 16) + "\r\n" + String(chunkBody.dropFirst(half)) + "\r\n0\r\n\r\n"
            try await peer.sendRaw(Array((oversized + unauthorised + chunked).utf8))
            try await eventually("three answers", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 3 }
            let answers = HTTPStream.parse(peer.bytes)
            #expect(answers.map(\.status) == [413, 401, 201])
            #expect(answers[0].json["error"]["code"].int == 41300 && answers[1].json["error"]["code"].int == 40100)
            #expect(!peer.isClosed)
            try await peer.close()
        }
    }

    /// A client that sends `Expect: 100-continue` and holds its body back (as curl does for large
    /// bodies) gets `100 Continue` without sending anything more, on a publish (fast path) and on
    /// a route's POST, and a `100 Continue` behind an unanswered request comes only after that
    /// request's answer. HTTP/1.0 gets no interim answer.
    @Test(arguments: [false, true]) func aClientThatExpectsContinueGetsItBeforeSendingItsBody(fastPath: Bool) async throws {
        try await TestNode.with({ $0.publishFastPath = fastPath }) { node in
            let body = #"{"channel":"x","event":"e","data":1}"#
            func head(_ path: String, version: String = "1.1") -> String {
                "POST \(path) HTTP/\(version)\r\nHost: x\r\n\(Self.auth)Content-Type: application/json\r\nExpect: 100-continue\r\n"
                    + "Content-Length: \(body.utf8.count)\r\n\r\n"
            }
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            // Nothing after the head: only a 100 Continue can come back.
            try await peer.sendRaw(Array(head("/v1/realtime/publish").utf8))
            try await eventually("100 Continue", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 1 }
            #expect(HTTPStream.parse(peer.bytes).map(\.status) == [100])
            try await peer.sendRaw(Array(body.utf8))
            try await eventually("the publish's answer", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 2 }
            // A whole publish, then a second head in the same write: its 100 follows the first's 201.
            try await peer.sendRaw(Array((Self.publish("x", data: "2") + head("/v1/realtime/publish")).utf8))
            try await eventually("201 then 100", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 4 }
            try await peer.sendRaw(Array(body.utf8))
            // A route's POST (channel creation; the body names a channel).
            let create = #"{"name":"made-\#(fastPath)"}"#
            try await peer.sendRaw(
                Array(
                    ("POST /v1/realtime/channels HTTP/1.1\r\nHost: x\r\n\(Self.auth)Content-Type: application/json\r\nExpect: 100-continue\r\n"
                        + "Content-Length: \(create.utf8.count)\r\n\r\n").utf8))
            try await eventually("the route's 100 Continue", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 6 }
            try await peer.sendRaw(Array(create.utf8))
            try await eventually("seven answers", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 7 }
            let answers = HTTPStream.parse(peer.bytes)
            #expect(answers.map(\.status) == [100, 201, 201, 100, 201, 100, 201], "\(answers.map(\.body))")
            let h = try await node.rest(.GET, "/v1/realtime/channels/x/history?direction=forwards")
            #expect(h.json["messages"].array.compactMap { $0["data"].int } == [1, 2, 1])
            try await peer.close()

            let old = try await RawPeer.connect(port: node.port, path: nil)
            try await old.sendRaw(Array((head("/v1/realtime/publish", version: "1.0") + body).utf8))
            try await eventually("the HTTP/1.0 answer", timeout: .seconds(20)) { !HTTPStream.parse(old.bytes).isEmpty }
            #expect(HTTPStream.parse(old.bytes).first?.status == 201)
            try await old.close()
        }
    }

    /// Random pipelined streams (publishes good and bad, chunked, with `Expect: 100-continue`,
    /// router requests), cut into random writes: every request gets its answer, in request
    /// order, a `100 Continue` right before the answer of each request that asked, and the
    /// channel's history holds exactly the good publishes, in order.
    @Test(arguments: [false, true]) func randomPipelinedStreamsAreAnsweredInOrder(fastPath: Bool) async throws {
        try await TestNode.with({ $0.publishFastPath = fastPath }) { node in
            for seed in UInt64(1)...3 {
                var rng = SeededGenerator(seed: seed)
                let channel = "mix-\(fastPath)-\(seed)"
                var stream = ""
                var expected: [Int] = []
                var published: [Int] = []
                for i in 0..<60 {
                    switch Int.random(in: 0..<6, using: &rng) {
                    case 0:
                        stream += Self.publish(channel, data: "\(i)")
                        expected.append(201)
                        published.append(i)
                    case 1:
                        stream += Self.publish(channel, data: "[1,]")  // not JSON
                        expected.append(400)
                    case 2:
                        stream += Self.get(["/healthz", "/v1/realtime/channels/\(channel)/history"][i % 2])
                        expected.append(200)
                    case 3:
                        stream += Self.publish(channel, data: "\(i)", extraHeaders: "Expect: 100-continue\r\n")
                        expected += [100, 201]
                        published.append(i)
                    case 4:
                        let body = #"{"channel":"\#(channel)","event":"e","data":\#(i)}"#
                        let cut = Int.random(in: 1..<body.utf8.count, using: &rng)
                        let parts = [String(body.prefix(cut)), String(body.dropFirst(cut))]
                        stream += "POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\n\(Self.auth)Transfer-Encoding: chunked\r\n\r\n"
                            + parts.map { String($0.utf8.count, radix: 16) + "\r\n" + $0 + "\r\n" }.joined() + "0\r\n\r\n"
                        expected.append(201)
                        published.append(i)
                    default:
                        stream += Self.publish(channel, data: "\(i)", key: "k_nobody.secret")
                        expected.append(401)
                    }
                }
                let peer = try await RawPeer.connect(port: node.port, path: nil)
                var bytes = Array(stream.utf8)[...]
                while !bytes.isEmpty {
                    let n = min(bytes.count, Int.random(in: 1...400, using: &rng))
                    try await peer.sendRaw(Array(bytes.prefix(n)))
                    bytes = bytes.dropFirst(n)
                }
                try await eventually("\(expected.count) answers (seed \(seed))", timeout: .seconds(60)) {
                    HTTPStream.parse(peer.bytes).count >= expected.count
                }
                #expect(HTTPStream.parse(peer.bytes).map(\.status) == expected, "seed \(seed)")
                #expect(!peer.isClosed)
                try await peer.close()
                let h = try await node.rest(.GET, "/v1/realtime/channels/\(channel)/history?direction=forwards&limit=100")
                #expect(h.json["messages"].array.compactMap { $0["data"].int } == published, "seed \(seed)")
            }
        }
    }

    /// A client that sends its requests and then ends its side of the connection (a half-close)
    /// still gets every answer, in order, and then the node closes: the end of the input waits
    /// behind a publish that is still running (on Redis, a round trip long).
    @Test(arguments: [false, true]) func aClientThatEndsItsInputAfterItsRequestsGetsEveryAnswer(redis: Bool) async throws {
        try await Self.onNode(redis: redis) { node in
            let key = node.key
            for round in 0..<12 {
                let channel = "half-\(redis)-\(round)"
                let (requests, expected): ([String], [Int]) = switch round % 3 {
                case 0: ([Self.publish(channel, data: "1", key: key)], [201])
                case 1: ([Self.get("/healthz", key: key), Self.publish(channel, data: "1", key: key)], [200, 201])
                default: ([Self.publish(channel, data: "1", key: key), Self.get("/healthz", key: key), Self.publish(channel, data: "2", key: key)], [201, 200, 201])
                }
                let peer = try await RawPeer.connect(port: node.port, path: nil)
                try await peer.sendRaw(Array(requests.joined().utf8))
                try await peer.closeOutput()
                try await eventually("the node closes after its answers (round \(round))", timeout: .seconds(20)) { peer.isClosed }
                #expect(HTTPStream.parse(peer.bytes).map(\.status) == expected, "round \(round)")
            }
        }
    }

    /// A client that sends publishes and hangs up before the answers: each publish is applied
    /// once, and the node serves on.
    @Test func publishesAbandonedMidFlightAreAppliedOnceAndTheNodeServesOn() async throws {
        try await TestNode.with { node in
            for round in 0..<20 {
                let peer = try await RawPeer.connect(port: node.port, path: nil)
                try await peer.sendRaw(Array((Self.publish("gone", data: "\(round)") + Self.get("/healthz")).utf8))
                try await peer.close()
            }
            try await eventually("every abandoned publish in history", timeout: .seconds(20)) {
                let h = try await node.rest(.GET, "/v1/realtime/channels/gone/history?direction=forwards&limit=100")
                return h.json["messages"].array.count == 20
            }
            let h = try await node.rest(.GET, "/v1/realtime/channels/gone/history?direction=forwards&limit=100")
            #expect(Set(h.json["messages"].array.compactMap { $0["data"].int }) == Set(0..<20))
            #expect(try await node.publish("gone").status == 201)
        }
    }

    /// The fast path and the router's routes give the same answers: status, error code, body
    /// fields and the retry hint, for good and bad publishes alike.
    @Test func theFastPathAnswersExactlyAsTheRoutesDo() async throws {
        let cases: [(path: String, body: String?, key: String?)] = [
            ("/v1/realtime/publish", #"{"channel":"s","event":"e","data":{"a":[1,2]}}"#, nil),
            ("/v1/realtime/publish", #"{"channel":"s","event":"e","data":1,"idempotency_key":"k1"}"#, nil),
            ("/v1/realtime/publish", #"{"channel":"s","event":"e","data":1,"idempotency_key":"k1"}"#, nil),
            ("/v1/realtime/publish", #"{"channel":"s","event":"e","data":1}"#, "not-a-key"),
            ("/v1/realtime/publish", #"{"channel":"s","event":"e","data":1}"#, ""),
            ("/v1/realtime/publish", #"{"channel":"bad name","event":"e","data":1}"#, nil),
            ("/v1/realtime/publish", #"{"channel":"s","event":"e"}"#, nil),
            ("/v1/realtime/publish", #"{"channel":"s","#, nil),
            ("/v1/realtime/publish", "", nil),
            ("/v1/realtime/publish", #"{"channel":"s","event":"e","data":"\#(String(repeating: "y", count: 300))"}"#, nil),
            ("/v1/realtime/publish/batch", #"{"messages":[{"channel":"s","event":"e","data":1},{"channel":"s"}]}"#, nil),
            ("/v1/realtime/publish/batch", #"{"messages":[1,2,3]}"#, nil),
            ("/v1/realtime/publish/batch", #"{"nope":1}"#, nil),
            ("/v1/realtime/publish?x=1", #"{"channel":"s","event":"e","data":1}"#, nil),
        ]
        var answers: [Bool: [Reply]] = [:]
        for fast in [true, false] {
            try await TestNode.with({ $0.publishFastPath = fast; $0.limits.maxMessageBytes = 256 }) { node in
                var replies: [Reply] = []
                for c in cases { replies.append(try await node.rest(.POST, c.path, c.body, key: c.key)) }
                // A key without the publish scope.
                let created = try await node.rest(.POST, "/v1/realtime/keys", #"{"name":"reader","scopes":["realtime:subscribe"]}"#)
                let subscribeOnly = try #require(created.json["key"].string, "\(created.status) \(created.json)")
                replies.append(try await node.rest(.POST, "/v1/realtime/publish", #"{"channel":"s","event":"e","data":1}"#, key: subscribeOnly))
                answers[fast] = replies
            }
        }
        let fast = try #require(answers[true]), routed = try #require(answers[false])
        for (i, (a, b)) in zip(fast, routed).enumerated() {
            #expect(a.status == b.status, "case \(i)")
            #expect(a.json["error"]["code"] == b.json["error"]["code"], "case \(i)")
            #expect(a.json["error"]["message"] == b.json["error"]["message"], "case \(i)")
            #expect(a.json.keys == b.json.keys, "case \(i)")
            #expect(a.json["status"] == b.json["status"] && a.json["channel"] == b.json["channel"], "case \(i)")
            #expect(a.json["results"].array.map { $0.keys } == b.json["results"].array.map { $0.keys }, "case \(i)")
            #expect(a.header("content-type") == b.header("content-type"), "case \(i)")
        }
        #expect(fast.map(\.status) == [201, 201, 200, 401, 401, 400, 400, 400, 400, 413, 200, 200, 400, 201, 403])
    }

    /// The rate limit answers 42900 with a Retry-After on the fast path too.
    @Test func aRateLimitedPublishCarriesItsRetryHint() async throws {
        try await TestNode.with({ $0.limits.keyPublishRate = 1 }) { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            try await peer.sendRaw(Array((1...5).map { Self.publish("r", data: "\($0)") }.joined().utf8))
            try await eventually("five answers", timeout: .seconds(20)) { HTTPStream.parse(peer.bytes).count == 5 }
            let limited = try #require(HTTPStream.parse(peer.bytes).first { $0.status == 429 })
            #expect(limited.json["error"]["code"].int == 42900 && limited.header("retry-after") != nil)
            try await peer.close()
        }
    }

    /// The node's request metrics count fast-path publishes under the publish route, as the
    /// router counted them (a process: swift-metrics is bootstrapped in `main`).
    @Test func requestMetricsCountFastPathPublishes() async throws {
        let node = GatewayProcess(key: Cluster.key, nodeID: "metrics")
        try await node.start(environment: ["REALTIME_API_KEY": Cluster.key])
        for _ in 0..<3 { #expect(try await node.publish("m").status == 201) }
        #expect(try await node.rest(.POST, "/v1/realtime/publish", "{}", key: "wrong").status == 401)
        let text = try #require(try await node.rest(.GET, "/metrics", key: "").json.string)
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("hb_requests{") && $0.contains("\"/v1/realtime/publish\"") }
        #expect(lines.contains { $0.contains("\"201\"") && $0.hasSuffix(" 3") }, "\(lines)")
        #expect(lines.contains { $0.contains("\"401\"") && $0.hasSuffix(" 1") }, "\(lines)")
        #if DEBUG
        // A debug build counts lock acquisitions and contention (what serialises, on many cores).
        let taken = text.split(separator: "\n").first { $0.hasPrefix("realtime_debug_lock_acquired_total{lock=\"memory_engine_shard\"}") }
        #expect(taken.flatMap { $0.split(separator: " ").last.flatMap { Int($0) } }.map { $0 >= 3 } == true, "\(String(describing: taken))")
        #expect(text.contains("realtime_debug_lock_contended_total{lock=\"key_rate_limiter\"}"))
        #endif
        await node.terminate()
    }

    static func onNode(redis: Bool, _ body: (any NodeAccess) async throws -> Void) async throws {
        if redis {
            try await Cluster.with(nodes: 1) { cluster in try await body(cluster.nodes[0]) }
        } else {
            try await TestNode.with { node in try await body(node) }
        }
    }
}

/// HTTP/1.1 responses read back from a raw byte stream (each with a Content-Length or none).
struct HTTPStream {
    struct Answer {
        var status: Int
        var headers: [(String, String)]
        var body: String
        var json: JSONValue { JSONParser.parse(Array(body.utf8)) ?? .null }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
    }

    /// The complete responses at the start of `bytes`.
    static func parse(_ bytes: [UInt8]) -> [Answer] {
        var answers: [Answer] = []
        var i = 0
        while let headEnd = (i..<max(bytes.count - 3, i)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 && bytes[$0 + 2] == 13 && bytes[$0 + 3] == 10 }) {
            let lines = String(decoding: bytes[i..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
            guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { break }
            let headers = lines.dropFirst().compactMap { line -> (String, String)? in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) } ?? 0
            let start = headEnd + 4
            guard start + length <= bytes.count else { break }
            answers.append(Answer(status: status, headers: headers, body: String(decoding: bytes[start..<start + length], as: UTF8.self)))
            i = start + length
        }
        return answers
    }
}

extension RawPeer {
    var bytes: [UInt8] { received.bytes.withLock { $0 } }
}

extension Reply {
    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
}

/// Input that is not HTTP/1.1 gets the contract's `400` / `40000`, after the answers to the
/// complete requests before it and never inside one, then the connection closes; nothing of a
/// broken request is applied, and the node serves on.
@Suite struct MalformedHTTPTests {
    static let auth = PublishFastPathTests.auth

    @Test(arguments: [false, true]) func brokenInputIsAnswered400ThenClosed(fastPath: Bool) async throws {
        try await TestNode.with({ $0.publishFastPath = fastPath }) { node in
            let broken: [String: [UInt8]] = [
                "garbage": Array("\u{1}\u{2} hello\r\n\r\n".utf8),
                "HTTP/2 preface": Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8),
                "negative Content-Length": Array("POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".utf8),
                "Content-Length and chunked": Array(
                    "POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".utf8),
                "a 200 KB header": Array("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 200_000))\r\n\r\n".utf8),
                "a WebSocket upgrade without a key": Array(
                    "GET /v1/realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".utf8),
            ]
            for (name, bytes) in broken {
                let peer = try await RawPeer.connect(port: node.port, path: nil)
                try await peer.sendRaw(bytes)
                try await eventually("\(name): closed", timeout: .seconds(20)) { peer.isClosed }
                let answers = HTTPStream.parse(peer.bytes)
                #expect(answers.map(\.status) == [400], "\(name): \(String(decoding: peer.bytes.prefix(300), as: UTF8.self))")
                #expect(answers.first?.json["error"]["code"].int == 40000, "\(name)")
            }

            // Complete requests first: answered in order, then the 400.
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            try await peer.sendRaw(
                Array((PublishFastPathTests.publish("m", data: "1") + PublishFastPathTests.get("/healthz") + "\u{1}\u{2} hello\r\n\r\n").utf8))
            try await eventually("closed after three answers", timeout: .seconds(20)) { peer.isClosed }
            #expect(HTTPStream.parse(peer.bytes).map(\.status) == [201, 200, 400])

            // A chunked body that breaks: 400 for that request, nothing applied.
            let badChunk = "Transfer-Encoding: chunked\r\n\r\n10\r\n{\"channel\":\"m\",\r\nZZ\r\n"
            for path in ["/v1/realtime/publish", "/v1/realtime/channels"] {
                let peer = try await RawPeer.connect(port: node.port, path: nil)
                try await peer.sendRaw(Array("POST \(path) HTTP/1.1\r\nHost: x\r\n\(Self.auth)Content-Type: application/json\r\n\(badChunk)".utf8))
                try await eventually("\(path): closed", timeout: .seconds(20)) { peer.isClosed }
                let answers = HTTPStream.parse(peer.bytes)
                #expect(answers.map(\.status) == [400] && answers.first?.json["error"]["code"].int == 40000, "\(path): \(answers.map(\.body))")
            }
            let history = try await node.rest(.GET, "/v1/realtime/channels/m/history?direction=forwards")
            #expect(history.json["messages"].array.compactMap { $0["data"].int } == [1])
            #expect(try await node.publish("after").status == 201)
        }
    }
}
