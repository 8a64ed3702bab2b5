import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import RealtimeCore
import Testing
@testable import RealtimeServer

/// The connection handler and its session on a `NIOAsyncTestingChannel`, with NIO's frame
/// encoder below them as on a real socket: what a client sends in, and the exact bytes the node
/// writes back (server frames are unmasked: FIN + opcode, a one-byte length under 126, the
/// payload). The loop's time is virtual, so timers fire when a test moves it, not after sleeps.
@Suite struct WebSocketConnectionTests {
    /// A node's runtime (memory engine, services not started) and one accepted connection.
    struct Harness {
        let channel: NIOAsyncTestingChannel
        let runtime: GatewayRuntime

        static func make(token: Bool = true, _ adjust: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> Harness {
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let gateway = try await Gateway(configuration: TestNode.configuration(adjust), logger: logger)
            let runtime = gateway.runtime
            let channel = NIOAsyncTestingChannel()
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
            try await channel.pipeline.addHandler(WebSocketFrameEncoder()).get()
            var jwt: String?
            if token {
                let now = runtime.clock.nowMilliseconds() / 1000
                jwt = try await runtime.tokens.mint(TokenClaims(
                    clientID: "alice", userID: nil, capabilities: try Capabilities(wire: ["*": ["*"]]),
                    issuedAt: now, expiresAt: now + 3600, tokenID: "tok_1", keyID: nil))
            }
            try await channel.testingEventLoop.executeInContext { [jwt] in
                try WebSocketController(runtime: runtime).accept(channel: channel, token: jwt, compressed: false)
            }
            return Harness(channel: channel, runtime: runtime)
        }

        /// The bytes of the next whole frame the node writes (the encoder writes a frame's
        /// header and payload as separate buffers), waiting, bounded, for the session's task.
        func written(timeout: Duration = .seconds(10)) async throws -> [UInt8] {
            let deadline = ContinuousClock.now + timeout
            var bytes: [UInt8] = []
            while ContinuousClock.now < deadline {
                if let buffer = try await channel.readOutbound(as: ByteBuffer.self) {
                    bytes += buffer.readableBytesView
                    if let length = WebSocketConnectionTests.frameLength(bytes), bytes.count >= length { return bytes }
                    continue
                }
                try await Task.sleep(for: .milliseconds(2), clock: .suspending)
            }
            Issue.record("no whole frame written within \(timeout): \(bytes)")
            return bytes
        }

        func send(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true, maskKey: WebSocketMaskingKey? = [1, 2, 3, 4]) async throws {
            var data = ByteBuffer(bytes: payload)
            if let maskKey { data.webSocketMask(maskKey) }
            try await channel.writeInbound(WebSocketFrame(fin: fin, opcode: opcode, maskKey: maskKey, data: data))
        }

        func sendText(_ text: String) async throws { try await send(.text, Array(text.utf8)) }
    }

    /// An unmasked server frame: `[FIN|opcode, length] + payload` (payloads here are under 126 bytes).
    static func frame(_ opcode: UInt8, _ payload: [UInt8]) -> [UInt8] {
        precondition(payload.count < 126)
        return [0x80 | opcode, UInt8(payload.count)] + payload
    }

    /// The length of an unmasked server frame starting at `bytes`, once its header is there.
    static func frameLength(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        switch bytes[1] & 0x7F {
        case 126: return bytes.count >= 4 ? 4 + (Int(bytes[2]) << 8 | Int(bytes[3])) : nil
        case 127: return nil
        case let n: return 2 + Int(n)
        }
    }

    static func text(_ bytes: [UInt8]) -> JSONValue? {
        guard bytes.count >= 2, bytes[0] == 0x81 else { return nil }
        var offset = 2
        var length = Int(bytes[1])
        if length == 126 {
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            offset = 4
        }
        guard bytes.count == offset + length else { return nil }
        return JSONParser.parse(Array(bytes[offset...]))
    }

    @Test func aQueryTokenGetsConnectedAsTheFirstFrameAndAnOpIsAnsweredInExactBytes() async throws {
        let h = try await Harness.make()
        let connected = Self.text(try await h.written())
        #expect(connected?["type"] == .string("connected"))
        #expect(connected?["client_id"] == .string("alice"))
        try await h.sendText(#"{"op":"ping","ref":"r1"}"#)
        #expect(try await h.written() == Self.frame(0x1, Array(#"{"type":"pong","ref":"r1"}"#.utf8)))
    }

    @Test func aControlPingIsAnsweredWithItsPayload() async throws {
        let h = try await Harness.make()
        _ = try await h.written()
        try await h.send(.ping, [7, 8, 9])
        #expect(try await h.written() == Self.frame(0xA, [7, 8, 9]))
    }

    @Test func aFragmentedMessageIsAssembledBeforeItIsHandled() async throws {
        let h = try await Harness.make()
        _ = try await h.written()
        try await h.send(.text, Array(#"{"op":"ping","#.utf8), fin: false)
        try await h.send(.continuation, Array(#""ref":"frag"}"#.utf8))
        #expect(try await h.written() == Self.frame(0x1, Array(#"{"type":"pong","ref":"frag"}"#.utf8)))
    }

    @Test func aBinaryFrameIsRefusedWith40000AndTheConnectionStaysOpen() async throws {
        let h = try await Harness.make()
        _ = try await h.written()
        try await h.send(.binary, Array(#"{"op":"ping","ref":"b"}"#.utf8))
        let error = Self.text(try await h.written())
        #expect(error?["type"] == .string("error") && error?["code"] == .integer(40000))
        try await h.sendText(#"{"op":"ping","ref":"after"}"#)
        #expect(try await h.written() == Self.frame(0x1, Array(#"{"type":"pong","ref":"after"}"#.utf8)))
    }

    @Test func aPeerCloseIsAnsweredWith1000AndTheSocketClosed() async throws {
        let h = try await Harness.make()
        _ = try await h.written()
        try await h.send(.connectionClose, [0x03, 0xE8])
        #expect(try await h.written() == Self.frame(0x8, [0x03, 0xE8]))
        try await eventually("socket closed") { !h.channel.isActive }
    }

    @Test func aCloseWithACodeNoPeerMaySendIsAnsweredWith1002() async throws {
        let h = try await Harness.make()
        _ = try await h.written()
        try await h.send(.connectionClose, [0x03, 0xED])  // 1005 may not be sent
        #expect(try await h.written() == Self.frame(0x8, [0x03, 0xEA]))
    }

    @Test func anOpBeforeAuthenticationGets40100ThenClose4001() async throws {
        let h = try await Harness.make(token: false)
        try await h.sendText(#"{"op":"ping","ref":"early"}"#)
        let error = Self.text(try await h.written())
        #expect(error?["code"] == .integer(40100) && error?["ref"] == .string("early"))
        #expect(try await h.written() == Self.frame(0x8, [0x0F, 0xA1] + Array("not authenticated".utf8)))
    }

    @Test func aReservedBitFailsTheConnectionWith1002() async throws {
        let h = try await Harness.make()
        _ = try await h.written()
        var data = ByteBuffer(bytes: Array("{}".utf8))
        data.webSocketMask([1, 2, 3, 4])
        try await h.channel.writeInbound(WebSocketFrame(fin: true, rsv2: true, opcode: .text, maskKey: [1, 2, 3, 4], data: data))
        #expect(try await h.written() == Self.frame(0x8, [0x03, 0xEA] + Array("reserved bit set".utf8)))
        try await eventually("socket closed without waiting for an answer") { !h.channel.isActive }
    }

    @Test func anUnmaskedFrameFailsTheConnectionWith1002() async throws {
        let h = try await Harness.make()
        _ = try await h.written()
        try await h.channel.writeInbound(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: Array(#"{"op":"ping"}"#.utf8))))
        #expect(try await h.written() == Self.frame(0x8, [0x03, 0xEA] + Array("client frames must be masked".utf8)))
        try await eventually("socket closed without waiting for an answer") { !h.channel.isActive }
    }

    @Test func aMissedPongClosesWith1001AtTheNextHeartbeat() async throws {
        let h = try await Harness.make { $0.timing.heartbeatSeconds = 30 }
        _ = try await h.written()
        // The heartbeat timer is set on the real clock; the loop's virtual time jumps past it.
        let beat = NIODeadline.now() + .seconds(31)
        await h.channel.testingEventLoop.advanceTime(to: beat)
        let ping = try await h.written()
        #expect(Array(ping.prefix(2)) == [0x89, 8], "a ping with an 8-byte payload")
        await h.channel.testingEventLoop.advanceTime(to: beat + .seconds(31))
        #expect(try await h.written() == Self.frame(0x8, [0x03, 0xE9] + Array("ping timeout".utf8)))
        try await eventually("socket closed") { !h.channel.isActive }
    }
}
