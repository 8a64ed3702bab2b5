import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import RealtimeClient
import RealtimeCore
import Synchronization
import RealtimeTestSupport
import Testing
@testable import RealtimeServer

/// The Swift SDK (`RealtimeClient`) against live nodes: every REST call, the realtime
/// connection, reconnect and resume, token refresh, and failover across a Redis cluster.
@Suite struct SwiftClientTests {
    @Test func restClientCoversEveryCall() async throws {
        try await TestNode.with { node in
            let rest = RealtimeREST(baseURL: node.base, apiKey: node.key)
            let first = try await rest.publish(channel: "sdk-pay", event: "paid", data: ["amount": 5], idempotencyKey: "o-1")
            let again = try await rest.publish(channel: "sdk-pay", event: "paid", data: ["amount": 5], idempotencyKey: "o-1")
            #expect(first.status == "published" && again.status == "duplicate" && again.messageID == first.messageID)

            let results = try await rest.publishBatch([
                BatchMessage(channel: "sdk-batch", event: "e", data: 1),
                BatchMessage(channel: "bad name", event: "e", data: 2),
            ])
            guard case .published = results[0], case .failed(let code, _) = results[1] else { Issue.record("\(results)"); return }
            #expect(code == 40010, "invalid channel name")

            _ = try await rest.publishBatch((0..<25).map { BatchMessage(channel: "sdk-h", event: "e", data: .number(Double($0))) })
            var all: [RealtimeMessage] = []
            var page = try await rest.history(channel: "sdk-h", limit: 7, direction: .forwards)
            all += page.messages
            while let cursor = page.nextCursor {
                page = try await rest.history(channel: "sdk-h", limit: 7, cursor: cursor)
                all += page.messages
            }
            #expect(all.map(\.data) == (0..<25).map { RealtimeJSON.number(Double($0)) })

            let token = try await rest.issueToken(TokenRequest(userID: "u1", channels: ["chat:*"], ttlSeconds: 600))
            #expect(token.endpoint.hasSuffix("/v1/realtime/ws") && token.userID == "u1")
            #expect(token.capabilities["chat:*"]?.sorted() == ["history", "presence", "subscribe"])

            let created = try await rest.createChannel(name: "sdk-room", type: "presence", historySize: 50)
            #expect(created.type == "presence" && created.historySize == 50)
            await #expect(throws: RealtimeClientError.self) { _ = try await rest.createChannel(name: "sdk-room", type: "private") }
            #expect(try await rest.channels(limit: 1000).channels.contains { $0.name == "sdk-room" })
            #expect(try await rest.channel("sdk-room").subscribers == 0)
            try await rest.deleteChannel("sdk-room")
            #expect(try await rest.presence(channel: "sdk-empty").isEmpty)

            let key = try await rest.createKey(name: "ci", scopes: ["realtime:publish"])
            #expect(try await rest.keys().contains { $0.keyID == key.keyID })
            let scoped = RealtimeREST(baseURL: node.base, apiKey: key.key ?? "")
            #expect(try await scoped.publish(channel: "sdk-ci", event: "e").status == "published")
            try await rest.revokeKey(key.keyID)
            do {
                _ = try await scoped.publish(channel: "sdk-ci", event: "e")
                Issue.record("a revoked key publishes")
            } catch let e as RealtimeClientError {
                #expect(e.code == 40100 && e.status == 401)
            }
        }
    }

    @Test func connectionSubscribesPublishesAndUsesPresenceAndHistory() async throws {
        try await TestNode.with { node in
            let rest = RealtimeREST(baseURL: node.base, apiKey: node.key)
            let connection = RealtimeConnection(options: .init(endpoint: node.wsURL) {
                try await rest.issueToken(TokenRequest(clientID: "swift", capabilities: ["*": ["*"]])).token
            })
            await connection.connect()
            let chat = await connection.channel("sdk-chat")
            #expect(try await chat.subscribe() == false)
            var messages = chat.messages.makeAsyncIterator()
            let sent = try await rest.publish(channel: "sdk-chat", event: "greeting", data: ["text": "hi"])
            let got = await messages.next()
            #expect(got?.id == sent.messageID && got?.data["text"]?.string == "hi")
            let own = try await chat.publish(event: "own", data: 1)
            #expect(await messages.next()?.id == own.messageID)

            try await chat.enterPresence(["status": "here"])
            #expect(try await rest.presence(channel: "sdk-chat").map(\.clientID) == ["swift"])
            #expect(try await chat.presence().first?.data?["status"]?.string == "here")
            #expect(try await chat.history(limit: 10).map(\.id) == [own.messageID, sent.messageID])
            try await chat.leavePresence()
            #expect(try await rest.presence(channel: "sdk-chat").isEmpty)
            await connection.close()
        }
    }

    @Test func reconnectsAndResumesWithoutLossWhenTheConnectionDrops() async throws {
        try await TestNode.with { node in
            let rest = RealtimeREST(baseURL: node.base, apiKey: node.key)
            let connection = RealtimeConnection(options: .init(endpoint: node.wsURL) {
                try await rest.issueToken(TokenRequest(clientID: "resumer", capabilities: ["*": ["*"]])).token
            })
            await connection.connect()
            let feed = await connection.channel("sdk-feed")
            try await feed.subscribe()
            let publisher = Task {
                for i in 0..<150 {
                    _ = try await rest.publish(channel: "sdk-feed", event: "n", data: .number(Double(i)))
                    if i % 10 == 0 { try await Task.sleep(for: .milliseconds(5), clock: .suspending) }
                }
            }
            var received: [RealtimeJSON] = []
            var ids: [String] = []
            var drops = 0
            for await m in feed.messages {
                received.append(m.data)
                ids.append(m.id)
                // The client's socket vanishes, and later the server closes every connection.
                if received.count == 30 { await connection.dropTransport(); drops += 1 }
                if received.count == 80 {
                    for session in node.gateway.runtime.registry.all { session.close(code: 1012, reason: "node restarting") }
                    drops += 1
                }
                if received.count == 150 { break }
            }
            try await publisher.value
            #expect(drops == 2)
            #expect(received == (0..<150).map { RealtimeJSON.number(Double($0)) })
            #expect(Set(ids).count == 150)
            await connection.close()
        }
    }

    @Test func theSDKKeepsTheEpochHearsOfALossAndResumesOnlyWithinOneEpoch() async throws {
        let memory = MemoryEngine()
        try await TestNode.with(engine: memory.engine) { node in
            let rest = RealtimeREST(baseURL: node.base, apiKey: node.key)
            let connection = RealtimeConnection(options: .init(endpoint: node.wsURL) {
                try await rest.issueToken(TokenRequest(clientID: "epochs", capabilities: ["*": ["*"]])).token
            })
            await connection.connect()
            let first = try await rest.publish(channel: "sdk-epoch", event: "e", data: 0)
            let feed = await connection.channel("sdk-epoch")
            var events = feed.events.makeAsyncIterator()
            #expect(try await feed.subscribe(sinceID: first.messageID) == true)
            #expect(await events.next() == .subscribed(resumed: true))
            let epoch = try #require(feed.epoch)
            #expect(!epoch.isEmpty)
            // A node finds messages lost (a Redis failover): the live subscriber is told, with
            // the new epoch, which the next resume sends.
            let changed = try await memory.changeEpoch(try ChannelName(validating: "sdk-epoch"), from: epoch)
            #expect(await events.next() == .subscribed(resumed: false))
            #expect(await events.next() == .missedMessages(sinceID: first.messageID))
            try await node.eventually("the new epoch") { feed.epoch == changed }
            await connection.dropTransport()
            #expect(await events.next() == .subscribed(resumed: true))
            // A position stored with an epoch that is no longer the channel's does not resume.
            let later = await connection.channel("sdk-epoch-2")
            _ = try await rest.publish(channel: "sdk-epoch-2", event: "e", data: 1)
            let stale = try await rest.publish(channel: "sdk-epoch-2", event: "e", data: 2)
            #expect(try await later.subscribe(sinceID: stale.messageID, epoch: "an-old-epoch") == false)
            await connection.close()
        }
    }

    @Test func missedMessagesAndPresenceEventsReachTheirSequences() async throws {
        try await TestNode.with { node in
            let rest = RealtimeREST(baseURL: node.base, apiKey: node.key)
            _ = try await rest.createChannel(name: "sdk-short", historySize: 2)
            let first = try await rest.publish(channel: "sdk-short", event: "e", data: 0)
            for i in 1...5 { _ = try await rest.publish(channel: "sdk-short", event: "e", data: .number(Double(i))) }
            let watcher = RealtimeConnection(options: .init(endpoint: node.wsURL) {
                try await rest.issueToken(TokenRequest(clientID: "watcher", capabilities: ["*": ["*"]])).token
            })
            await watcher.connect()
            let short = await watcher.channel("sdk-short")
            var events = short.events.makeAsyncIterator()
            #expect(try await short.subscribe(sinceID: first.messageID) == false)
            #expect(await events.next() == .subscribed(resumed: false))
            #expect(await events.next() == .missedMessages(sinceID: first.messageID))
            var replayed = short.messages.makeAsyncIterator()
            #expect(await replayed.next()?.data == 4)
            #expect(await replayed.next()?.data == 5)

            let room = await watcher.channel("sdk-room")
            try await room.subscribe()
            var presence = room.presenceEvents.makeAsyncIterator()
            let member = RealtimeConnection(options: .init(endpoint: node.wsURL) {
                try await rest.issueToken(TokenRequest(clientID: "member", capabilities: ["*": ["*"]])).token
            })
            await member.connect()
            try await member.channel("sdk-room").enterPresence(["mood": "ok"])
            let entered = await presence.next()
            #expect(entered?.action == .enter && entered?.member.clientID == "member" && entered?.member.data?["mood"]?.string == "ok")
            await member.close()
            let left = await presence.next()
            #expect(left?.action == .leave, "\(String(describing: left))")
            await watcher.close()
        }
    }

    @Test func tokenIsRefreshedBeforeItExpires() async throws {
        // The token lives 10 s and the warning comes 8 s before: the refresh has 8 s to land, so
        // a loaded machine cannot make it late.
        try await TestNode.with({ $0.timing.tokenExpiryWarningSeconds = 8 }) { node in
            let rest = RealtimeREST(baseURL: node.base, apiKey: node.key)
            let calls = Atomic<Int>(0)
            let connection = RealtimeConnection(options: .init(endpoint: node.wsURL) {
                calls.add(1, ordering: .relaxed)
                return try await rest.issueToken(TokenRequest(clientID: "short", capabilities: ["*": ["*"]], ttlSeconds: 10)).token
            })
            await connection.connect()
            try await connection.waitUntilConnected()
            let before = await connection.state
            try await Task.sleep(for: .seconds(11), clock: .suspending)
            #expect(await connection.state == before, "still the same connection after the first token expired")
            #expect(calls.load(ordering: .relaxed) >= 2)
            let ch = await connection.channel("sdk-after")
            try await ch.subscribe()
            var it = ch.messages.makeAsyncIterator()
            let sent = try await rest.publish(channel: "sdk-after", event: "e", data: 1)
            #expect(await it.next()?.id == sent.messageID)
            await connection.close()
        }
    }

    @Test func resumesOnAnotherNodeWhenItsNodeIsKilled() async throws {
        try await Cluster.with(nodes: 2) { cluster in
            let (n1, n2) = (cluster.nodes[0], cluster.nodes[1])
            let rest = RealtimeREST(baseURL: n2.base, apiKey: n2.key)
            var options = RealtimeConnection.Options(endpoint: n1.wsURL) {
                try await rest.issueToken(TokenRequest(clientID: "roamer", capabilities: ["*": ["*"]])).token
            }
            options.fallbackEndpoints = [n2.wsURL]
            let connection = RealtimeConnection(options: options)
            await connection.connect()
            let feed = await connection.channel("sdk-cluster")
            try await feed.subscribe()
            let publisher = Task {
                for i in 0..<100 {
                    _ = try await rest.publish(channel: "sdk-cluster", event: "n", data: .number(Double(i)))
                    try await Task.sleep(for: .milliseconds(10), clock: .suspending)
                }
            }
            var received: [RealtimeJSON] = []
            for await m in feed.messages {
                received.append(m.data)
                if received.count == 20 { n1.kill9() }
                if received.count == 100 { break }
            }
            try await publisher.value
            #expect(received == (0..<100).map { RealtimeJSON.number(Double($0)) })
            await connection.close()
        }
    }
}

/// Close code 4003 (forbidden) means "do not retry". No gateway path sends it today, so a
/// WebSocket endpoint that refuses every connection with it stands in for the server; what is
/// tested is the client's reaction.
///
/// The endpoint is plain NIO on event-loop timers: it sends the close frame and closes when the
/// client answers it. (It was a Hummingbird WebSocket route under a ServiceGroup with shutdown
/// bounds, whose continuous-clock timers the test process's known stall loses:
/// docs/robustness.md.)
@Suite struct SwiftClientForbiddenTests {
    final class Attempts: Sendable {
        let count = Atomic<Int>(0)
    }

    /// Closes the connection when the client's close frame arrives.
    final class CloseOnReply: ChannelInboundHandler, Sendable {
        typealias InboundIn = WebSocketFrame
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if unwrapInboundIn(data).opcode == .connectionClose { context.close(promise: nil) }
        }
    }

    static func forbiddingEndpoint(_ attempts: Attempts) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let upgrader = NIOWebSocketServerUpgrader(
                    shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
                    upgradePipelineHandler: { channel, _ in
                        attempts.count.add(1, ordering: .relaxed)
                        var code = channel.allocator.buffer(capacity: 2)
                        code.writeInteger(UInt16(4003))
                        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: code)
                        // As a WebSocket server does: close once the client answers the close
                        // (or after 5 s without an answer, on an event-loop timer).
                        channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
                        return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(CloseOnReply()) }
                            .flatMap { channel.writeAndFlush(frame) }
                    })
                return channel.pipeline.configureHTTPServerPipeline(withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    @Test func neverRetriesAfterAForbiddenClose() async throws {
        let attempts = Attempts()
        let server = try await Self.forbiddingEndpoint(attempts)
        let port = try #require(server.localAddress?.port)
        var options = RealtimeConnection.Options(endpoint: "ws://127.0.0.1:\(port)/v1/realtime/ws") { "any-token" }
        options.minRetryDelay = .milliseconds(20)
        options.maxRetryDelay = .milliseconds(50)
        let connection = RealtimeConnection(options: options)
        await connection.connect()
        let failed = try await withThrowingTaskGroup(of: Bool.self) { race in
            race.addTask {
                for await state in connection.states {
                    if case .failed(let code) = state { return code == 4003 }
                }
                return false
            }
            race.addTask {
                try await Task.sleep(for: .seconds(10), clock: .suspending)
                return false
            }
            defer { race.cancelAll() }
            return try await race.next() ?? false
        }
        #expect(failed)
        await #expect(throws: RealtimeClientError.self) { try await connection.waitUntilConnected() }
        try await Task.sleep(for: .milliseconds(500), clock: .suspending)  // retries would come every 20-50 ms
        #expect(attempts.count.load(ordering: .relaxed) == 1)
        #expect(await connection.state == .failed(code: 4003))
        await connection.close()
        try await server.close()
    }
}

/// The README's Swift example, compiled and run here; the README must contain it verbatim.
@Suite struct SwiftClientReadmeTests {
    @Test func readmeExampleRunsAsWritten() async throws {
        try await TestNode.with { node in
            let (baseURL, endpoint, apiKey) = (node.base, node.wsURL, node.key)
            let output = Mutex<[String]>([])
            @Sendable func print(_ items: Any...) { output.withLock { $0.append(items.map { "\($0)" }.joined(separator: " ")) } }
            // README:begin
            let rest = RealtimeREST(baseURL: baseURL, apiKey: apiKey)
            let connection = RealtimeConnection(options: .init(endpoint: endpoint) {
                try await rest.issueToken(TokenRequest(clientID: "swift-app", channels: ["chat:*"])).token
            })
            await connection.connect()
            let chat = await connection.channel("chat:lobby")
            try await chat.subscribe()
            try await chat.enterPresence(["status": "online"])

            let sent = try await rest.publish(channel: "chat:lobby", event: "message", data: ["text": "hi"], idempotencyKey: "msg-1")
            for await message in chat.messages {
                print(message.id == sent.messageID, message.event, message.data["text"]?.string ?? "")
                break
            }
            print(try await rest.presence(channel: "chat:lobby").map(\.clientID))
            await connection.close()
            // README:end
            #expect(output.withLock { $0 } == ["true message hi", #"["swift-app"]"#])

            let source = try String(contentsOfFile: #filePath, encoding: .utf8)
            let lines = source.components(separatedBy: "\n")
            let begin = lines.firstIndex { $0.hasSuffix("// README:begin") }! + 1
            let end = lines.firstIndex { $0.hasSuffix("// README:end") }!
            let snippet = lines[begin..<end].map { $0.count >= 12 ? String($0.dropFirst(12)) : "" }.joined(separator: "\n")
            let readme = try String(contentsOfFile: #filePath.replacingOccurrences(of: "Tests/RealtimeServerTests/SwiftClientTests.swift", with: "README.md"), encoding: .utf8)
            #expect(readme.contains(snippet), "README's Swift example differs from the tested one")
        }
    }
}

/// Contract §10's safe retries, through the Swift SDK: a publish whose reply is lost (the link
/// stalls until the SDK gives up on the request, and what it sent arrives later) is retried
/// with the SDK's own idempotency key and exists exactly once.
@Suite struct SwiftClientRetryTests {
    @Test func aPublishWhoseReplyIsLostIsAppliedExactlyOnce() async throws {
        try await TestNode.with { node in
            let proxy = FaultProxy(upstreamPort: node.port)
            try await proxy.start()
            defer { proxy.stop() }
            let rest = RealtimeREST(
                baseURL: "http://127.0.0.1:\(proxy.port)", apiKey: node.key,
                retry: RetryPolicy(attempts: 20, baseDelay: .milliseconds(200), maxDelay: .milliseconds(500)), requestTimeout: .seconds(1))
            proxy.pause()
            let publishing = Task { try await rest.publish(channel: "once", event: "e", data: ["n": 1]) }
            // Longer than the request timeout: the first attempt's reply is lost for good.
            try await Task.sleep(for: .milliseconds(1800), clock: .suspending)
            proxy.resume()
            let result = try await publishing.value
            let history = try await node.rest(.GET, "/v1/realtime/channels/once/history").json["messages"].array
            #expect(history.count == 1)
            #expect(history.first?["id"].string == result.messageID)
            // Errors that retrying cannot fix are not retried.
            let direct = RealtimeREST(baseURL: "http://127.0.0.1:\(node.port)", apiKey: node.key)
            await #expect(throws: RealtimeClientError.self) { try await direct.publish(channel: "bad name", event: "e") }
        }
    }
}
