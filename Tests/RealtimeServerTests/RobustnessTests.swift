import RealtimeCore
import Testing

/// Nothing a client sends may crash the node or lose other clients' traffic.
@Suite struct RobustnessTests {
    @Test func malformedFramesGetErrorsAndTheConnectionStaysOpen() async throws {
        try await TestNode.with { node in
            let socket = try await node.connect(try await node.token())
            let bad = [
                "not json at all", "{", "[]", "42", #"{"op":5}"#, #"{"op":"subscribe"}"#, #"{"op":"subscribe","channel":"bad name"}"#,
                #"{"op":"fly"}"#, #"{"op":"publish","channel":"c"}"#, #"{"op":"subscribe","channel":"c","since_id":"yesterday"}"#,
                #"{"op":"history","channel":"c","limit":100000}"#, #"{"op":"history","channel":"c","direction":"sideways"}"#,
                String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000),
                #"{"op":"publish","channel":"c","event":"e","data":"# + String(repeating: "{\"a\":", count: 100) + "1" + String(repeating: "}", count: 100) + "}",
            ]
            for text in bad {
                socket.send(text)
                let reply = try await socket.next()
                #expect(reply["type"].string == "error", "\(text.prefix(40)) -> \(reply)")
                #expect([40000, 40010].contains(reply["code"].int ?? 0), "\(text.prefix(40)) -> \(reply)")
            }
            var random = SystemRandomNumberGenerator()
            for _ in 0..<20 {
                socket.sendBinary((0..<Int.random(in: 1...512, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
                #expect(try await socket.next()["type"].string == "error")
            }
            #expect(try await socket.call("ping")["type"].string == "pong")
        }
    }

    @Test func oversizedFramesCloseWith4009AndTheNodeKeepsServing() async throws {
        try await TestNode.with({ $0.limits.maxMessageBytes = 1024 }) { node in
            let other = try await node.connect(try await node.token(client: "other"))
            _ = try await other.call("subscribe", #""channel":"still""#)
            let socket = try await node.connect(try await node.token())
            let tooBig = try await socket.call("publish", #""channel":"c","event":"e","data":"\#(String(repeating: "x", count: 2000))""#)
            #expect(tooBig["code"].int == 41300)
            socket.send(String(repeating: "x", count: 200_000))
            #expect(try await socket.closeCode() == 4009)
            try await node.publish("still", data: "1")
            #expect(try await other.next(type: "message")["data"].int == 1)
            let fresh = try await node.connect(try await node.token(client: "fresh"))
            #expect(try await fresh.call("ping")["type"].string == "pong")
        }
    }

    @Test func opsBeforeAuthenticationCloseWith4001() async throws {
        try await TestNode.with { node in
            let socket = try await TestSocket.connect(node.wsURL)
            socket.send(#"{"op":"subscribe","channel":"c"}"#)
            #expect(try await socket.next()["code"].int == 40100)
            #expect(try await socket.closeCode() == 4001)
        }
    }

    @Test func manyConnectionsComingAndGoingLeaveNoSubscribersBehind() async throws {
        try await TestNode.with { node in
            let token = try await node.token()
            for round in 0..<5 {
                var sockets: [TestSocket] = []
                for _ in 0..<20 {
                    let s = try await node.connect(token)
                    _ = try await s.call("subscribe", #""channel":"churn""#)
                    _ = try await s.call("presence.enter", #""channel":"churn""#)
                    sockets.append(s)
                }
                try await node.eventually("20 subscribers counted in round \(round)") {
                    try await node.rest(.GET, "/v1/realtime/channels/churn").json["subscribers"].int == 20
                }
                for s in sockets { s.close() }
                var last = JSONValue.null
                do {
                    try await node.eventually("all gone") {
                        last = try await node.rest(.GET, "/v1/realtime/channels/churn").json
                        return last["subscribers"].int == 0 && last["presence_members"].int == 0
                    }
                } catch {
                    let ended = sockets.filter(\.isClosed).count
                    Issue.record("round \(round): \(last); \(ended) of 20 client connections ended")
                    throw error
                }
            }
        }
    }
}
