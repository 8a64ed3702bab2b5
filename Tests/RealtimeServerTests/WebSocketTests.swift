@testable import RealtimeServer
import Foundation
import RealtimeCore
import Synchronization
import Testing

@Suite struct WebSocketTests {
    @Test func connectedFrameCarriesTheContractFields() async throws {
        try await TestNode.with { node in
            // A token in the query string: `connected` is the first frame after the 101.
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token(client: "alice", user: "u1")))
            let first = try #require(try await peer.firstText())
            let hello = try JSONDecoder().decode(JSONValue.self, from: Data(first.utf8))
            try await peer.close()
            #expect(hello["type"].string == "connected")
            #expect(hello["connection_id"].string?.isEmpty == false && hello["client_id"].string == "alice" && hello["user_id"].string == "u1")
            #expect(hello["heartbeat_seconds"].int == 25 && hello["max_message_bytes"].int == 65536)
            #expect(hello["expires_at"].string?.hasSuffix("Z") == true)
        }
    }

    @Test func tokenMayArriveAsTheFirstFrame() async throws {
        try await TestNode.with { node in
            let socket = try await TestSocket.connect(node.wsURL)
            socket.send(#"{"op":"auth","token":"\#(try await node.token(client: "bob"))"}"#)
            let hello = try await socket.next()
            #expect(hello["type"].string == "connected" && hello["client_id"].string == "bob")
            #expect(try await socket.call("ping")["type"].string == "pong")
        }
    }

    @Test func noAuthFrameInTimeClosesWith4001() async throws {
        try await TestNode.with({ $0.timing.authTimeoutSeconds = 1 }) { node in
            let socket = try await TestSocket.connect(node.wsURL)
            #expect(try await socket.closeCode() == 4001)
        }
    }

    @Test func forgedAndExpiredTokensCloseWith4001AndTheirCode() async throws {
        try await TestNode.with { node in
            let forged = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.AAAA")
            let f = try await forged.framesUntilClose()
            #expect(f.texts.count == 1 && f.texts[0].contains("\"code\":40141") && f.closeCode == 4001, "\(f)")
            let shortLived = try await node.token(ttl: 1)
            try await Task.sleep(for: .milliseconds(2100), clock: .suspending)
            let expired = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + shortLived)
            let e = try await expired.framesUntilClose()
            #expect(e.texts.count == 1 && e.texts[0].contains("\"code\":40140") && e.closeCode == 4001, "\(e)")
        }
    }

    @Test func subscribersReceiveMessagesPublishedOverRESTAndWebSocket() async throws {
        try await TestNode.with { node in
            let sub = try await node.connect(try await node.token(client: "sub"))
            let subscribed = try await sub.call("subscribe", ref: "s1", #""channel":"chat:lobby""#)
            #expect(subscribed["type"].string == "subscribed" && subscribed["channel"].string == "chat:lobby")
            #expect(subscribed["resumed"].bool == false && subscribed["replayed"].int == 0)
            let rest = try await node.publish("chat:lobby", event: "hello", data: #"{"n":1}"#)
            let m1 = try await sub.next(type: "message")
            #expect(m1["id"].string == rest.json["message_id"].string && m1["event"].string == "hello" && m1["data"]["n"].int == 1)
            #expect(m1["channel"].string == "chat:lobby" && m1["client_id"].isNull && m1["timestamp"].string?.hasSuffix("Z") == true)

            let pub = try await node.connect(try await node.token(client: "pub"))
            let ack = try await pub.call("publish", ref: "p1", #""channel":"chat:lobby","event":"hi","data":[1,2]"#)
            #expect(ack["type"].string == "ack" && ack["status"].string == "published")
            let m2 = try await sub.next(type: "message")
            #expect(m2["id"].string == ack["message_id"].string && m2["client_id"].string == "pub" && m2["data"][1].int == 2)
            let dup = try await pub.call("publish", ref: "p2", #""channel":"chat:lobby","event":"hi","data":1,"idempotency_key":"x""#)
            let dup2 = try await pub.call("publish", ref: "p3", #""channel":"chat:lobby","event":"hi","data":1,"idempotency_key":"x""#)
            #expect(dup2["status"].string == "duplicate" && dup2["message_id"] == dup["message_id"])
            let rest3 = try await node.publish("chat:lobby", data: "3")
            // The duplicate was delivered once: the next message after it is the REST one.
            #expect(try await sub.next(type: "message")["id"] == dup["message_id"])
            #expect(try await sub.next(type: "message")["id"].string == rest3.json["message_id"].string)

            #expect(try await sub.call("unsubscribe", ref: "u1", #""channel":"chat:lobby""#)["type"].string == "unsubscribed")
            try await node.publish("chat:lobby", data: "4")
            #expect(await sub.drain().filter { $0["type"].string == "message" }.isEmpty)
        }
    }

    @Test func compressedConnectionsWork() async throws {
        try await TestNode.with { node in
            let socket = try await node.connect(try await node.token(), compression: true)
            _ = try await socket.call("subscribe", #""channel":"z""#)
            let text = String(repeating: "compress me ", count: 200)
            try await node.publish("z", data: "\"\(text)\"")
            #expect(try await socket.next(type: "message")["data"].string == text)
        }
    }

    @Test func historyAndPresenceOpsAnswerWithTheirFrames() async throws {
        try await TestNode.with { node in
            let ids = try await (0..<5).asyncMap { try await node.publish("h", data: "\($0)").json["message_id"].string! }
            let socket = try await node.connect(try await node.token(client: "alice", user: "u1"))
            let h = try await socket.call("history", #""channel":"h","limit":2"#)
            #expect(h["type"].string == "history" && h["channel"].string == "h")
            #expect(h["messages"].array.compactMap { $0["id"].string } == [ids[4], ids[3]])
            let f = try await socket.call("history", #""channel":"h","direction":"forwards","since_id":"\#(ids[1])""#)
            #expect(f["messages"].array.compactMap { $0["id"].string } == Array(ids[2...]))
            #expect(try await socket.call("presence.enter", #""channel":"h","data":{"s":"hi"}"#)["type"].string == "ack")
            let p = try await socket.call("presence.get", #""channel":"h""#)
            #expect(p["type"].string == "presence" && p["members"][0]["client_id"].string == "alice" && p["members"][0]["data"]["s"].string == "hi")
            #expect(p["members"][0].keys == ["client_id", "user_id", "connection_id", "data", "entered_at", "updated_at"])
        }
    }

    /// Each op against each channel type, with and without the capability.
    @Test(arguments: [ChannelType.public, .private, .presence])
    func capabilityMatrix(_ type: ChannelType) async throws {
        try await TestNode.with { node in
            _ = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"m:\#(type.rawValue)","type":"\#(type.rawValue)"}"#)
            let channel = "m:\(type.rawValue)"
            let ops: [(op: String, fields: String, readOnly: Bool)] = [
                ("subscribe", #""channel":"\#(channel)""#, true),
                ("history", #""channel":"\#(channel)""#, true),
                ("presence.get", #""channel":"\#(channel)""#, true),
                ("publish", #""channel":"\#(channel)","event":"e","data":1"#, false),
                ("presence.enter", #""channel":"\#(channel)""#, false),
            ]
            let granted = try await node.connect(try await node.token(client: "g", caps: #"{"m:*":["*"]}"#))
            let bare = try await node.connect(try await node.token(client: "b", caps: #"{"other":["*"]}"#))
            for (op, fields, readOnly) in ops {
                let yes = try await granted.call(op, fields)
                #expect(yes["type"].string != "error", "\(op) on \(type) with capability: \(yes)")
                let no = try await bare.call(op, fields)
                if type == .public && readOnly {
                    #expect(no["type"].string != "error", "\(op) on public without capability: \(no)")
                } else {
                    #expect(no["type"].string == "error" && no["code"].int == 40310, "\(op) on \(type) without capability: \(no)")
                }
            }
            // Operation-level grants: subscribe alone does not allow publish.
            let subOnly = try await node.connect(try await node.token(client: "s", caps: #"{"m:*":["subscribe"]}"#))
            #expect(try await subOnly.call("publish", #""channel":"\#(channel)","event":"e","data":1"#)["code"].int == 40310)
        }
    }

    @Test func resumeWhileAnotherTaskPublishesHasNoGapAndNoDuplicate() async throws {
        try await TestNode.with { node in
            let token = try await node.token(client: "r")
            let published = Mutex<[String]>([])
            let stop = Atomic<Bool>(false)
            let publisher = Task {
                var i = 0
                while !stop.load(ordering: .relaxed), i < 400 {
                    let id = try await node.publish("resume", data: "\(i)").json["message_id"].string!
                    published.withLock { $0.append(id) }
                    i += 1
                }
            }
            var received: [String] = []
            let first = try await node.connect(token)
            _ = try await first.call("subscribe", #""channel":"resume""#)
            while received.count < 20 { received.append(try await first.next(type: "message")["id"].string!) }
            first.close()
            // Let messages be published while the client is away.
            let atClose = published.withLock { $0.count }
            try await node.eventually("publishes during the gap") { published.withLock { $0.count } >= atClose + 5 }
            let second = try await node.connect(token)
            let sub = try await second.call("subscribe", #""channel":"resume","since_id":"\#(received.last!)""#)
            #expect(sub["resumed"].bool == true)
            try await Task.sleep(for: .milliseconds(300), clock: .suspending)
            stop.store(true, ordering: .relaxed)
            try await publisher.value
            let all = published.withLock { $0 }
            while received.last != all.last { received.append(try await second.next(type: "message")["id"].string!) }
            // Everything from the first message received on, across both connections, once and in order.
            let expected = Array(all.drop { $0 != received.first })
            #expect(received == expected, "received \(received.count) of \(expected.count)")
        }
    }

    @Test func resumeOlderThanHistoryReportsResumedFalseAndReplaysWhatIsKept() async throws {
        try await TestNode.with { node in
            _ = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"short","history_size":3}"#)
            let ids = try await (0..<8).asyncMap { try await node.publish("short", data: "\($0)").json["message_id"].string! }
            let socket = try await node.connect(try await node.token())
            let sub = try await socket.call("subscribe", #""channel":"short","since_id":"\#(ids[0])""#)
            #expect(sub["resumed"].bool == false && sub["replayed"].int == 3)
            var replayed: [String] = []
            for _ in 0..<3 { replayed.append(try await socket.next(type: "message")["id"].string!) }
            #expect(replayed == Array(ids.suffix(3)))
        }
    }

    /// The node warns an hour ahead (so the warning comes at once) and the token lives 10 s:
    /// generous for connecting on a loaded machine, and the close is waited for with room.
    @Test func tokenExpiringIsPushedThenTheConnectionClosesWith4001() async throws {
        try await TestNode.with({ $0.timing.tokenExpiryWarningSeconds = 3600 }) { node in
            let socket = try await node.connect(try await node.token(ttl: 10))
            let warning = try await socket.next(type: "token_expiring")
            #expect(warning["expires_at"].string?.hasSuffix("Z") == true)
            #expect(try await socket.closeCode(timeout: .seconds(40)) == 4001)
        }
    }

    /// A connection whose first token lives 10 s re-authenticates with a long one and is still
    /// served after the first token's expiry (waited for past it, never raced).
    @Test func authRefreshExtendsTheConnection() async throws {
        try await TestNode.with { node in
            let minted = SuspendingClock.now
            let socket = try await node.connect(try await node.token(client: "alice", ttl: 10))
            let ack = try await socket.call("auth", #""token":"\#(try await node.token(client: "alice", ttl: 3600))""#)
            #expect(ack["type"].string == "ack" && ack["expires_at"].string != nil)
            let wrong = try await socket.call("auth", #""token":"\#(try await node.token(client: "mallory"))""#)
            #expect(wrong["code"].int == 40141)
            try await Task.sleep(until: minted + .seconds(12), clock: .suspending)
            #expect(try await socket.call("ping")["type"].string == "pong")
        }
    }

    @Test func revokingAKeyClosesConnectionsHoldingItsTokens() async throws {
        try await TestNode.with { node in
            let made = try await node.rest(.POST, "/v1/realtime/keys", #"{"name":"minter","scopes":["realtime:tokens"]}"#)
            let keyID = made.json["key_id"].string!
            let token = try await node.token(client: "x", key: made.json["key"].string!)
            let socket = try await node.connect(token)
            let bystander = try await node.connect(try await node.token(client: "y"))
            #expect(try await node.rest(.DELETE, "/v1/realtime/keys/\(keyID)").status == 204)
            #expect(try await socket.closeCode() == 4001)
            let again = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + token)
            let refused = try await again.framesUntilClose()
            #expect(refused.texts.first?.contains("\"code\":40141") == true && refused.closeCode == 4001, "\(refused)")
            #expect(try await bystander.call("ping")["type"].string == "pong")
        }
    }

    @Test func deletingAChannelSendsLeavesThenUnsubscribedAndKeepsConnections() async throws {
        try await TestNode.with { node in
            let watcher = try await node.connect(try await node.token(client: "w"))
            _ = try await watcher.call("subscribe", #""channel":"doomed""#)
            let member = try await node.connect(try await node.token(client: "m"))
            _ = try await member.call("presence.enter", #""channel":"doomed""#)
            #expect(try await watcher.next(type: "presence_event")["action"].string == "enter")
            #expect(try await node.rest(.DELETE, "/v1/realtime/channels/doomed").status == 204)
            let leave = try await watcher.next(type: "presence_event")
            #expect(leave["action"].string == "leave" && leave["member"]["client_id"].string == "m")
            let ended = try await watcher.next(type: "unsubscribed")
            #expect(ended["channel"].string == "doomed")
            #expect(try await watcher.call("ping")["type"].string == "pong")
            // The subscription is gone: resubscribing works.
            #expect(try await watcher.call("subscribe", #""channel":"doomed""#)["type"].string == "subscribed")
        }
    }

    @Test func slowConsumerIsClosedWith4008WithoutSlowingOthers() async throws {
        try await TestNode.with({ $0.limits.outboundQueueFrames = 200; $0.limits.keyPublishRate = 1_000_000 }) { node in
            let fast = try await node.connect(try await node.token(client: "fast"))
            _ = try await fast.call("subscribe", #""channel":"flood""#)
            let slow = try await node.connect(try await node.token(client: "slow"), reading: false)
            slow.send(#"{"op":"subscribe","channel":"flood"}"#)
            try await node.eventually("two subscribers") {
                try await node.rest(.GET, "/v1/realtime/channels/flood").json["subscribers"].int == 2
            }
            let payload = "\"" + String(repeating: "abcdefgh", count: 1000) + "\""
            let item = #"{"channel":"flood","event":"e","data":\#(payload)}"#
            let batch = #"{"messages":[\#(Array(repeating: item, count: 100).joined(separator: ","))]}"#
            // 30 batches of 100 x 8 KB: far more than socket buffers and the queue hold for a
            // client that reads nothing, while the reading client keeps up batch by batch.
            var received = 0
            for _ in 0..<30 {
                #expect(try await node.rest(.POST, "/v1/realtime/publish/batch", batch).status == 200)
                for _ in 0..<100 {
                    _ = try await fast.next(type: "message", timeout: .seconds(20))
                    received += 1
                }
            }
            #expect(received == 3000)
            try await node.eventually("slow consumer dropped") {
                try await node.rest(.GET, "/v1/realtime/channels/flood").json["subscribers"].int == 1
            }
            #expect(try await slow.closeCode() == 4008)
            #expect(try await fast.call("ping")["type"].string == "pong")
        }
    }

    @Test func perConnectionPublishRateIsLimitedWithARetryHint() async throws {
        // The node's clock stands still until the test moves it, so how many publishes pass
        // does not depend on how fast a loaded machine answers: a bucket of 3 a second holds a
        // burst of 6, then refills only when the clock moves.
        let clock = ManualClock(milliseconds: SystemClock().nowMilliseconds())
        try await TestNode.with(clock: clock, { $0.limits.connectionPublishRate = 3 }) { node in
            let socket = try await node.connect(try await node.token())
            for i in 0..<10 { socket.send(#"{"op":"publish","ref":"r\#(i)","channel":"rl","event":"e","data":1}"#) }
            var replies: [JSONValue] = []
            while replies.count < 10 {
                let r = try await socket.next(timeout: .seconds(30))
                if r["ref"].string?.hasPrefix("r") == true { replies.append(r) }
            }
            #expect(replies.map { $0["ref"].string } == (0..<10).map { "r\($0)" }, "replies in op order")
            #expect(replies.prefix(6).allSatisfy { $0["type"].string == "ack" }, "the burst passes")
            for r in replies.dropFirst(6) {
                #expect(r["type"].string == "error" && r["code"].int == 42900)
                // One token at 3 a second is 334 ms away.
                #expect(r["retry_after_ms"].int == 334)
            }
            clock.advance(byMilliseconds: 1000)
            for i in 0..<4 { socket.send(#"{"op":"publish","ref":"later\#(i)","channel":"rl","event":"e","data":1}"#) }
            var later: [String?] = []
            while later.count < 4 {
                let r = try await socket.next(timeout: .seconds(30))
                if r["ref"].string?.hasPrefix("later") == true { later.append(r["type"].string) }
            }
            #expect(later == ["ack", "ack", "ack", "error"], "a second refills three")
            #expect(try await socket.call("ping")["type"].string == "pong")
        }
    }

    @Test func connectionsBeyondTheNodeLimitAreRefused() async throws {
        try await TestNode.with({ $0.limits.maxConnections = 2 }) { node in
            let a = try await node.connect(try await node.token(client: "a"))
            _ = try await node.connect(try await node.token(client: "b"))
            let third = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token(client: "c")))
            // Upgraded, then closed at once with 1013 (try again later), before any frame.
            let refused = try await third.framesUntilClose()
            #expect(refused.texts.isEmpty && refused.closeCode == 1013, "\(refused)")
            try await third.close()
            #expect(try await a.call("ping")["type"].string == "pong")
            // A draining node closes new connections with 1012 (checked before the limit):
            // reconnect elsewhere.
            node.gateway.runtime.draining.store(true, ordering: .relaxed)
            let late = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token(client: "d")))
            let drained = try await late.framesUntilClose()
            #expect(drained.texts.isEmpty && drained.closeCode == 1012, "\(drained)")
            node.gateway.runtime.draining.store(false, ordering: .relaxed)
        }
    }
}

extension Sequence where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}
