import Crypto
import Foundation
import RealtimeCore
import Testing

/// Contract §10's rules for bad input and bounds, each over real sockets: a clear error with
/// the contract's code, naming the field or limit, and the node keeps serving.
@Suite struct ContractExactnessTests {
    @Test func strictJSONIsRequiredForBodiesAndFrames() async throws {
        try await TestNode.with { node in
            for body in [#"{"channel":"c","event":"e","data":1,}"#, #"{"channel":"c","event":"e","data":01}"#, #"{'channel':"c"}"#,
                #"{"channel":"c","event":"e","data":NaN}"#, #"{"channel":"c","event":"e","data":1} // comment"#] {
                let r = try await node.rest(.POST, "/v1/realtime/publish", body)
                #expect(r.status == 400 && r.json["error"]["code"].int == 40000, "\(body) -> \(r.json)")
            }
            let socket = try await node.connect(try await node.token())
            socket.send(#"{"op":"ping","ref":"r1",}"#)
            let reply = try await socket.next()
            #expect(reply["type"].string == "error" && reply["code"].int == 40000)
            #expect(try await socket.call("ping")["type"].string == "pong")
        }
    }

    @Test func binaryFramesAreNotOpsAndErrorsCarryTheRef() async throws {
        try await TestNode.with { node in
            let socket = try await node.connect(try await node.token())
            socket.sendBinary(Array(#"{"op":"ping","ref":"b"}"#.utf8))
            let binary = try await socket.next()
            #expect(binary["type"].string == "error" && binary["code"].int == 40000 && binary["ref"] == .null)
            for (frame, field) in [(#"{"op":"publish","ref":"r1","channel":5,"event":"e","data":1}"#, "channel"),
                (#"{"op":"history","ref":"r2","channel":"c","limit":"ten"}"#, "limit"),
                (#"{"op":"publish","ref":"r3","channel":"c","event":"e"}"#, "data")] {
                socket.send(frame)
                let error = try await socket.next()
                #expect(error["type"].string == "error" && error["code"].int == 40000, "\(error)")
                #expect(error["ref"].string == frame.split(separator: "\"")[7].description, "\(error)")
                #expect(error["message"].string?.contains(field) == true, "\(error)")
            }
            // A ref of another JSON type comes back as sent, as it does on a good op.
            socket.send(#"{"op":"subscribe","ref":3,"channel":"c","since_id":-1}"#)
            let numbered = try await socket.next()
            #expect(numbered["type"].string == "error" && numbered["ref"].int == 3, "\(numbered)")
            socket.send(#"{"op":"ping","ref":{"n":[1,2]}}"#)
            #expect(try await socket.next()["ref"]["n"][1].int == 2)
        }
    }

    @Test func publishRequiresDataAndBoundsTheIdempotencyKeyEverywhere() async throws {
        try await TestNode.with { node in
            let missing = try await node.rest(.POST, "/v1/realtime/publish", #"{"channel":"c","event":"e"}"#)
            #expect(missing.status == 400 && missing.json["error"]["message"].string?.contains("data") == true)
            let null = try await node.rest(.POST, "/v1/realtime/publish", #"{"channel":"c","event":"e","data":null}"#)
            #expect(null.status == 201)
            let batch = try await node.rest(.POST, "/v1/realtime/publish/batch", #"{"messages":[{"channel":"c","event":"e"},{"channel":"c","event":"e","data":2}]}"#)
            #expect(batch.json["results"][0]["error"]["code"].int == 40000 && batch.json["results"][1]["status"].string == "published")
            let long = String(repeating: "k", count: 257)
            let socket = try await node.connect(try await node.token())
            let ws = try await socket.call("publish", #""channel":"c","event":"e","data":1,"idempotency_key":"\#(long)""#)
            #expect(ws["code"].int == 40000 && ws["message"].string?.contains("idempotency_key") == true)
        }
    }

    @Test func boundsAreRefusedNamingTheLimit() async throws {
        try await TestNode.with({ $0.limits.maxPresencePerConnection = 2 }) { node in
            let huge = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"x","history_ttl_seconds":100000000000000000}"#)
            #expect(huge.status == 400 && huge.json["error"]["message"].string?.contains("history_ttl_seconds") == true)
            let year = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"x","history_ttl_seconds":31536000}"#)
            #expect(year.status == 201)
            #expect(try await node.publish("x", data: "1").status == 201)
            let size = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"y","history_size":100001}"#)
            #expect(size.status == 400 && size.json["error"]["message"].string?.contains("history_size") == true)
            let token = try await node.rest(.POST, "/v1/realtime/token", #"{"capabilities":{"a":["fly"]}}"#)
            #expect(token.status == 400 && token.json["error"]["message"].string?.contains("capabilities") == true)
            let socket = try await node.connect(try await node.token())
            for c in ["p1", "p2"] { #expect(try await socket.call("presence.enter", #""channel":"\#(c)""#)["type"].string == "ack") }
            let third = try await socket.call("presence.enter", #""channel":"p3""#)
            #expect(third["code"].int == 40000 && third["message"].string?.contains("REALTIME_MAX_PRESENCE_PER_CONNECTION") == true)
            // Entering again where it already is stays allowed (an update).
            #expect(try await socket.call("presence.update", #""channel":"p1","data":1"#)["type"].string == "ack")
        }
    }

    /// Offline tokens are checked strictly: HS256 only, a configured `kid`, `nbf` honoured,
    /// and claims of any size never trap.
    @Test func offlineTokensAreVerifiedStrictly() async throws {
        try await TestNode.with { node in
            let secret = String(repeating: "k", count: 32)  // TestNode's secret, id "t1"
            let now = Int(Date().timeIntervalSince1970)
            func token(alg: String = "HS256", kid: String? = "t1", exp: String = "\(now + 600)", nbf: Int? = nil) -> String {
                let kidPart = kid.map { #","kid":"\#($0)""# } ?? ""
                let nbfPart = nbf.map { #","nbf":\#($0)"# } ?? ""
                return Self.jwt(header: #"{"alg":"\#(alg)","typ":"JWT"\#(kidPart)}"#,
                    payload: #"{"sub":"off","cap":{"*":["*"]},"iat":\#(now),"exp":\#(exp)\#(nbfPart)}"#, secret: secret)
            }
            let good = try await TestSocket.connect(node.wsURL + "?token=" + token())
            #expect(try await good.next()["type"].string == "connected")
            for (bad, why) in [(token(alg: "HS512"), "alg"), (token(kid: "nope"), "kid"), (token(nbf: now + 3600), "nbf"),
                (token(exp: "9300000000000000"), "exp"), (token(exp: "-5"), "exp")] {
                let socket = try await TestSocket.connect(node.wsURL + "?token=" + bad)
                let reply = try await socket.next()
                #expect(reply["code"].int == 40141 || reply["code"].int == 40140, "\(why): \(reply)")
                #expect(try await socket.closeCode() == 4001, "\(why)")
            }
            #expect(try await node.rest(.GET, "/healthz", key: "").status == 200)
        }
    }

    @Test func unauthenticatedConnectionsAreBoundedPerNode() async throws {
        // The auth window is far beyond the test's length: on a loaded machine the default 10 s
        // could close the waiting connections before one of them authenticates.
        try await TestNode.with({ $0.limits.maxUnauthenticatedConnections = 2; $0.timing.authTimeoutSeconds = 600 }) { node in
            var waiting: [TestSocket] = []
            for _ in 0..<2 {
                let s = try await TestSocket.connect(node.wsURL)
                try await node.eventually("the handshake") { s.isUpgraded }
                waiting.append(s)
            }
            let refused = try await TestSocket.connect(node.wsURL)
            #expect(try await refused.closeCode() == 1013)
            // One authenticates: room for another.
            waiting[0].send(#"{"op":"auth","token":"\#(try await node.token())"}"#)
            let answer = try await waiting[0].next()
            #expect(answer["type"].string == "connected", "\(answer)")
            try await node.eventually("room for one more") {
                let s = try await TestSocket.connect(node.wsURL)
                s.send(#"{"op":"ping"}"#)
                let code = (try? await s.next(timeout: .seconds(2)))?["code"].int
                s.close()
                return code == 40100
            }
        }
    }

    @Test func aRequestHeadThatDoesNotArriveInTimeIsCut() async throws {
        try await TestNode.with({ $0.timing.httpHeadReadTimeoutSeconds = 2 }) { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            try await peer.sendRaw(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n".utf8))  // never finished
            let start = ContinuousClock.now
            try await node.eventually("the slow head to be cut", timeout: .seconds(30)) { peer.isClosed }
            #expect(ContinuousClock.now - start < .seconds(30))
            // The node still serves. Its 2 s head timeout applies to this request's connection
            // too, and a loaded machine may be that slow to send a head: it is asked until it answers.
            try await node.eventually("the node to answer", timeout: .seconds(30)) {
                (try? await node.rest(.GET, "/healthz", key: ""))?.status == 200
            }
        }
    }

    /// On a kept-alive connection the head clock starts at the next request's first byte: a
    /// connection that sends nothing after its answer is left open (the idle timeout bounds it),
    /// and one that trickles its second head is cut like a first one.
    @Test func aKeptAliveConnectionsNextHeadIsBoundToo() async throws {
        try await TestNode.with({ $0.timing.httpHeadReadTimeoutSeconds = 2 }) { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            let request = Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            try await peer.sendRaw(request)
            try await node.eventually("the first answer") { peer.answers == 1 }
            // Silent for three head timeouts: a timer that started at the answer would have cut it.
            try await Task.sleep(for: .seconds(6), clock: .suspending)
            #expect(!peer.isClosed)
            try await peer.sendRaw(request)
            try await node.eventually("the second answer") { peer.answers == 2 }
            try await peer.sendRaw(Array(request.prefix(20)))  // the third head never finishes
            try await node.eventually("the trickled head to be cut", timeout: .seconds(30)) { peer.isClosed }
            #expect(peer.answers == 2)
        }
    }

    /// A client that never reads asks for large history replies over and over: the node stops
    /// reading its ops once its socket backs up, and closes it at its outbound budget, so the
    /// node's memory grows by about the budget, not by what was asked for (60 x 10 MB).
    /// Clients without a valid key that send large batch bodies cannot make the node hold them:
    /// it reads at most the single-publish limit (128 KiB) before the key is checked, then drops
    /// the rest as it arrives. 16 connections × 6 MiB of unfinished 16 MiB bodies grow the node
    /// by far less than the 96 MiB sent (it held them all before). A valid key's batch larger
    /// than that limit is read whole and published; a refused one is answered 40100 at its end.
    @Test func bodiesWithoutAValidKeyAreNotHeld() async throws {
        let node = GatewayProcess(key: Cluster.key, nodeID: "prekey")
        try await node.start(environment: ["REALTIME_API_KEY": Cluster.key, "REALTIME_TOKEN_SECRET": Cluster.secret])
        func head(key: String, length: Int) -> [UInt8] {
            Array("POST /v1/realtime/publish/batch HTTP/1.1\r\nHost: x\r\nX-API-Key: \(key)\r\nContent-Length: \(length)\r\n\r\n".utf8)
        }
        try await Task.sleep(for: .seconds(1), clock: .suspending)
        let before = try #require(node.residentKilobytes)
        var peers: [RawPeer] = []
        for _ in 0..<16 {
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            try await peer.sendRaw(head(key: "k_0123456789abcdef.not-a-secret", length: 16 << 20))
            peers.append(peer)
        }
        let spaces = [UInt8](repeating: 0x20, count: 1 << 20)  // JSON whitespace
        for _ in 0..<6 { for peer in peers { try await peer.sendRaw(spaces) } }
        try await Task.sleep(for: .seconds(2), clock: .suspending)
        let after = try #require(node.residentKilobytes)
        #expect(after - before < 40 * 1024, "grew \(after - before) kB")
        for peer in peers { try await peer.close() }

        // A refused key's body of 1 MiB, finished: answered 40100.
        let refused = try await RawPeer.connect(port: node.port, path: nil)
        try await refused.sendRaw(head(key: "k_0123456789abcdef.not-a-secret", length: spaces.count) + spaces)
        try await eventually("the refusal", timeout: .seconds(30)) { !HTTPStream.parse(refused.bytes).isEmpty }
        #expect(HTTPStream.parse(refused.bytes).first?.json["error"]["code"].int == 40100)
        try await refused.close()
        // A valid key's batch of about 1 MiB: read whole (its key checked part-way) and published.
        let blob = String(repeating: "x", count: 10_000)
        let items = (0..<100).map { #"{"channel":"big","event":"e","data":{"i":\#($0),"b":"\#(blob)"}}"# }
        let batch = try await node.rest(.POST, "/v1/realtime/publish/batch", #"{"messages":[\#(items.joined(separator: ","))]}"#)
        #expect(batch.status == 200 && batch.json["results"].array.count == 100)
        #expect(batch.json["results"].array.allSatisfy { $0["status"].string == "published" })
        await node.terminate()
    }

    @Test func aClientThatNeverReadsCannotGrowTheNodeBeyondItsBudget() async throws {
        let node = GatewayProcess(key: Cluster.key, nodeID: "budget")
        try await node.start(environment: [
            "REALTIME_API_KEY": Cluster.key, "REALTIME_TOKEN_SECRET": Cluster.secret, "REALTIME_OUTBOUND_QUEUE_BYTES": "1048576",
            "REALTIME_MAX_MESSAGE_BYTES": "20000",
        ])
        _ = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"flood","type":"public","history_size":1000}"#)
        let blob = String(repeating: "x", count: 10_000)
        var batch: [String] = []
        for i in 0..<1000 { batch.append(#"{"channel":"flood","event":"e","data":{"i":\#(i),"b":"\#(blob)"}}"#) }
        for chunk in stride(from: 0, to: 1000, by: 250) {
            let r = try await node.rest(.POST, "/v1/realtime/publish/batch", #"{"messages":[\#(batch[chunk..<chunk + 250].joined(separator: ","))]}"#)
            #expect(r.status == 200)
        }
        let token = try await node.token(client: "sink", caps: "{}")
        try await Task.sleep(for: .seconds(1), clock: .suspending)
        let before = try #require(node.residentKilobytes)
        let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + token, reading: false)
        try await Task.sleep(for: .milliseconds(300), clock: .suspending)
        for _ in 0..<6 {
            try await peer.sendTexts(Array(repeating: #"{"op":"history","channel":"flood","limit":1000}"#, count: 10))
        }
        try await Task.sleep(for: .seconds(3), clock: .suspending)
        let after = try #require(node.residentKilobytes)
        // The budget (1 MiB) plus what one reply costs to build (about 10 MB of JSON and its
        // frame), not 60 replies (600 MB).
        #expect(after - before < 64 * 1024, "grew \(after - before) kB")
        #expect(try await node.rest(.GET, "/healthz", key: "").status == 200)
        try await peer.close()
        await node.terminate()
    }

    static func jwt(header: String, payload: String, secret: String) -> String {
        func b64(_ bytes: some Sequence<UInt8>) -> String {
            Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        let signing = b64(header.utf8) + "." + b64(payload.utf8)
        let mac = HMAC<SHA256>.authenticationCode(for: Array(signing.utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return signing + "." + b64(mac)
    }
}
