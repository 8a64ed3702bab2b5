import Foundation
import RealtimeCore
import RedisClient
import Synchronization
import Testing

/// Several real gateway processes on one real Redis, on a Redis Cluster and behind Sentinel.
@Suite struct ClusterTests {
    @Test(arguments: Deployment.allCases)
    func messagesPresenceHistoryKeysAndIdempotencyAreSharedAcrossNodes(_ deployment: Deployment) async throws {
        try await Cluster.with(nodes: 3, deployment: deployment) { cluster in
            let (n1, n2, n3) = (cluster.nodes[0], cluster.nodes[1], cluster.nodes[2])
            let sub = try await n1.connect(try await n1.token(client: "sub"))
            _ = try await sub.call("subscribe", #""channel":"news""#)
            let far = try await n3.connect(try await n3.token(client: "far"))
            _ = try await far.call("subscribe", #""channel":"news""#)
            let published = try await n3.publish("news", data: #"{"n":1}"#)
            #expect(published.status == 201)
            let m = try await sub.next(type: "message")
            #expect(m["id"].string == published.json["message_id"].string && m["data"]["n"].int == 1)
            #expect(try await far.next(type: "message")["id"] == m["id"])
            #expect(try await n2.rest(.GET, "/v1/realtime/channels/news").json["subscribers"].int == 2)

            // Presence entered on node 2 is seen from nodes 1 and 3, with events.
            let w1 = try await n1.connect(try await n1.token(client: "w1"))
            let w3 = try await n3.connect(try await n3.token(client: "w3"))
            for w in [w1, w3] { _ = try await w.call("subscribe", #""channel":"room""#) }
            let member = try await n2.connect(try await n2.token(client: "m", user: "u-m"))
            _ = try await member.call("presence.enter", #""channel":"room","data":{"mood":"ok"}"#)
            for w in [w1, w3] {
                let e = try await w.next(type: "presence_event")
                #expect(e["action"].string == "enter" && e["member"]["client_id"].string == "m" && e["member"]["data"]["mood"].string == "ok")
            }
            for n in [n1, n3] {
                #expect(try await n.rest(.GET, "/v1/realtime/channels/room/presence").json["members"][0]["user_id"].string == "u-m")
            }
            member.close()
            for w in [w1, w3] { #expect(try await w.next(type: "presence_event")["action"].string == "leave") }

            // History and idempotency are the same from every node.
            let first = try await n1.publish("pay", data: "1", extra: #","idempotency_key":"k1""#)
            let again = try await n2.publish("pay", data: "2", extra: #","idempotency_key":"k1""#)
            #expect(again.status == 200 && again.json["status"].string == "duplicate" && again.json["message_id"] == first.json["message_id"])
            let histories = try await [n1, n2, n3].asyncMap { try await $0.rest(.GET, "/v1/realtime/channels/news/history").json }
            #expect(histories.allSatisfy { $0 == histories[0] } && histories[0]["messages"].array.count == 1)

            // Keys made on one node work on all; a revocation reaches every node within 5 s.
            let made = try await n1.rest(.POST, "/v1/realtime/keys", #"{"name":"k","scopes":["realtime:publish","realtime:tokens"]}"#)
            let key = made.json["key"].string!
            #expect(try await n3.rest(.POST, "/v1/realtime/publish", #"{"channel":"c","event":"e","data":1}"#, key: key).status == 201)
            let token = try await n2.token(client: "holder", key: key)
            let holder = try await n3.connect(token)
            #expect(try await n2.rest(.DELETE, "/v1/realtime/keys/\(made.json["key_id"].string!)").status == 204)
            try await eventually("key refused everywhere", timeout: .seconds(5)) {
                try await n1.rest(.POST, "/v1/realtime/publish", #"{"channel":"c","event":"e","data":1}"#, key: key).status == 401
            }
            #expect(try await holder.closeCode(timeout: .seconds(5)) == 4001)
        }
    }

    @Test(arguments: Deployment.allCases)
    func perChannelOrderIsTheSameOnEveryNode(_ deployment: Deployment) async throws {
        try await Cluster.with(nodes: 3, deployment: deployment) { cluster in
            var sockets: [TestSocket] = []
            for node in cluster.nodes {
                let s = try await node.connect(try await node.token(client: "s-\(node.nodeID)"))
                _ = try await s.call("subscribe", #""channel":"order""#)
                sockets.append(s)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for node in cluster.nodes {
                    group.addTask { for i in 0..<30 { try await node.publish("order", data: "\(i)") } }
                }
                try await group.waitForAll()
            }
            var sequences: [[String]] = []
            for s in sockets {
                var ids: [String] = []
                while ids.count < 90 { ids.append(try await s.next(type: "message")["id"].string!) }
                sequences.append(ids)
            }
            #expect(sequences.allSatisfy { $0 == sequences[0] })
            let parsed = sequences[0].compactMap { MessageID($0) }
            #expect(zip(parsed, parsed.dropFirst()).allSatisfy { $0 < $1 })
        }
    }

    @Test(arguments: Deployment.allCases)
    func aKilledNodesMembersLeaveOnceAndItsClientsResumeElsewhereWithoutLoss(_ deployment: Deployment) async throws {
        try await Cluster.with(
            nodes: 3, environment: ["REALTIME_PRESENCE_TTL_SECONDS": "3", "REALTIME_PRESENCE_HEARTBEAT_SECONDS": "1"], deployment: deployment
        ) { cluster in
            let (n1, n2, n3) = (cluster.nodes[0], cluster.nodes[1], cluster.nodes[2])
            let watcher = try await n1.connect(try await n1.token(client: "watcher"))
            _ = try await watcher.call("subscribe", #""channel":"room""#)
            let token = try await n2.token(client: "victim")
            let victim = try await n2.connect(token)
            _ = try await victim.call("subscribe", #""channel":"feed""#)
            _ = try await victim.call("presence.enter", #""channel":"room""#)
            #expect(try await watcher.next(type: "presence_event")["action"].string == "enter")

            let published = Mutex<[String]>([])
            let publisher = Task {
                for i in 0..<150 {
                    if let id = try? await n3.publish("feed", data: "\(i)").json["message_id"].string { published.withLock { $0.append(id) } }
                    try await Task.sleep(for: .milliseconds(10), clock: .suspending)
                }
            }
            var received: [String] = []
            while received.count < 20 { received.append(try await victim.next(type: "message")["id"].string!) }
            n2.kill9()
            // Its member expires one TTL (3 s) after its node's last heartbeat; the bound is
            // generous for a loaded machine (the leave's count, once, is checked below).
            let leave = try await watcher.next(type: "presence_event", timeout: .seconds(30))
            #expect(leave["action"].string == "leave" && leave["member"]["client_id"].string == "victim")

            // The client reconnects to another node and resumes from the last id it saw.
            let resumed = try await n1.connect(token)
            let sub = try await resumed.call("subscribe", #""channel":"feed","since_id":"\#(received.last!)""#)
            #expect(sub["resumed"].bool == true)
            try await publisher.value
            let all = published.withLock { $0 }
            while received.last != all.last { received.append(try await resumed.next(type: "message")["id"].string!) }
            #expect(received == Array(all.drop { $0 != received.first }))
            // Exactly one leave: nothing more arrives for the victim.
            let later = await watcher.drain(quiet: .seconds(2)).filter { $0["type"].string == "presence_event" }
            #expect(later.isEmpty)
        }
    }

    @Test func redisRestartUnderLoadLosesNothingThatWasAcknowledged() async throws {
        try await Cluster.with(nodes: 2) { cluster in
            let (n1, n2) = (cluster.nodes[0], cluster.nodes[1])
            let sub = try await n1.connect(try await n1.token(client: "sub"))
            _ = try await sub.call("subscribe", #""channel":"load""#)
            let acknowledged = Mutex<[Int]>([])
            let refused = Mutex<[Int]>([])
            let unknown = Mutex<[Int]>([])
            let stop = Atomic<Bool>(false)
            let publisher = Task {
                var i = 0
                while !stop.load(ordering: .relaxed), i < 2000 {
                    let r = try await n2.publish("load", data: "\(i)")
                    if r.status == 201 {
                        acknowledged.withLock { $0.append(i) }
                    } else if r.status == 504 {
                        // Sent when Redis died: it may or may not have been applied (50400).
                        #expect(r.json["error"]["code"].int == 50400, "\(r.json)")
                        unknown.withLock { $0.append(i) }
                    } else {
                        #expect(r.status == 503 && r.json["error"]["code"].int == 50300, "\(r.status) \(r.json)")
                        refused.withLock { $0.append(i) }
                    }
                    i += 1
                    try await Task.sleep(for: .milliseconds(5), clock: .suspending)
                }
            }
            try await Task.sleep(for: .milliseconds(500), clock: .suspending)
            cluster.redis!.stop()
            try await eventually("not ready during the outage") { try await n1.rest(.GET, "/readyz", key: "").status == 503 }
            // Redis stays down until the outage has refused a publish, however slowly the
            // publisher runs on a loaded machine.
            try await eventually("a publish refused during the outage", timeout: .seconds(30)) { !refused.withLock { $0 }.isEmpty }
            try await cluster.redis!.start(keepPort: true)
            try await eventually("ready again", timeout: .seconds(20)) {
                let a = try await n1.rest(.GET, "/readyz", key: "").status
                let b = try await n2.rest(.GET, "/readyz", key: "").status
                return a == 200 && b == 200
            }
            try await Task.sleep(for: .milliseconds(500), clock: .suspending)
            stop.store(true, ordering: .relaxed)
            try await publisher.value
            let ok = acknowledged.withLock { $0 }
            var got: [Int] = []
            while got.last != ok.last { got.append(try await sub.next(type: "message", timeout: .seconds(10))["data"].int!) }
            // Every acknowledged publish, in order; nothing refused with 50300; an outcome-unknown
            // one at most once.
            let maybe = Set(unknown.withLock { $0 })
            #expect(got.filter { !maybe.contains($0) } == ok)
            #expect(got.allSatisfy { ok.contains($0) || maybe.contains($0) } && Set(got).count == got.count)
        }
    }

    /// Redis refusing commands for a while without running them (here `BUSY`: another client's
    /// script runs past `busy-reply-threshold`; `LOADING` after a restart is the same kind) is
    /// "nothing was published, retry" (`50300`) over REST and WebSocket alike, never `50000`,
    /// and the node publishes again once Redis does.
    @Test func aRedisThatRefusesCommandsForAWhileIs50300AndPublishesNothing() async throws {
        try await Cluster.with(nodes: 1) { cluster in
            let node = cluster.nodes[0]
            let socket = try await node.connect(try await node.token(client: "pub"))
            #expect(try await node.publish("busy", data: "0").status == 201)
            let admin = RedisCommandClient(configuration: try RedisConfiguration(url: cluster.redis!.url))
            defer { admin.close() }
            _ = try await admin.send(["CONFIG", "SET", "busy-reply-threshold", "50"])
            let blocker = RedisCommandClient(configuration: try RedisConfiguration(url: cluster.redis!.url + "?command_timeout_ms=600000"))
            defer { blocker.close() }
            let script = Task { try? await blocker.send(["EVAL", "while true do end", "0"]) }
            try await eventually("redis answers BUSY") {
                do {
                    _ = try await admin.send(["GET", "probe"])
                    return false
                } catch let error as RedisError {
                    return error.isTransientRefusal
                }
            }
            let rest = try await node.publish("busy", data: "1")
            #expect(rest.status == 503 && rest.json["error"]["code"].int == 50300, "\(rest.status) \(rest.json)")
            let ws = try await socket.call("publish", #""channel":"busy","event":"e","data":2"#)
            #expect(ws["type"].string == "error" && ws["code"].int == 50300, "\(ws)")
            _ = try await admin.send(["SCRIPT", "KILL"])
            _ = await script.value
            try await eventually("publishing again") { try await node.publish("busy", data: "3").status == 201 }
            let history = try await node.rest(.GET, "/v1/realtime/channels/busy/history?direction=forwards").json["messages"].array
            #expect(history.map { $0["data"].int } == [0, 3], "the refused publishes left nothing")
        }
    }
}
