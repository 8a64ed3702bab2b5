import NIOCore
import NIOPosix
import RealtimeCore
import Testing

@Suite struct PresenceTests {
    @Test func subscribersSeeEnterUpdateLeaveAndCleanDisconnectLeaves() async throws {
        try await TestNode.with { node in
            let watcher = try await node.connect(try await node.token(client: "w"))
            _ = try await watcher.call("subscribe", #""channel":"room""#)
            let bob = try await node.connect(try await node.token(client: "bob", user: "u-bob"))
            #expect(try await bob.call("presence.enter", #""channel":"room","data":{"status":"here"}"#)["type"].string == "ack")
            let enter = try await watcher.next(type: "presence_event")
            #expect(enter["action"].string == "enter" && enter["channel"].string == "room")
            #expect(enter["member"]["client_id"].string == "bob" && enter["member"]["user_id"].string == "u-bob")
            #expect(enter["member"]["data"]["status"].string == "here" && enter["member"]["connection_id"].string != nil)
            _ = try await bob.call("presence.update", #""channel":"room","data":{"status":"away"}"#)
            let update = try await watcher.next(type: "presence_event")
            #expect(update["action"].string == "update" && update["member"]["data"]["status"].string == "away")
            #expect(update["member"]["entered_at"] == enter["member"]["entered_at"])
            _ = try await bob.call("presence.leave", #""channel":"room""#)
            #expect(try await watcher.next(type: "presence_event")["action"].string == "leave")

            _ = try await bob.call("presence.enter", #""channel":"room""#)
            #expect(try await watcher.next(type: "presence_event")["action"].string == "enter")
            bob.close()
            let leave = try await watcher.next(type: "presence_event")
            #expect(leave["action"].string == "leave" && leave["member"]["client_id"].string == "bob")
            #expect(try await node.rest(.GET, "/v1/realtime/channels/room/presence").json["members"].array.isEmpty)
        }
    }

    @Test func restPresenceListsMembersAndGroupsByUser() async throws {
        try await TestNode.with { node in
            let a1 = try await node.connect(try await node.token(client: "a1", user: "ann"))
            let a2 = try await node.connect(try await node.token(client: "a2", user: "ann"))
            let b = try await node.connect(try await node.token(client: "b", user: "ben"))
            for s in [a1, a2, b] { _ = try await s.call("presence.enter", #""channel":"lobby""#) }
            let all = try await node.rest(.GET, "/v1/realtime/channels/lobby/presence")
            #expect(all.json["members"].array.count == 3)
            #expect(all.json["members"][0].keys.isSuperset(of: ["client_id", "user_id", "connection_id", "entered_at", "updated_at"]))
            let grouped = try await node.rest(.GET, "/v1/realtime/channels/lobby/presence?group_by=user")
            let byUser = Dictionary(uniqueKeysWithValues: grouped.json["members"].array.map { ($0["user_id"].string ?? "", $0["connections"].int ?? 0) })
            #expect(byUser == ["ann": 2, "ben": 1])
            #expect(try await node.rest(.GET, "/v1/realtime/channels/lobby").json["presence_members"].int == 3)
        }
    }

    @Test func presenceChannelsEnterOnSubscribeAndLeaveOnUnsubscribe() async throws {
        try await TestNode.with { node in
            _ = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"auto","type":"presence"}"#)
            let watcher = try await node.connect(try await node.token(client: "w"))
            _ = try await watcher.call("subscribe", #""channel":"auto""#)
            #expect(try await watcher.next(type: "presence_event")["member"]["client_id"].string == "w")
            let joiner = try await node.connect(try await node.token(client: "j", caps: #"{"auto":["subscribe","presence"]}"#))
            _ = try await joiner.call("subscribe", #""channel":"auto""#)
            let enter = try await watcher.next(type: "presence_event")
            #expect(enter["action"].string == "enter" && enter["member"]["client_id"].string == "j")
            let lurker = try await node.connect(try await node.token(client: "l", caps: #"{"auto":["subscribe"]}"#))
            _ = try await lurker.call("subscribe", #""channel":"auto""#)
            _ = try await joiner.call("unsubscribe", #""channel":"auto""#)
            let leave = try await watcher.next(type: "presence_event")
            #expect(leave["action"].string == "leave" && leave["member"]["client_id"].string == "j")
            let members = try await node.rest(.GET, "/v1/realtime/channels/auto/presence").json["members"].array
            #expect(members.compactMap { $0["client_id"].string } == ["w"])
        }
    }

    @Test func oversizedPresenceDataIsRefusedWith41300() async throws {
        try await TestNode.with({ $0.limits.maxPresenceDataBytes = 64 }) { node in
            let s = try await node.connect(try await node.token())
            let r = try await s.call("presence.enter", #""channel":"p","data":"\#(String(repeating: "x", count: 100))""#)
            #expect(r["type"].string == "error" && r["code"].int == 41300)
            #expect(try await node.rest(.GET, "/v1/realtime/channels/p/presence").json["members"].array.isEmpty)
        }
    }

    /// A peer that vanishes without a close frame stops answering pings and is dropped for it
    /// (close 1001), and its member leaves then. The watcher reads presence over REST, so only
    /// the vanished peer has pings to answer; the presence TTL is far beyond the test's bound, so
    /// the leave can only come from the missed pings. The contract's "within two heartbeats" is
    /// checked generously (a loaded machine may run late): well under the TTL, never the 2 x 2 s.
    @Test func vanishedPeerLeavesWithinTwoHeartbeats() async throws {
        try await TestNode.with({ $0.timing.heartbeatSeconds = 2; $0.engine.presenceTTLSeconds = 600 }) { node in
            let token = try await node.token(client: "ghost")
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + token)
            try await peer.sendText(#"{"op":"presence.enter","channel":"ghost"}"#)
            func members() async throws -> [String] {
                let reply = try await node.rest(.GET, "/v1/realtime/channels/ghost/presence")
                return reply.json["members"].array.compactMap { $0["client_id"].string } ?? []
            }
            try await node.eventually("ghost entered", timeout: .seconds(30)) { try await members() == ["ghost"] }
            // Left long before the 600 s TTL could remove it.
            try await node.eventually("ghost left", timeout: .seconds(120)) { try await members().isEmpty }
            #expect(try await peer.framesUntilClose().closeCode == 1001, "closed for missing the ping")
            try await peer.close()
        }
    }

    /// A TCP stream that ends without a close frame (EOF) means the connection is gone at once
    /// (contract §10): its member leaves then, long before any heartbeat could notice.
    @Test func aStreamThatEndsWithoutACloseFrameLeavesAtOnce() async throws {
        try await TestNode.with({ $0.timing.heartbeatSeconds = 60 }) { node in
            let watcher = try await node.connect(try await node.token(client: "w"))
            _ = try await watcher.call("subscribe", #""channel":"eof""#)
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token(client: "gone")))
            try await peer.sendText(#"{"op":"presence.enter","channel":"eof"}"#)
            #expect(try await watcher.next(type: "presence_event")["action"].string == "enter")
            let start = ContinuousClock.now
            try await peer.close()
            let leave = try await watcher.next(type: "presence_event", timeout: .seconds(30))
            #expect(leave["action"].string == "leave" && leave["member"]["client_id"].string == "gone")
            // Far below the 60 s heartbeat: the leave came from the EOF.
            #expect(ContinuousClock.now - start < .seconds(20))
        }
    }
}
