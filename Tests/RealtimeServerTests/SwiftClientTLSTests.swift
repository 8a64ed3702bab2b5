import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import RealtimeClient
import RealtimeTestSupport
import Testing

/// The Swift SDK against a node serving HTTPS and WSS itself, with certificates this test
/// makes (openssl): REST over HTTPS, a WSS subscription that resumes after its socket drops,
/// and token endpoints that say wss://.
@Suite struct SwiftClientTLSTests {
    @Test func httpsPublishAndWssSubscribeAndResumeThroughTheSwiftSDK() async throws {
        try await Self.withTLSNode("tls") { node, tls in
            #expect(node.tls)
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
            let rest = RealtimeREST(baseURL: "https://127.0.0.1:\(node.port)", apiKey: Cluster.key, httpClient: http)
            try await eventually("the node to answer over HTTPS", timeout: .seconds(20)) {
                (try? await rest.publish(channel: "warmup", event: "e", data: .number(0))) != nil
            }
            let issued = try await rest.issueToken(TokenRequest(clientID: "swift-tls", capabilities: ["secure": ["*"]]))
            #expect(issued.endpoint.hasPrefix("wss://127.0.0.1:\(node.port)/"))
            var options = RealtimeConnection.Options(endpoint: issued.endpoint) {
                try await rest.issueToken(TokenRequest(clientID: "swift-tls", capabilities: ["secure": ["*"]])).token
            }
            options.tlsConfiguration = tls
            options.minRetryDelay = .milliseconds(50)
            let connection = RealtimeConnection(options: options)
            await connection.connect()
            let channel = await connection.channel("secure")
            try await channel.subscribe()
            let publisher = Task {
                for i in 0..<40 { _ = try await rest.publish(channel: "secure", event: "n", data: .number(Double(i))) }
            }
            var received: [RealtimeJSON] = []
            for await message in channel.messages {
                received.append(message.data)
                if received.count == 15 { await connection.dropTransport() }
                if received.count == 40 { break }
            }
            try await publisher.value
            #expect(received == (0..<40).map { RealtimeJSON.number(Double($0)) })
            await connection.close()
            try await http.shutdown()
        }
    }

    /// With TLS every answer carries `Strict-Transport-Security`: a publish (fast path), a
    /// route, errors of every kind (401, 404, 405, a publish refused on the fast path) and the
    /// `400` for input that is not HTTP/1.1.
    @Test func everyAnswerOverTLSCarriesStrictTransportSecurity() async throws {
        try await Self.withTLSNode("hsts") { node, tls in
            let context = try NIOSSLContext(configuration: tls)
            let raw: [(String, String)] = [
                ("publish", "POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: \(Cluster.key)\r\nContent-Length: 37\r\n\r\n"
                    + #"{"channel":"h","event":"e","data":1}"# + " "),
                ("refused publish", "POST /v1/realtime/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
                ("route", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("401", "GET /v1/realtime/channels HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("404", "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("405", "GET /v1/realtime/publish HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("malformed", "\u{1}\u{2} hello\r\n\r\n"),
            ]
            for (name, request) in raw {
                let collector = RawPeer.Collector()
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                            try channel.pipeline.syncOperations.addHandler(collector)
                        }
                    }
                    .connect(host: "127.0.0.1", port: node.port).get()
                try await channel.writeAndFlush(ByteBuffer(string: request)).get()
                try await eventually("\(name): an answer", timeout: .seconds(30)) { !HTTPStream.parse(collector.bytes.withLock { $0 }).isEmpty }
                let answer = try #require(HTTPStream.parse(collector.bytes.withLock { $0 }).first)
                #expect(answer.header("strict-transport-security") == "max-age=31536000", "\(name): \(answer.status)")
                try? await channel.close()
            }
        }
    }

    /// A node serving HTTPS and WSS with certificates made for the test (stopped afterwards),
    /// and a client configuration that trusts them.
    static func withTLSNode(_ nodeID: String, _ body: (GatewayProcess, TLSConfiguration) async throws -> Void) async throws {
        let dir = NSTemporaryDirectory() + "rt-tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await makeCertificates(in: dir)
        let node = GatewayProcess(key: Cluster.key, nodeID: nodeID)
        try await node.start(environment: [
            "REALTIME_API_KEY": Cluster.key, "REALTIME_TLS_CERT_FILE": dir + "/server.crt", "REALTIME_TLS_KEY_FILE": dir + "/server.key",
        ])
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(dir + "/ca.crt")
        do {
            try await body(node, tls)
        } catch {
            await node.terminate()
            throw error
        }
        await node.terminate()
    }

    /// A CA, and a server certificate it signed for 127.0.0.1.
    static func makeCertificates(in dir: String) async throws {
        let steps: [[String]] = [
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-subj", "/CN=realtime test CA", "-days", "2", "-out", "ca.crt"],
            ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-subj", "/CN=127.0.0.1", "-out", "server.csr"],
            ["sh", "-c", "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext"],
            ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-sha256",
             "-extfile", "server.ext", "-out", "server.crt"],
        ]
        for step in steps {
            let result = try await Command.run(step, directory: dir)
            try #require(result.status == 0, "\(step.joined(separator: " ")) failed: \(result.output)")
        }
    }
}

/// `ops/cluster-up.sh` with RT_TLS=1: the load balancer serves HTTPS/WSS and reaches the nodes
/// over TLS; the Swift SDK publishes and subscribes through it trusting the generated CA.
@Suite struct NativeTLSClusterTests {
    @Test func theNativeClusterRunsWithTLSOnTheBalancerAndTheNodes() async throws {
        let runDir = FileManager.default.temporaryDirectory.appendingPathComponent("rt-run-tls-\(UUID().uuidString)").path
        let base = try await RedisTopologyProcess.freeBlock(5, in: 26_000..<32_000, bus: false)
        let env = [
            "RT_BASE_PORT": String(base), "RT_REDIS_PORT": String(base + 4), "RT_RUN_DIR": runDir,
            "RT_GATEWAY_BIN": GatewayProcess.binary.path, "RT_TLS": "1",
        ]
        let (status, output) = try await OpsTests.run(["bash", "ops/cluster-up.sh"], environment: env)
        defer { _ = try? Command.runDetached(["bash", "ops/cluster-down.sh"], directory: OpsTests.root.path, environment: env) }
        #expect(status == 0, "\(output)")
        #expect(output.contains("cluster up: https://127.0.0.1:\(base)"))
        let key = try String(contentsOfFile: runDir + "/api-key", encoding: .utf8)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(runDir + "/tls/ca.crt")
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        let rest = RealtimeREST(baseURL: "https://127.0.0.1:\(base)", apiKey: key, httpClient: http)
        let issued = try await rest.issueToken(TokenRequest(clientID: "via-lb", capabilities: ["tls-lb": ["*"]]))
        #expect(issued.endpoint == "wss://127.0.0.1:\(base)/v1/realtime/ws")
        var options = RealtimeConnection.Options(endpoint: issued.endpoint) { issued.token }
        options.tlsConfiguration = tls
        let connection = RealtimeConnection(options: options)
        await connection.connect()
        let channel = await connection.channel("tls-lb")
        try await channel.subscribe()
        let sent = try await rest.publish(channel: "tls-lb", event: "e", data: .number(1))
        var got: String?
        for await message in channel.messages {
            got = message.id
            break
        }
        #expect(got == sent.messageID)
        await connection.close()
        try await http.shutdown()
        let (downStatus, _) = try await OpsTests.run(["bash", "ops/cluster-down.sh"], environment: env)
        #expect(downStatus == 0)
    }
}

/// TLS connections that end without `close_notify` (a browser or phone that just drops the
/// socket) must cost the node nothing once gone. With remote half-closure on, NIOSSL kept every
/// such connection's handler, its BoringSSL state and buffers for good: about 12-19 KiB of
/// resident memory per connection, without bound.
@Suite struct TLSRaggedCloseTests {
    /// Closes the socket from in front of the TLS handler, so no `close_notify` is sent.
    final class RaggedCloser: ChannelOutboundHandler, Sendable {
        typealias OutboundIn = NIOAny
    }

    @Test func connectionsDroppedWithoutCloseNotifyLeaveNoMemoryBehind() async throws {
        try await SwiftClientTLSTests.withTLSNode("tls-ragged") { node, tls in
            let context = try NIOSSLContext(configuration: tls)
            func dropOne() async throws {
                let handshake = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            let sync = channel.pipeline.syncOperations
                            try sync.addHandler(RaggedCloser())
                            try sync.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                            try sync.addHandler(HandshakeWatcher(done: handshake))
                        }
                    }
                    .connect(host: "127.0.0.1", port: node.port).get()
                try await handshake.futureResult.get()
                // A close issued at the first handler goes straight to the socket.
                try await channel.eventLoop.flatSubmit {
                    (try? channel.pipeline.syncOperations.context(handlerType: RaggedCloser.self))?.close() ?? channel.close()
                }.get()
            }
            for _ in 0..<200 { try await dropOne() }  // warm-up: allocator pools, caches
            try await Task.sleep(for: .seconds(1), clock: .suspending)
            let before = try #require(node.residentKilobytes)
            for _ in 0..<2000 { try await dropOne() }
            var after = try #require(node.residentKilobytes)
            // Whatever the node frees, it may free late: wait (bounded) for it to settle.
            try? await eventually("the node's memory to settle", timeout: .seconds(20)) {
                after = node.residentKilobytes ?? after
                return after - before < 8 * 1024
            }
            // 2,000 dropped connections grew the node by 24 MB and more before; now by about 1 MB.
            #expect(after - before < 8 * 1024, "2,000 connections dropped without close_notify grew the node by \(after - before) KiB")
            #expect(node.isRunning)
        }
    }

    /// Completes a promise once the TLS handshake is done.
    final class HandshakeWatcher: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let done: EventLoopPromise<Void>
        init(done: EventLoopPromise<Void>) { self.done = done }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { done.succeed() }
            context.fireUserInboundEventTriggered(event)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { done.fail(error) }
        func channelInactive(context: ChannelHandlerContext) {
            done.fail(ChannelError.ioOnClosedChannel)
            context.fireChannelInactive()
        }
    }
}
