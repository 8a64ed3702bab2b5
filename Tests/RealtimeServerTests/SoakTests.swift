import Foundation
import RealtimeCore
import RealtimeTestSupport
import Testing

/// 10,000 random and mutated REST bodies and WebSocket frames against one live node: every
/// answer is a contract reply or a contract error, and the node serves throughout.
@Suite struct SoakTests {
    static let restSeeds = [
        #"{"channel":"soak","event":"e","data":{"a":[1,2,{"b":null}],"s":"é"},"idempotency_key":"k1"}"#,
        #"{"messages":[{"channel":"soak","event":"e","data":1},{"channel":"soak:2","event":"x","data":"y"}]}"#,
    ]
    static let frameSeeds = [
        #"{"op":"publish","ref":"r","channel":"soak","event":"e","data":{"n":1}}"#,
        #"{"op":"subscribe","ref":"s","channel":"soak:x","since_id":"0-0"}"#,
        #"{"op":"history","ref":"h","channel":"soak","limit":5,"direction":"forwards"}"#,
        #"{"op":"presence.enter","ref":"p","channel":"soak","data":{"m":1}}"#,
    ]
    static let contractCodes: Set<Int> = [40000, 40010, 40100, 40140, 40141, 40300, 40310, 40400, 40900, 41300, 42900]

    @Test func malformedInputGetsContractErrorsAndTheNodeKeepsServing() async throws {
        try await TestNode.with({ $0.limits.connectionPublishRate = 100_000 }) { node in
            var rng = SeededGenerator(seed: 42)
            // REST: 5,000 bodies, 8 at a time.
            let bodies = (0..<5000).map { i -> [UInt8] in
                let seed = Array(Self.restSeeds[i % Self.restSeeds.count].utf8)
                return i % 10 == 0 ? Self.random(&rng) : Self.mutate(seed, times: 1 + i % 4, &rng)
            }
            let paths = ["/v1/realtime/publish", "/v1/realtime/publish/batch"]
            for start in stride(from: 0, to: bodies.count, by: 8) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in start..<min(start + 8, bodies.count) {
                        let body = String(decoding: bodies[i], as: UTF8.self)
                        group.addTask {
                            let r = try await node.rest(.POST, paths[i % 2], body)
                            let ok = [200, 201].contains(r.status)
                                || (r.json["error"]["code"].int.map { Self.contractCodes.contains($0) && $0 / 100 == r.status } ?? false)
                            #expect(ok, "\(body.prefix(60)) -> \(r.status) \(r.json)")
                        }
                    }
                    try await group.waitForAll()
                }
            }
            // WebSocket: 5,000 frames on one connection; each gets exactly one reply.
            let socket = try await node.connect(try await node.token())
            var sent = 0
            for i in 0..<5000 {
                let seed = Array(Self.frameSeeds[i % Self.frameSeeds.count].utf8)
                let frame = i % 10 == 0 ? Self.random(&rng) : Self.mutate(seed, times: 1 + i % 3, &rng)
                guard let text = String(validating: frame, as: UTF8.self) else { continue }  // text frames carry UTF-8
                socket.send(text)
                sent += 1
                if sent % 100 == 0 { try await drainReplies(socket) }
            }
            try await drainReplies(socket)
            #expect(try await socket.call("ping")["type"].string == "pong")
            #expect(try await node.publish("after-soak").status == 201)
        }
    }

    /// Reads until quiet; every frame is a reply, a push or a contract error.
    func drainReplies(_ socket: TestSocket) async throws {
        for frame in await socket.drain(quiet: .milliseconds(150)) {
            let type = frame["type"].string ?? ""
            if type == "error" {
                #expect(Self.contractCodes.contains(frame["code"].int ?? 0), "\(frame)")
            } else {
                #expect(["ack", "subscribed", "unsubscribed", "history", "presence", "message", "presence_event", "pong"].contains(type), "\(frame)")
            }
        }
    }

    static func random(_ rng: inout SeededGenerator) -> [UInt8] {
        (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    static func mutate(_ seed: [UInt8], times: Int, _ rng: inout SeededGenerator) -> [UInt8] {
        var d = seed
        let tokens: [UInt8] = Array(",:[]{}\"\\0123456789e-+.tnf ".utf8) + [0x00, 0x01, 0x7F, 0xC3, 0xFF]
        for _ in 0..<times {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0 where !d.isEmpty: d.remove(at: Int.random(in: 0..<d.count, using: &rng))
            case 1: d.insert(tokens.randomElement(using: &rng)!, at: Int.random(in: 0...d.count, using: &rng))
            case 2 where d.count > 4:
                let a = Int.random(in: 0..<(d.count - 1), using: &rng)
                d.insert(contentsOf: d[a..<min(d.count, a + 8)], at: Int.random(in: 0...d.count, using: &rng))
            default: if !d.isEmpty { d[Int.random(in: 0..<d.count, using: &rng)] = tokens.randomElement(using: &rng)! }
            }
        }
        return d
    }
}
