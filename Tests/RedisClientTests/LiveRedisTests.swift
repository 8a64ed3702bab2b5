import NIOCore
import NIOPosix
import RealtimeTestSupport
import RedisClient
import Synchronization
import Testing
import Logging
import RealtimeTestSupport

/// The client against a real redis-server started for the test.
@Suite struct LiveRedisTests {
    @Test func pipelinedCommandsFromManyTasksGetTheirOwnReplies() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        let client = RedisCommandClient(configuration: try RedisConfiguration(url: server.url))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    try await client.send(["SET", "k\(i)", "v\(i)"])
                    #expect(try await client.send(["GET", "k\(i)"]).string == "v\(i)")
                }
            }
            try await group.waitForAll()
        }
        await #expect(throws: RedisError.self) { try await client.send(["NOSUCHCOMMAND"]) }
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        #expect(try await client.evaluate(script, keys: ["n"], arguments: ["5"]).int == 5)
        // After SCRIPT FLUSH (as after a restart) EVALSHA reloads the script.
        try await client.send(["SCRIPT", "FLUSH"])
        #expect(try await client.evaluate(script, keys: ["n"], arguments: ["1"]).int == 6)
        client.close()
        server.stop()
    }

    @Test func aCommandWithoutAReplyTimesOutAndTheClientRecovers() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        var config = try RedisConfiguration(url: server.url)
        config.commandTimeout = .seconds(1)
        config.poolSize = 1
        let client = RedisCommandClient(configuration: config)
        // On a loaded machine even the first command (connect included) may outlast the
        // timeout: it is repeated until it lands.
        try await eventually(timeout: .seconds(20)) { (try? await client.send(["SET", "k", "v"]))?.string == "OK" }
        // Another connection makes Redis hold every client's commands, far longer than the
        // timeout, so the timeout is what ends the wait however slow the machine is.
        let admin = RedisCommandClient(configuration: try RedisConfiguration(url: server.url))
        try await admin.send(["CLIENT", "PAUSE", "8000"])
        let start = ContinuousClock.now
        await #expect(throws: RedisError.self) { try await client.send(["GET", "k"]) }
        #expect(ContinuousClock.now - start < .seconds(7))
        // The timed-out connection was closed; a command after the pause uses a new one.
        var answer: String?
        try await eventually(timeout: .seconds(30)) { answer = try? await client.send(["GET", "k"]).string; return answer == "v" }
        client.close()
        admin.close()
        server.stop()
    }

    @Test func rediss_URLsConnectOverTLSForCommandsAndPubSub() async throws {
        let server = try RedisServerProcess(tls: true)
        try await server.start()
        let config = try RedisConfiguration(url: server.url)
        #expect(config.tls && config.tlsCAFile != nil)
        let client = RedisCommandClient(configuration: config)
        try await client.send(["SET", "secure", "yes"])
        #expect(try await client.send(["GET", "secure"]).string == "yes")
        let subscriber = RedisSubscriber(configuration: config, logger: Logger(label: "test"))
        let received = Locked<[String]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await subscriber.run(onMessage: { _, payload in received.withLock { $0.append(String(buffer: payload)) } })
            }
            // The first connection includes a TLS handshake: on a loaded machine it may take
            // longer than the default two seconds, so the wait is generous here.
            try await subscriber.subscribe("tls", wait: .seconds(30))
            try await client.send(["PUBLISH", "tls", "over-tls"])
            try await eventually { received.withLock { $0 } == ["over-tls"] }
            group.cancelAll()
        }
        // Without the private CA, the server's certificate is refused.
        var untrusted = config
        untrusted.tlsCAFile = nil
        await #expect(throws: (any Error).self) { try await RedisCommandClient(configuration: untrusted).send(["PING"]) }
        client.close()
        server.stop()
    }

    @Test func subscriberReportsInterruptionAndRestoresEveryChannelAfterARestart() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        let config = try RedisConfiguration(url: server.url)
        let client = RedisCommandClient(configuration: config)
        let subscriber = RedisSubscriber(configuration: config, logger: Logger(label: "test"))
        let received = Locked<[String]>([])
        let link = Locked<[String]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await subscriber.run(
                    onMessage: { channel, payload in received.withLock { $0.append("\(channel)=\(String(buffer: payload))") } },
                    onInterrupted: { link.withLock { $0.append("interrupted") } },
                    onRestored: { link.withLock { $0.append("restored") } })
            }
            try await subscriber.subscribe("a", wait: .seconds(30))
            try await subscriber.subscribe("b", wait: .seconds(30))
            #expect(try await client.send(["PUBSUB", "NUMSUB", "a"]).array?.last?.int == 1)
            try await client.send(["PUBLISH", "a", "1"])
            // Not counted: one unsubscribe ends the subscription.
            await subscriber.unsubscribe("a")
            try await Task.sleep(for: .milliseconds(100), clock: .suspending)
            #expect(try await client.send(["PUBSUB", "NUMSUB", "a"]).array?.last?.int == 0)
            try await client.send(["PUBLISH", "a", "3"])
            try await client.send(["PUBLISH", "b", "4"])
            try await eventually { received.withLock { $0 } == ["a=1", "b=4"] }
            #expect(link.withLock { $0 }.isEmpty)

            server.stop()
            try await eventually(timeout: .seconds(10)) { link.withLock { $0 } == ["interrupted"] }
            #expect(!subscriber.isConnected, "a node whose pub/sub link is down is not ready")
            try await server.start()
            try await eventually(timeout: .seconds(10)) { link.withLock { $0 } == ["interrupted", "restored"] }
            #expect(subscriber.isConnected)
            // Restored means subscribed again: a publish right after it arrives.
            var sent = false
            try await eventually(timeout: .seconds(10)) {
                if !sent, (try? await client.send(["PUBLISH", "b", "5"]))?.int == 1 { sent = true }
                return received.withLock { $0.last } == "b=5"
            }
            #expect(subscriber.isHealthy())
            group.cancelAll()
        }
        client.close()
        server.stop()
    }
}

extension LiveRedisTests {
    /// One pub/sub connection per loop: channels spread over all of them (so their messages
    /// are read on several loops), each channel always on the same loop and in publish order;
    /// killing one link reports one interruption, and one restoration once it is back, after
    /// which every channel receives again.
    @Test func spreadSubscriberSpreadsChannelsOverLoopsAndRestoresAfterALostLink() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        let config = try RedisConfiguration(url: server.url)
        let client = RedisCommandClient(configuration: config)
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let subscriber = RedisSpreadSubscriber(configuration: config, group: loops, logger: Logger(label: "test"))
        let received = Locked<[String: [String]]>([:])
        let readOn = Locked<[String: Set<ObjectIdentifier>]>([:])
        let link = Locked<[String]>([])
        let channels = (0..<24).map { "spread-\($0)" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await subscriber.run(
                    onMessage: { channel, payload in
                        let loop = MultiThreadedEventLoopGroup.currentEventLoop.map { ObjectIdentifier($0) }
                        received.withLock { $0[channel, default: []].append(String(buffer: payload)) }
                        readOn.withLock { $0[channel, default: []].formUnion(loop.map { [$0] } ?? []) }
                    },
                    onInterrupted: { link.withLock { $0.append("interrupted") } },
                    onRestored: { link.withLock { $0.append("restored") } })
            }
            for channel in channels { try await subscriber.subscribe(channel, wait: .seconds(30)) }
            try await eventually { subscriber.isConnected }
            #expect(try await client.send(["PUBSUB", "NUMSUB"] + channels).array?.enumerated().allSatisfy { $0.offset % 2 == 0 || $0.element.int == 1 } == true)
            for i in 0..<20 { for channel in channels { try await client.send(["PUBLISH", channel, "\(i)"]) } }
            try await eventually { received.withLock { $0 }.values.reduce(0) { $0 + $1.count } == 20 * channels.count }
            #expect(received.withLock { $0 } == Dictionary(uniqueKeysWithValues: channels.map { ($0, (0..<20).map { "\($0)" }) }))
            let perChannel = readOn.withLock { $0 }
            #expect(perChannel.values.allSatisfy { $0.count == 1 })
            #expect(Set(perChannel.values.flatMap { $0 }).count == 3)

            // One link's connection dies: one interruption, then one restoration.
            let clients = try await client.send(["CLIENT", "LIST", "TYPE", "pubsub"]).string ?? ""
            let victim = try #require(clients.split(separator: "\n").first?.split(separator: " ").first { $0.hasPrefix("id=") }?.dropFirst(3))
            try await client.send(["CLIENT", "KILL", "ID", String(victim)])
            try await eventually(timeout: .seconds(10)) { link.withLock { $0 } == ["interrupted", "restored"] }
            received.withLock { $0 = [:] }
            for channel in channels { try await client.send(["PUBLISH", channel, "after"]) }
            try await eventually { received.withLock { $0 }.count == channels.count }
            #expect(received.withLock { $0 }.values.allSatisfy { $0 == ["after"] })

            // Every link is killed at once (each notices in its own time): interruptions and
            // restorations alternate, never two of a kind in a row, and once the last
            // restoration is in every channel receives again.
            try await client.send(["CLIENT", "KILL", "TYPE", "pubsub"])
            received.withLock { $0 = [:] }
            try await eventually(timeout: .seconds(15)) {
                guard link.withLock({ $0 }).count > 2, link.withLock({ $0 }).last == "restored" else { return false }
                for channel in channels where received.withLock({ $0[channel] == nil }) { try await client.send(["PUBLISH", channel, "again"]) }
                return received.withLock { $0 }.count == channels.count
            }
            let events = link.withLock { $0 }
            #expect(events.enumerated().allSatisfy { $0.element == ($0.offset % 2 == 0 ? "interrupted" : "restored") })
            group.cancelAll()
        }
        client.close()
        server.stop()
        try await loops.shutdownGracefully()
    }
}

func eventually(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met in time")
            return
        }
        try await Task.sleep(for: .milliseconds(20), clock: .suspending)
    }
}

/// A lock-protected value that closures can share.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

/// The fault proxy the fault suite relies on: a paused link answers nothing (commands time out,
/// and their outcome is unknown), a reset drops the connection, and both heal.
@Suite struct FaultProxyTests {
    @Test func pauseHoldsEveryByteAndResetDropsTheConnection() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        let proxy = FaultProxy(upstreamPort: server.port)
        try await proxy.start()
        var config = try RedisConfiguration(url: "redis://127.0.0.1:\(proxy.port)")
        config.commandTimeout = .milliseconds(500)
        let client = RedisCommandClient(configuration: config)
        let direct = RedisCommandClient(configuration: try RedisConfiguration(url: server.url))
        // The short timeout is for the paused link; on a loaded machine even the first command
        // (connect included) may exceed it, so that one is simply repeated until it lands.
        try await eventually(timeout: .seconds(20)) { (try? await client.send(["SET", "k", "1"]))?.string == "OK" }
        proxy.pause()
        try await Task.sleep(for: .milliseconds(100), clock: .suspending)
        await #expect(throws: RedisError.timeout) { try await client.send(["SET", "k", "2"]) }
        // More commands while paused, each timing out (a timed-out connection is closed, so
        // these go out on new connections, held by the proxy too). They write the same value:
        // held on different connections, they reach Redis in no particular order on resume.
        for _ in 0..<3 {
            _ = try? await client.send(["SET", "k", "2"])
            try await Task.sleep(for: .milliseconds(200), clock: .suspending)
        }
        #expect(try await direct.send(["GET", "k"]).string == "1")
        proxy.resume()
        // What was sent before the client gave up still arrives when the link heals: a timed-out
        // command may have been applied.
        try await eventually(timeout: .seconds(30)) { (try? await direct.send(["GET", "k"]))?.string == "2" }
        try await eventually(timeout: .seconds(30)) { (try? await client.send(["PING"]))?.string == "PONG" }
        proxy.reset()
        try await eventually(timeout: .seconds(30)) { (try? await client.send(["GET", "k"])) != nil }
        client.close()
        direct.close()
        proxy.stop()
        server.stop()
    }
    /// A TCP stream never reorders bytes, so neither may the proxy: chunks read while the link
    /// was delayed still arrive before those read after the delay was lowered. (It once
    /// forwarded the later ones at once, so pub/sub messages reached a node out of order and a
    /// fault test blamed the node for the one it then dropped as already delivered.)
    @Test func loweringTheDelayKeepsEachStreamInOrder() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        let proxy = FaultProxy(upstreamPort: server.port)
        try await proxy.start()
        var config = try RedisConfiguration(url: "redis://127.0.0.1:\(proxy.port)")
        config.commandTimeout = .seconds(30)
        let client = RedisCommandClient(configuration: config)
        #expect(try await client.send(["PING"]).string == "PONG")
        proxy.delay(milliseconds: 400)
        // Replies are matched to commands in order: a reordered stream gives a command another
        // command's answer.
        let answers = try await withThrowingTaskGroup(of: (String, String?).self) { group in
            for i in 0..<20 { group.addTask { ("early-\(i)", try await client.send(["ECHO", "early-\(i)"]).string) } }
            try await Task.sleep(for: .milliseconds(100), clock: .suspending)
            proxy.delay(milliseconds: 0)
            for i in 0..<20 { group.addTask { ("late-\(i)", try await client.send(["ECHO", "late-\(i)"]).string) } }
            var answers: [(String, String?)] = []
            for try await answer in group { answers.append(answer) }
            return answers
        }
        #expect(answers.count == 40)
        for (sent, answer) in answers { #expect(answer == sent) }
        client.close()
        proxy.stop()
        server.stop()
    }
}
