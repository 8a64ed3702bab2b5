import RealtimeCore
import Testing

/// Nothing a client sends may crash the node or lose other clients' traffic.
@Suite struct RobustnessTests {
    @Test func malformedFramesGetErrorsAndTheConnectionStaysOpen() async throws {
        try await TestNode.with { node in
            let socket = try await node.connect(try await node.token())
            let bad = [
                "not json at all", "{", "[]", "42", #"{"op":5}"#, #"{"op":"subscribe"}"#, #"{"op":"subscribe","channel":"bad name"}"#,
                #"{"op":"fly"}"#, #"{"op":"publish","channel":"c"}"#, #"{"op":"subscribe","channel":"c","since_id":"yesterday"}"#,
                #"{"op":"history","channel":"c","limit":100000}"#, #"{"op":"history","channel":"c","direction":"sideways"}"#,
                String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000),
                #"{"op":"publish","channel":"c","event":"e","data":"# + String(repeating: "{\"a\":", count: 100) + "1" + String(repeating: "}", count: 100) + "}",
            ]
            for text in bad {
                socket.send(text)
                let reply = try await socket.next()
                #expect(reply["type"].string == "error", "\(text.prefix(40)) -> \(reply)")
                #expect([40000, 40010].contains(reply["code"].int ?? 0), "\(text.prefix(40)) -> \(reply)")
            }
            var random = SystemRandomNumberGenerator()
            for _ in 0..<20 {
                socket.sendBinary((0..<Int.random(in: 1...512, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
                #expect(try await socket.next()["type"].string == "error")
            }
            #expect(try await socket.call("ping")["type"].string == "pong")
        }
    }

    @Test func oversizedFramesCloseWith4009AndTheNodeKeepsServing() async throws {
        try await TestNode.with({ $0.limits.maxMessageBytes = 1024 }) { node in
            let other = try await node.connect(try await node.token(client: "other"))
            _ = try await other.call("subscribe", #""channel":"still""#)
            let socket = try await node.connect(try await node.token())
            let tooBig = try await socket.call("publish", #""channel":"c","event":"e","data":"\#(String(repeating: "x", count: 2000))""#)
            #expect(tooBig["code"].int == 41300)
            socket.send(String(repeating: "x", count: 200_000))
            #expect(try await socket.closeCode() == 4009)
            try await node.publish("still", data: "1")
            #expect(try await other.next(type: "message")["data"].int == 1)
            let fresh = try await node.connect(try await node.token(client: "fresh"))
            #expect(try await fresh.call("ping")["type"].string == "pong")
        }
    }

    @Test func opsBeforeAuthenticationCloseWith4001() async throws {
        try await TestNode.with { node in
            let socket = try await TestSocket.connect(node.wsURL)
            socket.send(#"{"op":"subscribe","channel":"c"}"#)
            #expect(try await socket.next()["code"].int == 40100)
            #expect(try await socket.closeCode() == 4001)
        }
    }

    @Test func manyConnectionsComingAndGoingLeaveNoSubscribersBehind() async throws {
        try await TestNode.with { node in
            let token = try await node.token()
            for round in 0..<5 {
                var sockets: [TestSocket] = []
                for _ in 0..<20 {
                    let s = try await node.connect(token)
                    _ = try await s.call("subscribe", #""channel":"churn""#)
                    _ = try await s.call("presence.enter", #""channel":"churn""#)
                    sockets.append(s)
                }
                try await node.eventually("20 subscribers counted in round \(round)") {
                    try await node.rest(.GET, "/v1/realtime/channels/churn").json["subscribers"].int == 20
                }
                for s in sockets { s.close() }
                var last = JSONValue.null
                do {
                    try await node.eventually("all gone") {
                        last = try await node.rest(.GET, "/v1/realtime/channels/churn").json
                        return last["subscribers"].int == 0 && last["presence_members"].int == 0
                    }
                } catch {
                    let ended = sockets.filter(\.isClosed).count
                    Issue.record("round \(round): \(last); \(ended) of 20 client connections ended")
                    throw error
                }
            }
        }
    }
}

/// The HTTP/1 handshake against the real binary: whatever a client puts in a WebSocket
/// upgrade request and sends behind it in the same write, the node answers and keeps serving.
@Suite struct HandshakeRobustnessTests {
    /// `Connection` header lines of an upgrade request for `/v1/realtime/ws`, and whether the
    /// node upgrades (nil: either answer is fine, the node must only survive).
    static let variants: [(name: String, lines: [String], upgrades: Bool?)] = [
        ("no Connection header", [], false),
        ("a misspelt Connection header", ["Co_nection: Upgrade"], false),
        ("Connection: close", ["Connection: close"], false),
        ("a longer token", ["Connection: Upgrades"], false),
        ("the token inside another", ["Connection: xupgrade"], false),
        ("Connection: Upgrade", ["Connection: Upgrade"], true),
        ("lower case", ["Connection: upgrade"], true),
        ("in a list", ["Connection: keep-alive, Upgrade"], true),
        ("on a second line", ["Connection: keep-alive", "Connection: Upgrade"], true),
        ("without a space", ["Connection:Upgrade"], true),
        ("with spaces around", ["Connection:   Upgrade   "], true),
        ("with a tab after it", ["Connection: Upgrade\t"], false),
        ("with a tab before it", ["Connection:\tUpgrade"], true),
        ("an empty list item", ["Connection: , Upgrade ,"], nil),
        ("with close too", ["Connection: Upgrade, close"], nil),
    ]

    @Test func anUpgradeRequestWithAnotherRequestBehindItIsAnsweredAndTheNodeLives() async throws {
        let node = GatewayProcess(key: Cluster.key, nodeID: "handshakes")
        try await node.start(environment: ["REALTIME_API_KEY": Cluster.key, "REALTIME_TOKEN_SECRET": Cluster.secret])
        defer { node.kill9() }
        for variant in Self.variants {
            let head = "GET /v1/realtime/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                + variant.lines.map { $0 + "\r\n" }.joined()
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            // The same request again behind it, then a plain one, in one write.
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            try await peer.sendRaw(Array((head + head + "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").utf8))
            var status = ""
            try await eventually("\(variant.name): an answer", timeout: .seconds(20)) {
                let text = String(decoding: peer.received.bytes.withLock { $0 }, as: UTF8.self)
                status = String(text.prefix(12))
                return status.count == 12 || peer.isClosed
            }
            try await peer.close()
            #expect(node.isRunning, "\(variant.name): the node died")
            guard node.isRunning else { return }
            #expect(status == "HTTP/1.1 101" || status == "HTTP/1.1 400", "\(variant.name): \(status)")
            if let upgrades = variant.upgrades { #expect((status == "HTTP/1.1 101") == upgrades, "\(variant.name): \(status)") }
            #expect(try await node.rest(.GET, "/readyz", key: "").status == 200, "\(variant.name): still serving")
        }
    }
}
