import NIOCore
import NIOEmbedded
import Testing
@testable import RedisClient

/// The Redis channel handler on an `EmbeddedChannel`: the exact bytes it writes, how replies
/// meet their requests, and what a timeout or a drop means for each request in flight.
@Suite struct RedisChannelHandlerTests {
    final class Wire {
        let loop = EmbeddedEventLoop()
        let channel: EmbeddedChannel
        let handler: RedisChannelHandler
        let pushes = Locked<[String]>([])

        init(timeout: TimeAmount = .seconds(1)) throws {
            let pushes = self.pushes
            handler = RedisChannelHandler(commandTimeout: timeout) { channel, payload in
                pushes.withLock { $0.append(String(buffer: channel) + "=" + String(buffer: payload)) }
            }
            channel = EmbeddedChannel(handler: handler, loop: loop)
            try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 6379)).wait()
        }

        /// Sends a command; the returned box holds its outcome once there is one (never waits:
        /// an embedded loop's future that is not complete would block forever).
        func send(_ args: [String]) -> Locked<Result<RESPValue, any Error>?> {
            var bytes = ByteBuffer()
            RESPEncoder.encode(args.map { ByteBuffer(string: $0) }, into: &bytes)
            let promise = loop.makePromise(of: RESPValue.self)
            let outcome = Locked<Result<RESPValue, any Error>?>(nil)
            promise.futureResult.whenComplete { result in outcome.withLock { $0 = result } }
            handler.send(RedisRequest(bytes: bytes, promise: promise))
            return outcome
        }

        /// Everything written and flushed so far, as one string.
        func written() throws -> String {
            loop.run()
            var out = ""
            while let b = try channel.readOutbound(as: ByteBuffer.self) { out += String(buffer: b) }
            return out
        }
    }

    @Test func pipelinedCommandsLeaveInOneFlushAndRepliesMatchInOrder() throws {
        let wire = try Wire()
        let first = wire.send(["SET", "k", "v"])
        let second = wire.send(["GET", "k"])
        #expect(try wire.written() == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        // Replies split anywhere still complete their requests in order.
        try wire.channel.writeInbound(ByteBuffer(string: "+OK\r\n$1\r"))
        #expect(try first.withLock { $0 }?.get() == .simpleString("OK"))
        try wire.channel.writeInbound(ByteBuffer(string: "\nv\r\n"))
        #expect(try second.withLock { $0 }?.get().string == "v")
    }

    @Test func pubSubMessagesGoToThePushHandlerNotToRequests() throws {
        let wire = try Wire()
        let subscribe = wire.send(["SUBSCRIBE", "rt:{a}"])
        _ = try wire.written()
        try wire.channel.writeInbound(ByteBuffer(string: "*3\r\n$9\r\nsubscribe\r\n$6\r\nrt:{a}\r\n:1\r\n"))
        #expect(try subscribe.withLock { $0 }?.get().array?.count == 3)
        try wire.channel.writeInbound(ByteBuffer(string: "*3\r\n$7\r\nmessage\r\n$6\r\nrt:{a}\r\n$2\r\nhi\r\n"))
        #expect(wire.pushes.withLock { $0 } == ["rt:{a}=hi"])
    }

    /// A command not answered in time fails as `timeout` (it may have run); everything sent
    /// behind it fails as `connectionLost` (also may have run), and the connection closes. A
    /// command sent on a closed connection fails as `connection` (it was not sent).
    @Test func aTimeoutFailsTheRequestsInFlightAsUnknownAndClosesTheConnection() async throws {
        let wire = try Wire(timeout: .milliseconds(10))
        let first = wire.send(["INCR", "n"])
        let second = wire.send(["INCR", "n"])
        _ = try wire.written()
        // The deadline is on the real clock; the check runs on the loop's (embedded) timer.
        try await Task.sleep(for: .milliseconds(50), clock: .suspending)
        wire.loop.advanceTime(by: .seconds(1))
        func error(_ box: Locked<Result<RESPValue, any Error>?>) -> RedisError? {
            if case .failure(let e)? = box.withLock({ $0 }) { return e as? RedisError }
            return nil
        }
        #expect(error(first) == .timeout)
        #expect(error(second).map { if case .connectionLost = $0 { true } else { false } } == true)
        #expect(!wire.channel.isActive)
        let late = wire.send(["PING"])
        wire.loop.run()
        #expect(error(late).map { if case .connection = $0 { true } else { false } } == true)
    }

    @Test func aReplyWithoutARequestIsAProtocolErrorThatClosesTheConnection() throws {
        let wire = try Wire()
        try? wire.channel.writeInbound(ByteBuffer(string: "+OK\r\n"))
        #expect(!wire.channel.isActive)
    }
}
