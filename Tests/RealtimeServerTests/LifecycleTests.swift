import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import RealtimeCore
import RealtimeServer
import Testing

@Suite struct LifecycleTests {
    @Test func gracefulShutdownSends1012AndRemovesPresenceWithinTheBound() async throws {
        let engine = MemoryEngine()
        let channel = try ChannelName(validating: "bye")
        try await TestNode.with(engine: engine.engine) { node in
            let a = try await node.connect(try await node.token(client: "a"))
            let b = try await node.connect(try await node.token(client: "b"))
            for s in [a, b] {
                _ = try await s.call("subscribe", #""channel":"bye""#)
                _ = try await s.call("presence.enter", #""channel":"bye""#)
            }
            #expect(try await engine.members(channel).count == 2)
            let start = ContinuousClock.now
            await node.group.triggerGracefulShutdown()
            #expect(try await a.closeCode() == 1012)
            #expect(try await b.closeCode() == 1012)
            try await node.eventually("members removed") { try await engine.members(channel).isEmpty }
            // Removed by the shutdown, not by the 30 s presence TTL (generous for a loaded machine).
            #expect(ContinuousClock.now - start < .seconds(20))
        }
    }

    /// On graceful shutdown a kept-alive HTTP connection with nothing in flight is closed at
    /// once, not left to the shutdown bound or the idle timeout (here both far longer than the wait).
    @Test func gracefulShutdownClosesIdleKeptAliveConnectionsAtOnce() async throws {
        try await TestNode.with({ $0.timing.shutdownTimeoutSeconds = 300; $0.timing.httpIdleTimeoutSeconds = 600 }) { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            try await peer.sendRaw(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            try await node.eventually("the answer") { peer.answers == 1 }
            await node.group.triggerGracefulShutdown()
            try await node.eventually("the kept-alive connection closed", timeout: .seconds(60)) { peer.isClosed }
        }
    }

    /// A kept-alive connection with nothing to do is closed after the idle timeout; one that
    /// keeps publishing (answered below the router) stays open well past it.
    @Test func idleKeptAliveConnectionsCloseAndBusyOnesStayOpen() async throws {
        try await TestNode.with({ $0.timing.httpIdleTimeoutSeconds = 3 }) { node in
            let idle = try await RawPeer.connect(port: node.port, path: nil)
            try await idle.sendRaw(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            try await node.eventually("the idle connection's answer") { idle.answers == 1 }
            let busy = try await RawPeer.connect(port: node.port, path: nil)
            let until = ContinuousClock.now + .seconds(9)
            var sent = 0
            while ContinuousClock.now < until, !busy.isClosed {
                try await busy.sendRaw(Array(PublishFastPathTests.publish("busy", data: "\(sent)").utf8))
                sent += 1
                try await node.eventually("answer \(sent)") { busy.answers == sent || busy.isClosed }
                try await Task.sleep(for: .milliseconds(100), clock: .suspending)
            }
            #expect(!busy.isClosed, "closed after \(sent) publishes")
            try await node.eventually("the idle connection closed", timeout: .seconds(30)) { idle.isClosed }
        }
    }
}

@Suite struct ConfigurationTests {
    @Test func defaultsMakeAWorkingSingleNode() throws {
        let c = try GatewayConfiguration.load([:])
        #expect(c.host == "127.0.0.1" && c.port == 8080 && c.redisURL == nil && c.keyPrefix == "rt")
        #expect(c.limits.maxMessageBytes == 65536 && c.webSocketEndpoint == "ws://127.0.0.1:8080/v1/realtime/ws")
    }

    @Test(arguments: [
        ("REALTIME_PORT", "eighty"), ("REALTIME_PORT", "70000"), ("REALTIME_TOKEN_SECRET", "short"),
        ("REALTIME_MAX_MESSAGE_BYTES", "-1"), ("REALTIME_PUBLIC_URL", "ftp://x"), ("REALTIME_DEFAULT_CHANNEL_TYPE", "secret"),
        ("REALTIME_NO_SUCH_THING", "1"), ("REALTIME_REDIS_URL", "http://localhost"), ("REALTIME_LOG_LEVEL", "loud"),
        ("REALTIME_REDIS_URL", "redis+cluster://a:1/0"), ("REALTIME_REDIS_URL", "redis+cluster://a:1,,b:2"),
        ("REALTIME_REDIS_URL", "redis+sentinel://a:1"), ("REALTIME_REDIS_URL", "rediss+sentinel://a:1/m/x"),
        ("REALTIME_REDIS_URL", "redis://a:1?bogus=1"),
    ])
    func badSettingsNameTheSetting(_ setting: String, _ value: String) {
        #expect {
            _ = try GatewayConfiguration.load([setting: value])
        } throws: { error in
            (error as? ConfigurationError)?.setting == setting
        }
    }

    @Test func redisNeedsASharedTokenSecret() {
        #expect(throws: ConfigurationError(setting: "REALTIME_TOKEN_SECRET", problem: "required with the redis engine (all nodes must share it)")) {
            try GatewayConfiguration.load(["REALTIME_REDIS_URL": "redis://127.0.0.1:6379"])
        }
    }

    @Test func flagsOverrideTheEnvironment() throws {
        let values = try GatewayConfiguration.values(
            environment: ["REALTIME_PORT": "1", "PATH": "/bin"], flags: ["--port", "9090", "--max-message-bytes=1024", "--token-secrets", "a=\(String(repeating: "x", count: 32)),b=\(String(repeating: "y", count: 32))"])
        let c = try GatewayConfiguration.load(values)
        #expect(c.port == 9090 && c.limits.maxMessageBytes == 1024 && c.tokenSecrets.map(\.id) == ["a", "b"])
        #expect(throws: ConfigurationError.self) { try GatewayConfiguration.values(environment: [:], flags: ["--nope", "1"]) }
    }

    /// The real binary: starts with no settings beyond a port, prints its URL and key, serves,
    /// refuses a bad setting with its name, and stops on SIGTERM.
    /// A node whose port is taken says so and exits non-zero (it used to log the bind error
    /// at debug level only and then hang, neither serving nor exiting, with its banner waiting
    /// for a port that never came).
    @Test func aNodeThatCannotListenSaysWhyAndExits() async throws {
        let taken = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        defer { taken.close(promise: nil) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/realtime-gateway")
        process.arguments = ["--port", String(taken.localAddress?.port ?? 0), "--api-key", "taken-port-key-0123456789"]
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("REALTIME_") }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = Pipe()
        try process.run()
        // SIGKILL: a node that hangs this way does not answer SIGTERM either.
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let deadline = ContinuousClock.now + .seconds(60)
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20), clock: .suspending) }
        #expect(!process.isRunning, "the node neither listened nor exited")
        guard !process.isRunning else { return }
        #expect(process.terminationStatus != 0)
        let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(said.contains("cannot listen on 127.0.0.1:") && said.contains("Address already in use"), "\(said)")
    }

    @Test func binaryStartsPrintsItsKeyServesAndStopsOnSIGTERM() async throws {
        let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug/realtime-gateway")
        let bad = Process()
        bad.executableURL = binary
        bad.arguments = ["--port", "eighty"]
        let badErr = Pipe()
        bad.standardError = badErr
        bad.standardOutput = Pipe()
        try bad.run()
        // Polls instead of blocking: a blocked thread here starves the other tests' clients.
        while bad.isRunning { try await Task.sleep(for: .milliseconds(20), clock: .suspending) }
        #expect(bad.terminationStatus != 0)
        #expect(String(decoding: badErr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("REALTIME_PORT"))

        let process = Process()
        process.executableURL = binary
        process.arguments = ["--port", "0"]
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("REALTIME_") }
        env["REALTIME_LOG_LEVEL"] = "error"
        process.environment = env
        let outPath = NSTemporaryDirectory() + "gateway-banner-\(UUID().uuidString)"
        FileManager.default.createFile(atPath: outPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        var banner = ""
        let deadline = ContinuousClock.now + .seconds(20)
        while !banner.contains("Bootstrap API key"), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20), clock: .suspending)
            banner = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        }
        let url = try #require(banner.split(separator: " ").first { $0.hasPrefix("http://") }.map(String.init))
        let key = try #require(banner.split(whereSeparator: \.isWhitespace).last.map(String.init))
        var request = HTTPClientRequest(url: url + "/v1/realtime/channels")
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(response.status.code == 200)
        kill(process.processIdentifier, SIGTERM)
        let stopDeadline = ContinuousClock.now + .seconds(15)
        while process.isRunning, ContinuousClock.now < stopDeadline { try await Task.sleep(for: .milliseconds(50), clock: .suspending) }
        #expect(!process.isRunning)
        #expect(process.terminationStatus == 0)
    }
}
