@testable import RealtimeServer
import RealtimeCore
import Testing

@Suite struct RESTTests {
    @Test func publishReturnsTheStreamIDAndHistoryReturnsTheMessage() async throws {
        try await TestNode.with { node in
            let r = try await node.publish("orders:eu", event: "created", data: #"{"id":7,"tags":["a"]}"#)
            #expect(r.status == 201)
            #expect(r.json.keys == ["message_id", "channel", "timestamp", "status"])
            #expect(r.json["status"].string == "published" && r.json["channel"].string == "orders:eu")
            let id = try #require(r.json["message_id"].string)
            #expect(MessageID(id) != nil && id.contains("-"))
            let h = try await node.rest(.GET, "/v1/realtime/channels/orders:eu/history")
            #expect(h.status == 200)
            let m = h.json["messages"][0]
            #expect(m["id"].string == id && m["event"].string == "created" && m["channel"].string == "orders:eu")
            #expect(m["data"]["id"].int == 7 && m["data"]["tags"][0].string == "a")
            #expect(m["timestamp"].string == r.json["timestamp"].string)
            #expect(m["client_id"].isNull)
        }
    }

    @Test func idempotencyKeyReturnsTheOriginalIDAsDuplicate() async throws {
        try await TestNode.with { node in
            let first = try await node.publish("pay", data: "1", extra: #","idempotency_key":"order-1""#)
            let again = try await node.publish("pay", data: "2", extra: #","idempotency_key":"order-1""#)
            #expect(first.status == 201 && again.status == 200)
            #expect(again.json["status"].string == "duplicate" && again.json["message_id"] == first.json["message_id"])
            let h = try await node.rest(.GET, "/v1/realtime/channels/pay/history")
            #expect(h.json["messages"].array.count == 1)
        }
    }

    @Test func batchPublishesGoodItemsAndFailsBadOnesAlone() async throws {
        try await TestNode.with { node in
            let body = #"{"messages":[{"channel":"b","event":"e","data":1},{"channel":"bad name","event":"e","data":2},{"channel":"b","event":5},"nope",{"channel":"b","event":"e","data":3,"idempotency_key":"k"},{"channel":"b","event":"e","data":4,"idempotency_key":"k"}]}"#
            let r = try await node.rest(.POST, "/v1/realtime/publish/batch", body)
            #expect(r.status == 200)
            let results = r.json["results"].array
            #expect(results.count == 6)
            #expect(results[0]["status"].string == "published")
            #expect(results[1]["error"]["code"].int == 40010 && results[1]["error"]["status"].int == 400)
            #expect(results[2]["error"]["code"].int == 40000)
            #expect(results[3]["error"]["code"].int == 40000)
            #expect(results[4]["status"].string == "published")
            #expect(results[5]["status"].string == "duplicate" && results[5]["message_id"] == results[4]["message_id"])
            let h = try await node.rest(.GET, "/v1/realtime/channels/b/history?direction=forwards")
            #expect(h.json["messages"].array.compactMap { $0["data"].int } == [1, 3])
        }
    }

    @Test func batchOverTheLimitIsRefused() async throws {
        try await TestNode.with({ $0.limits.maxBatchSize = 2 }) { node in
            let item = #"{"channel":"b","event":"e","data":1}"#
            let r = try await node.rest(.POST, "/v1/realtime/publish/batch", #"{"messages":[\#(item),\#(item),\#(item)]}"#)
            #expect(r.status == 400 && r.json["error"]["code"].int == 40000)
        }
    }

    @Test func historyPagingCoversEverythingExactlyOnceBothWays() async throws {
        try await TestNode.with { node in
            var ids: [String] = []
            for i in 0..<23 { ids.append(try await node.publish("paged", data: "\(i)").json["message_id"].string!) }
            for direction in ["forwards", "backwards"] {
                var seen: [String] = []
                var path = "/v1/realtime/channels/paged/history?limit=5&direction=\(direction)"
                while true {
                    let page = try await node.rest(.GET, path)
                    #expect(page.status == 200)
                    seen += page.json["messages"].array.compactMap { $0["id"].string }
                    guard let cursor = page.json["next_cursor"].string else { break }
                    path = "/v1/realtime/channels/paged/history?limit=5&cursor=\(cursor)"
                }
                #expect(seen == (direction == "forwards" ? ids : ids.reversed()))
            }
            let window = try await node.rest(.GET, "/v1/realtime/channels/paged/history?direction=forwards&since_id=\(ids[2])&until_id=\(ids[5])")
            #expect(window.json["messages"].array.compactMap { $0["id"].string } == Array(ids[3...5]))
        }
    }

    @Test func historyRefusesBadParameters() async throws {
        try await TestNode.with { node in
            for query in ["limit=0", "limit=1001", "direction=up", "since_id=x", "cursor=zz"] {
                let r = try await node.rest(.GET, "/v1/realtime/channels/c/history?\(query)")
                #expect(r.status == 400 && r.json["error"]["code"].int == 40000, "\(query)")
            }
        }
    }

    @Test func errorsUseTheContractEnvelopeAndCodes() async throws {
        try await TestNode.with { node in
            let noKey = try await node.rest(.POST, "/v1/realtime/publish", "{}", key: "")
            #expect(noKey.status == 401 && noKey.json["error"]["code"].int == 40100 && noKey.json["error"]["status"].int == 401)
            #expect(noKey.json["error"]["message"].string?.isEmpty == false)
            let badKey = try await node.rest(.POST, "/v1/realtime/publish", "{}", key: "k_nope.secret")
            #expect(badKey.json["error"]["code"].int == 40100)
            let viaHeader = try await node.rest(.GET, "/v1/realtime/channels", key: "", headers: [("X-API-Key", node.key)])
            #expect(viaHeader.status == 200)
            let wrongType = try await node.rest(.POST, "/v1/realtime/publish", #"{"channel":"c","event":1,"data":1}"#)
            #expect(wrongType.status == 400 && wrongType.json["error"]["message"].string?.contains("event") == true)
            let missing = try await node.rest(.POST, "/v1/realtime/publish", #"{"event":"e"}"#)
            #expect(missing.status == 400 && missing.json["error"]["message"].string?.contains("channel") == true)
            let garbage = try await node.rest(.POST, "/v1/realtime/publish", "{nope")
            #expect(garbage.status == 400 && garbage.json["error"]["code"].int == 40000)
            let badName = try await node.publish("no spaces allowed")
            #expect(badName.status == 400 && badName.json["error"]["code"].int == 40010)
            let unknown = try await node.rest(.GET, "/v1/realtime/nowhere")
            #expect(unknown.status == 404 && unknown.json["error"]["code"].int == 40400)
        }
    }

    /// A path that exists under other methods is `405` / `40500` with an `Allow` header naming
    /// them (on the fast path's routes too); HEAD is answered wherever GET is, without a body.
    @Test func aKnownPathWithAnotherMethodIs405AndHeadFollowsGet() async throws {
        try await TestNode.with { node in
            let cases: [(HTTPMethodAlias, String, allow: Set<String>)] = [
                (.GET, "/v1/realtime/publish", ["POST"]),
                (.DELETE, "/v1/realtime/publish/batch", ["POST"]),
                (.PUT, "/v1/realtime/channels", ["GET", "HEAD", "POST"]),
                (.POST, "/v1/realtime/channels/some-channel/history", ["GET", "HEAD"]),
                (.GET, "/v1/realtime/keys/k_0123", ["DELETE"]),
                (.POST, "/healthz", ["GET", "HEAD"]),
            ]
            for (method, path, allow) in cases {
                let r = try await node.rest(method, path, method == .GET ? nil : "{}")
                #expect(r.status == 405 && r.json["error"]["code"].int == 40500, "\(method) \(path): \(r.status) \(r.json)")
                let named = r.header("allow").map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
                #expect(named == allow, "\(method) \(path)")
            }
            #expect(try await node.rest(.PATCH, "/v1/realtime/nowhere/at/all").status == 404)
            let head = try await node.rest(.HEAD, "/v1/realtime/channels/h/history")
            #expect(head.status == 200 && head.json == .null)
            #expect(try await node.rest(.HEAD, "/healthz").status == 200)
            #expect(try await node.rest(.HEAD, "/v1/realtime/channels/h/history", key: "").status == 401)
        }
    }

    @Test func oversizedMessagesAndBodiesGet41300() async throws {
        try await TestNode.with({ $0.limits.maxMessageBytes = 1000 }) { node in
            let big = "\"" + String(repeating: "x", count: 1200) + "\""
            let r = try await node.publish("big", data: big)
            #expect(r.status == 413 && r.json["error"]["code"].int == 41300)
            let huge = "\"" + String(repeating: "x", count: 200_000) + "\""
            let body = try await node.publish("big", data: huge)
            #expect(body.status == 413 && body.json["error"]["code"].int == 41300, "\(body.status) \(body.json)")
            #expect(try await node.rest(.GET, "/v1/realtime/channels/big/history").json["messages"].array.isEmpty)
        }
    }

    @Test func scopesAreEnforcedPerEndpoint() async throws {
        try await TestNode.with { node in
            let made = try await node.rest(.POST, "/v1/realtime/keys", #"{"name":"pub-only","scopes":["realtime:publish"]}"#)
            #expect(made.status == 201)
            let key = try #require(made.json["key"].string)
            #expect(try await node.rest(.POST, "/v1/realtime/publish", #"{"channel":"c","event":"e","data":1}"#, key: key).status == 201)
            for (method, path, body) in [
                (HTTPMethodName.get, "/v1/realtime/channels/c/history", nil as String?),
                (.get, "/v1/realtime/channels/c/presence", nil),
                (.get, "/v1/realtime/channels", nil),
                (.get, "/v1/realtime/channels/c", nil),
                (.post, "/v1/realtime/token", "{}"),
                (.post, "/v1/realtime/channels", #"{"name":"x"}"#),
                (.delete, "/v1/realtime/channels/c", nil),
                (.get, "/v1/realtime/keys", nil),
            ] {
                let r = try await node.rest(method.http, path, body, key: key)
                #expect(r.status == 403 && r.json["error"]["code"].int == 40300, "\(path)")
            }
        }
    }

    @Test func keysAreCreatedListedWithoutSecretsAndRevoked() async throws {
        try await TestNode.with { node in
            let made = try await node.rest(.POST, "/v1/realtime/keys", #"{"name":"ci","scopes":["realtime:publish","realtime:tokens"]}"#)
            #expect(made.status == 201)
            #expect(made.json.keys == ["key_id", "key", "name", "scopes", "created_at"])
            let keyID = try #require(made.json["key_id"].string)
            let secret = try #require(made.json["key"].string)
            let list = try await node.rest(.GET, "/v1/realtime/keys")
            let entry = list.json["keys"].array.first { $0["key_id"].string == keyID }
            #expect(entry?["name"].string == "ci" && entry?["key"].isNull == true)
            #expect(entry?["scopes"].array.compactMap(\.string) == ["realtime:publish", "realtime:tokens"])
            #expect(try await node.rest(.DELETE, "/v1/realtime/keys/\(keyID)").status == 204)
            #expect(try await node.rest(.DELETE, "/v1/realtime/keys/\(keyID)").json["error"]["code"].int == 40400)
            #expect(!(try await node.rest(.GET, "/v1/realtime/keys")).json["keys"].array.contains { $0["key_id"].string == keyID })
            let refused = try await node.rest(.POST, "/v1/realtime/publish", #"{"channel":"c","event":"e","data":1}"#, key: secret)
            #expect(refused.status == 401 && refused.json["error"]["code"].int == 40100)
            let badScope = try await node.rest(.POST, "/v1/realtime/keys", #"{"name":"x","scopes":["realtime:everything"]}"#)
            #expect(badScope.status == 400)
        }
    }

    @Test func channelsAreCreatedIdempotentlyListedInspectedAndDeleted() async throws {
        try await TestNode.with { node in
            let made = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"room:1","type":"presence","history_size":50,"history_ttl_seconds":600}"#)
            #expect(made.status == 201)
            #expect(made.json.keys == ["channel_id", "name", "type", "history_size", "history_ttl_seconds", "durability", "created_at"])
            #expect(made.json["type"].string == "presence" && made.json["history_size"].int == 50)
            let again = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"room:1","type":"presence"}"#)
            #expect(again.status == 200 && again.json["history_size"].int == 50)
            let clash = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"room:1","type":"public"}"#)
            #expect(clash.status == 409 && clash.json["error"]["code"].int == 40900)
            let badType = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"room:2","type":"secret"}"#)
            #expect(badType.status == 400 && badType.json["error"]["message"].string?.contains("type") == true)

            for name in ["room:2", "room:3"] { _ = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"\#(name)"}"#) }
            try await node.publish("implicit:one")
            var names: [String] = []
            var path = "/v1/realtime/channels?limit=2"
            while true {
                let page = try await node.rest(.GET, path)
                names += page.json["channels"].array.compactMap { $0["name"].string }
                guard let c = page.json["next_cursor"].string else { break }
                path = "/v1/realtime/channels?limit=2&cursor=\(c)"
            }
            #expect(names == ["implicit:one", "room:1", "room:2", "room:3"])

            let id = try await node.publish("room:1").json["message_id"].string
            let info = try await node.rest(.GET, "/v1/realtime/channels/room:1")
            #expect(info.json["last_message_id"].string == id && info.json["subscribers"].int == 0 && info.json["presence_members"].int == 0)
            let implicit = try await node.rest(.GET, "/v1/realtime/channels/never:used")
            #expect(implicit.status == 200 && implicit.json["type"].string == "private" && implicit.json["last_message_id"].isNull)

            #expect(try await node.rest(.DELETE, "/v1/realtime/channels/room:1").status == 204)
            #expect(try await node.rest(.DELETE, "/v1/realtime/channels/room:1").status == 404)
            #expect(try await node.rest(.GET, "/v1/realtime/channels/room:1/history").json["messages"].array.isEmpty)
        }
    }

    @Test func tokensCarryTheRequestedIdentityAndCapabilities() async throws {
        try await TestNode.with({ $0.publicURL = "https://rt.example.com/" }) { node in
            let r = try await node.rest(.POST, "/v1/realtime/token", #"{"user_id":"u1","channels":["orders:*"],"capabilities":{"chat:lobby":["publish"]},"ttl_seconds":120}"#)
            #expect(r.status == 201)
            #expect(r.json["endpoint"].string == "wss://rt.example.com/v1/realtime/ws")
            #expect(r.json["client_id"].string?.hasPrefix("c_") == true && r.json["user_id"].string == "u1")
            #expect(Set(r.json["capabilities"]["orders:*"].array.compactMap(\.string)) == ["subscribe", "presence", "history"])
            #expect(r.json["capabilities"]["chat:lobby"].array.compactMap(\.string) == ["publish"])
            #expect(r.json["expires_at"].string?.hasSuffix("Z") == true)
            for bad in [#"{"ttl_seconds":0}"#, #"{"ttl_seconds":86401}"#, #"{"channels":["bad name"]}"#, #"{"capabilities":{"x":["fly"]}}"#] {
                #expect(try await node.rest(.POST, "/v1/realtime/token", bad).status == 400, "\(bad)")
            }
        }
    }

    @Test func healthReadinessAndMetricsNeedNoKey() async throws {
        try await TestNode.with { node in
            #expect(try await node.rest(.GET, "/healthz", key: "").status == 200)
            #expect(try await node.rest(.GET, "/readyz", key: "").status == 200)
            try await node.publish("m")
            let metrics = try await node.rest(.GET, "/metrics", key: "")
            #expect(metrics.status == 200)
            #expect(metrics.json.string?.contains("realtime_messages_published_total 1") == true)
        }
    }

    /// Frames delivered to subscribers are counted (per event loop, then added to the node's
    /// counter): three subscribers, five messages each, at least 15 frames.
    @Test func deliveredFramesAreCounted() async throws {
        try await TestNode.with { node in
            var sockets: [TestSocket] = []
            for i in 0..<3 {
                let s = try await node.connect(try await node.token(client: "d\(i)"))
                _ = try await s.call("subscribe", #""channel":"counted""#)
                sockets.append(s)
            }
            for n in 0..<5 { _ = try await node.publish("counted", data: "\(n)") }
            for s in sockets {
                for _ in 0..<5 { #expect(try await s.next()["type"].string == "message") }
            }
            try await node.eventually("the delivery count") {
                let text = try await node.rest(.GET, "/metrics", key: "").json.string ?? ""
                let line = text.split(separator: "\n").first { $0.hasPrefix("realtime_frames_delivered_total ") }
                return line.flatMap { Int($0.split(separator: " ").last ?? "") }.map { $0 >= 15 } ?? false
            }
        }
    }

    @Test func publishRateIsLimitedPerKeyWithARetryHint() async throws {
        // The node's clock stands still: 1 a second holds a burst of 2, whatever the machine's pace.
        let clock = ManualClock(milliseconds: SystemClock().nowMilliseconds())
        try await TestNode.with(clock: clock, { $0.limits.keyPublishRate = 1 }) { node in
            var statuses: [Int] = []
            for _ in 0..<3 { statuses.append(try await node.publish("fast").status) }
            #expect(statuses == [201, 201, 429])
            let r = try await node.publish("fast")
            #expect(r.status == 429 && r.json["error"]["code"].int == 42900)
            #expect(r.headers.contains { $0.0.lowercased() == "retry-after" && $0.1 == "1" })
            clock.advance(byMilliseconds: 1000)
            #expect(try await node.publish("fast").status == 201, "a second refills one")
        }
    }
}

/// HTTP methods by name, so test tables stay readable.
enum HTTPMethodName {
    case get, post, delete
    var http: HTTPMethodAlias {
        switch self {
        case .get: return .GET
        case .post: return .POST
        case .delete: return .DELETE
        }
    }
}

@Suite struct BearerTokenTests {
    @Test func theSchemeIsCaseInsensitiveAndSpacesAroundTheKeyAreIgnored() {
        #expect(RESTController.bearerToken("Bearer rk_1.abc") == "rk_1.abc")
        #expect(RESTController.bearerToken("bearer rk_1.abc") == "rk_1.abc")
        #expect(RESTController.bearerToken("BEARER   rk_1.abc  ") == "rk_1.abc")
        #expect(RESTController.bearerToken("Basic dXNlcjpwYXNz") == nil)
        #expect(RESTController.bearerToken("Bearer") == nil)
        #expect(RESTController.bearerToken("Bearer    ") == nil)
        #expect(RESTController.bearerToken("Bearerrk_1.abc") == nil)
        #expect(RESTController.bearerToken("Bearer é-key") == "é-key")
    }
}
