import NIOCore
import NIOEmbedded
import NIOHTTP1
import RealtimeTestSupport
import Testing
@testable import RealtimeServer

/// The node upgrades a request to a WebSocket only when NIO's HTTP parser (llhttp) also took
/// it for an upgrade and so stopped parsing after it: otherwise the parser reads on into the
/// next pipelined request and the upgrade hands those parsed parts to the WebSocket decoder,
/// which traps (a remote crash). Differential, without I/O: generated `Connection` headers go
/// through NIO's own request decoder, with a second request behind them.
@Suite struct UpgradeDecisionTests {
    /// What NIO's decoder makes of `head` with another request behind it in the same bytes:
    /// the first request's head (nil when it did not parse) and whether the decoder stopped
    /// after the first request.
    static func decode(_ head: String) -> (head: HTTPRequestHead?, stopped: Bool) {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try! channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        let parsed = (try? channel.writeInbound(ByteBuffer(string: head + "GET /second HTTP/1.1\r\nHost: x\r\n\r\n"))) != nil
        var heads: [HTTPRequestHead] = []
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
            if case .head(let h) = part { heads.append(h) }
        }
        return (heads.first, parsed ? heads.count == 1 : true)
    }

    static func request(connection lines: [String]) -> String {
        "GET /v1/realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" + lines.map { $0 + "\r\n" }.joined()
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    }

    @Test func whatBrowsersSendIsAnUpgrade() {
        for value in ["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade, keep-alive"] {
            let (head, stopped) = Self.decode(Self.request(connection: ["Connection: \(value)"]))
            #expect(stopped, "\(value)")
            #expect(head.map { GatewayServerChannel.asksForUpgrade($0.headers) } == true, "\(value)")
        }
    }

    @Test func theNodeUpgradesOnlyWhatTheParserStoppedAt() {
        var random = SeededGenerator(seed: 0x5EED_1E55)
        let tokens = ["upgrade", "Upgrade", "UPGRADE", "uPgRaDe", "keep-alive", "close", "x", "upgradex", "xupgrade", "up grade", "Upgrade;q=1", "upgrad", "upgrade\u{0B}", "upgrade\u{C}", "UPGRADE\u{85}"]
        let separators = [",", ", ", " ,", " , ", ",,", ",\t", "\t,"]
        let pads = ["", "", " ", "  ", "\t", " \t", "\t ", "\t\t", " \t "]
        let names = ["Connection", "connection", "CONNECTION", "Connection ", "Co_nection"]
        var upgraded = 0
        for _ in 0..<6000 {
            var lines: [String] = []
            for _ in 0..<Int.random(in: 0...2, using: &random) {
                var value = pads.randomElement(using: &random)!
                for i in 0..<Int.random(in: 1...3, using: &random) {
                    if i > 0 { value += separators.randomElement(using: &random)! }
                    value += tokens.randomElement(using: &random)!
                }
                value += pads.randomElement(using: &random)!
                lines.append(names.randomElement(using: &random)! + ":" + value)
            }
            let (head, stopped) = Self.decode(Self.request(connection: lines))
            guard let head, GatewayServerChannel.asksForUpgrade(head.headers) else { continue }
            upgraded += 1
            #expect(stopped, "upgraded although the parser read on: \(lines)")
        }
        // The generator is worth its name only if it makes upgrades too.
        #expect(upgraded > 400)
    }
}
