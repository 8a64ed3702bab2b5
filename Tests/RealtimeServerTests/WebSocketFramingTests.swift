@testable import RealtimeServer
import NIOCore
import RealtimeCore
import Testing

/// RFC 6455 framing as the gateway's own WebSocket handler implements it: control frames,
/// fragmentation, protocol violations, the close handshake and permessage-deflate negotiation.
@Suite struct WebSocketFramingTests {
    @Test func pingsAreAnsweredAndFragmentedMessagesAreAssembled() async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token()))
            #expect(try await peer.firstText()?.contains("\"connected\"") == true)
            try await peer.sendFrame(opcode: 0x9, payload: Array("are you there".utf8))
            #expect(try await peer.frame(opcode: 0xA) == Array("are you there".utf8))
            // One op in three frames, with a ping between the fragments (allowed by RFC 6455).
            let op = Array(#"{"op":"ping","ref":"fragmented"}"#.utf8)
            try await peer.sendFrame(opcode: 0x1, fin: false, payload: Array(op[0..<10]))
            try await peer.sendFrame(opcode: 0x0, fin: false, payload: Array(op[10..<20]))
            try await peer.sendFrame(opcode: 0x9, payload: [1, 2, 3])
            try await peer.sendFrame(opcode: 0x0, fin: true, payload: Array(op[20...]))
            try await node.eventually("the fragmented op is answered") {
                RawPeer.parse(peer.received.bytes.withLock { $0 }).texts.contains { $0.contains("\"ref\":\"fragmented\"") }
            }
            try await peer.close()
        }
    }

    @Test(arguments: [
        ("reserved bit without an extension", UInt8(0x1), true, UInt8(0b010)),
        ("continuation without a message", UInt8(0x0), true, UInt8(0)),
        ("unknown opcode", UInt8(0x3), true, UInt8(0)),
    ])
    func protocolViolationsCloseWith1002AndTheNodeKeepsServing(_ what: String, opcode: UInt8, fin: Bool, rsv: UInt8) async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token()))
            #expect(try await peer.firstText()?.contains("\"connected\"") == true)
            try await peer.sendFrame(opcode: opcode, fin: fin, rsv: rsv, payload: Array(#"{"op":"ping"}"#.utf8))
            let end = try await peer.framesUntilClose()
            #expect(end.closeCode == 1002, "\(what): got \(end), stream ended: \(peer.isClosed), \(peer.received.bytes.withLock { $0.count }) bytes")
            let fine = try await node.connect(try await node.token())
            #expect(try await fine.call("ping")["type"].string == "pong")
        }
    }

    @Test func aNewMessageInsideAFragmentedOneIsAProtocolError() async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token()))
            #expect(try await peer.firstText()?.contains("\"connected\"") == true)
            try await peer.sendFrame(opcode: 0x1, fin: false, payload: Array(#"{"op":"#.utf8))
            try await peer.sendFrame(opcode: 0x1, fin: true, payload: Array(#"{"op":"ping"}"#.utf8))
            #expect(try await peer.framesUntilClose().closeCode == 1002)
        }
    }

    @Test func aClientsCloseIsAnsweredAndItsMembersLeave() async throws {
        try await TestNode.with { node in
            let watcher = try await node.connect(try await node.token(client: "w"))
            _ = try await watcher.call("subscribe", #""channel":"room""#)
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token(client: "leaver")))
            try await peer.sendText(#"{"op":"presence.enter","channel":"room"}"#)
            #expect(try await watcher.next(type: "presence_event")["action"].string == "enter")
            try await peer.sendFrame(opcode: 0x8, payload: [0x0F, 0xA0] + Array("bye".utf8))  // 4000
            #expect(try await peer.framesUntilClose().closeCode == 1000)
            #expect(try await watcher.next(type: "presence_event")["action"].string == "leave")
            // A close code no peer may send (1005 is reserved for "no code") is answered with 1002.
            let rude = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token()))
            try await rude.sendFrame(opcode: 0x8, payload: [0x03, 0xED])
            #expect(try await rude.framesUntilClose().closeCode == 1002)
        }
    }

    @Test func aBurstOfOpsIsAnsweredInOrderThroughReadPauses() async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token()))
            #expect(try await peer.firstText()?.contains("\"connected\"") == true)
            // In one write: reads deliver far more than the 16 waiting messages at which the
            // connection stops reading, so it must resume reading as the ops are answered.
            try await peer.sendTexts((0..<2000).map { #"{"op":"ping","ref":\#($0)}"# })
            try await node.eventually("2000 pongs") {
                RawPeer.parse(peer.received.bytes.withLock { $0 }).texts.filter { $0.contains("pong") }.count == 2000
            }
            let refs = RawPeer.parse(peer.received.bytes.withLock { $0 }).texts.compactMap { JSONParser.parse(Array($0.utf8))?["ref"].int }
            #expect(refs == Array(0..<2000))
            try await peer.close()
        }
    }

    /// A browser's upgrade request with cookies arrives in several reads, each a read of its own
    /// (one per readiness event) while the HTTP decoder holds the first. Ops sent in the same
    /// write as the request are all answered, in order, and the connection reads on.
    @Test func aLongUpgradeRequestWithOpsBehindItInOneWriteIsAnsweredInFull() async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: nil)
            var bytes = ByteBuffer(
                string: "GET /v1/realtime/ws?token=\(try await node.token()) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    + "Cookie: session=\(String(repeating: "c", count: 6000))\r\n\r\n")
            var frames = RawPeer.textFrames((0..<500).map { #"{"op":"ping","ref":\#($0)}"# })
            bytes.writeBuffer(&frames)
            try await peer.sendRaw(Array(bytes.readableBytesView))
            try await node.eventually("500 pongs") {
                RawPeer.parse(peer.received.bytes.withLock { $0 }).texts.filter { $0.contains("pong") }.count == 500
            }
            let texts = RawPeer.parse(peer.received.bytes.withLock { $0 }).texts
            #expect(texts.first?.contains("\"connected\"") == true)
            #expect(texts.compactMap { JSONParser.parse(Array($0.utf8))?["ref"].int } == Array(0..<500))
            try await peer.sendTexts([#"{"op":"ping","ref":"after"}"#])
            try await node.eventually("the later op is answered") {
                RawPeer.parse(peer.received.bytes.withLock { $0 }).texts.contains { $0.contains("\"ref\":\"after\"") }
            }
            try await peer.close()
        }
    }

    @Test func compressedDataThatDoesNotInflateClosesWith1007() async throws {
        try await TestNode.with { node in
            let path = "/v1/realtime/ws?token=" + (try await node.token())
            let peer = try await RawPeer.connect(port: node.port, path: path, extensions: "permessage-deflate")
            #expect(try await peer.firstText()?.contains("\"connected\"") == true)
            #expect(String(decoding: peer.received.bytes.withLock { $0 }, as: UTF8.self).lowercased().contains("sec-websocket-extensions: permessage-deflate"))
            // A deflate block of the reserved type 3.
            try await peer.sendFrame(opcode: 0x1, rsv: 0b100, payload: [0xFF, 0xFF, 0xFF, 0xFF])
            #expect(try await peer.framesUntilClose().closeCode == 1007)
        }
    }

    @Test func aCompressedMessageOverTheLimitClosesWith4009() async throws {
        try await TestNode.with({ $0.limits.maxMessageBytes = 1024 }) { node in
            let socket = try await node.connect(try await node.token(), compression: true)
            #expect(try await socket.call("ping")["type"].string == "pong")
            // Inflates to 200 KB; compressed it is a few hundred bytes.
            socket.send(String(repeating: "x", count: 200_000))
            #expect(try await socket.closeCode() == 4009)
        }
    }

    @Test func aPlainGetOnTheWebSocketPathIsABadRequest() async throws {
        try await TestNode.with { node in
            let reply = try await node.rest(.GET, "/v1/realtime/ws")
            #expect(reply.status == 400 && reply.json["error"]["code"].int == 40000)
        }
    }

    @Test func permessageDeflateOffersAreAnsweredOrDeclined() {
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; client_max_window_bits"]) == "permessage-deflate")
        #expect(
            PerMessageDeflate.negotiate(["permessage-deflate; server_no_context_takeover; server_max_window_bits=10"])
                == "permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
        #expect(PerMessageDeflate.negotiate(["x-webkit-deflate-frame"]) == nil)
        #expect(PerMessageDeflate.negotiate([]) == nil)
        // An offer with an unknown or invalid parameter is declined; the next acceptable one wins.
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; mystery=1, permessage-deflate; client_no_context_takeover"])
            == "permessage-deflate; client_no_context_takeover")
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; server_max_window_bits=20"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; server_no_context_takeover; server_no_context_takeover"]) == nil)
        // Malformed offers (found by the deflate fuzz target: an empty parameter trapped) are declined.
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; ;"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate;  ; client_no_context_takeover"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; =15"]) == nil)
    }

    /// A message inflates to at most its budget: exactly the budget is accepted, one byte more
    /// is refused (the deflate fuzz target found one byte past the budget let through). The
    /// payload is one stored deflate block, so its inflated size is exact.
    @Test func inflationStopsAtTheBudgetToTheByte() throws {
        func stored(_ count: Int) -> ByteBuffer {
            let length = UInt16(count)
            var block = ByteBuffer(bytes: [0x00, UInt8(length & 0xFF), UInt8(length >> 8), UInt8(~length & 0xFF), UInt8(~length >> 8)])
            block.writeBytes(Array(repeating: UInt8(ascii: "x"), count: count))
            return block
        }
        let exact = try PerMessageDeflate.Inflater().inflate(stored(4096), final: true, budget: 4096)
        #expect(exact.readableBytes == 4096)
        #expect(throws: PerMessageDeflate.Inflater.Failure.tooLarge) {
            try PerMessageDeflate.Inflater().inflate(stored(4097), final: true, budget: 4096)
        }
        #expect(throws: PerMessageDeflate.Inflater.Failure.tooLarge) {
            try PerMessageDeflate.Inflater().inflate(stored(20_000), final: true, budget: 4096)
        }
    }

    /// A handshake whose extension offer is malformed gets an uncompressed connection, and the
    /// node goes on serving.
    @Test func aMalformedExtensionOfferIsDeclinedNotFatal() async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws", extensions: "permessage-deflate; ;")
            let received = { String(decoding: peer.received.bytes.withLock { $0 }, as: UTF8.self) }
            try await node.eventually("the upgrade answer") { received().contains("\r\n\r\n") }
            let head = received()
            #expect(head.hasPrefix("HTTP/1.1 101"))
            #expect(!head.lowercased().contains("sec-websocket-extensions"))
            try await peer.close()
            #expect(try await node.rest(.GET, "/healthz", key: "").status == 200)
        }
    }
}
