// libFuzzer targets on the node's real input paths, built as a SwiftPM product with the
// sanitizers (see fuzz/run.sh; the package adds this target only when REALTIME_FUZZ is set).
// One binary; REALTIME_FUZZ_TARGET picks the target:
//   frame   - a WebSocket text message as an op: decoding (fast path against Foundation's),
//             the ref recovered from a broken frame, and each field's validation;
//   rest    - REST request bodies (first byte picks the body) and their validation;
//   deflate - the WebSocket frame decoder with permessage-deflate inflation under a budget,
//             and the extension offer parser;
//   token   - token verification: raw strings, and arbitrary claims signed with the node's key
//             (so the fuzzer gets past the signature to the claim checks).
// Each checks more than "no crash": what the contract promises of the accepted output.

import CFuzzEntry
import Crypto
import Dispatch
import Foundation
import NIOCore
import NIOEmbedded
import NIOWebSocket
@testable import RealtimeCore
@testable import RealtimeServer

private let target = ProcessInfo.processInfo.environment["REALTIME_FUZZ_TARGET"] ?? "frame"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    switch target {
    case "frame": FrameTarget.run(bytes)
    case "rest": RESTTarget.run(bytes)
    case "deflate": DeflateTarget.run(bytes)
    case "token": TokenTarget.run(bytes)
    default: fatalError("unknown REALTIME_FUZZ_TARGET '\(target)'")
    }
    return 0
}

// MARK: frame

enum FrameTarget {
    static func run(_ bytes: [UInt8]) {
        let fast = JSONParser.parse(bytes).flatMap(ClientFrame.init(json:))
        let decoded: ClientFrame
        do {
            decoded = try RequestDecoding.decode(ClientFrame.self, from: bytes)
        } catch {
            // Refused: the error must carry a contract code, and the ref comes back when the
            // frame is an object with a string ref.
            precondition(error.code == 40000 || error.code == 41300, "unexpected code \(error.code)")
            precondition(fast == nil, "the fast path accepted what the decoder refused")
            _ = WebSocketSession.ref(in: bytes)
            return
        }
        if let fast {
            // Both readings of one frame agree field by field.
            let slow = try? RequestDecoding.decodeWithFoundation(ClientFrame.self, from: bytes)
            if let slow { precondition(same(fast, slow), "fast and Foundation decoding differ") }
        }
        validate(decoded)
    }

    static func same(_ a: ClientFrame, _ b: ClientFrame) -> Bool {
        a.op == b.op && a.channel == b.channel && a.sinceID == b.sinceID && a.event == b.event
            && a.idempotencyKey == b.idempotencyKey && a.limit == b.limit && a.direction == b.direction && a.token == b.token
            && (a.ref ?? .null) == (b.ref ?? .null)
    }

    /// What the session does with each field before any engine call.
    static func validate(_ frame: ClientFrame) {
        if let raw = frame.channel, let name = try? ChannelName(validating: raw) {
            precondition(!name.rawValue.isEmpty && name.rawValue.utf8.count <= 255)
        }
        if let raw = frame.sinceID, let id = MessageID(raw) {
            precondition(MessageID(id.description) == id, "a message id does not round-trip")
        }
        if let query = try? HistoryParameters.query(limit: frame.limit, direction: frame.direction, sinceID: frame.sinceID, untilID: nil, maxLimit: 1000) {
            precondition((1...1000).contains(query.limit))
        }
        if let data = frame.data {
            precondition(JSONParser.isValid(Array(data.jsonText.utf8)), "stored data text is not valid JSON")
        }
    }
}

// MARK: rest

enum RESTTarget {
    static func run(_ input: [UInt8]) {
        guard let selector = input.first else { return }
        let body = Array(input.dropFirst())
        switch selector % 5 {
        case 0:
            guard let request = try? RequestDecoding.decode(RESTController.TokenRequest.self, from: body) else { return }
            var caps = Capabilities()
            for pattern in request.channels ?? [] {
                if let p = try? ChannelPattern(parsing: pattern) { caps.grant([.subscribe, .presence, .history], on: p) }
            }
            if let wire = request.capabilities, let parsed = try? Capabilities(wire: wire) {
                caps = caps.merging(parsed)
                // What a token carries parses back to the same grants.
                precondition((try? Capabilities(wire: caps.wire))?.wire == caps.wire, "capabilities do not round-trip")
            }
        case 1:
            guard let request = try? RequestDecoding.decode(RESTController.ChannelRequest.self, from: body) else { return }
            _ = try? ChannelName(validating: request.name)
            _ = request.type.flatMap(ChannelType.init(rawValue:))
        case 2:
            guard let request = try? RequestDecoding.decode(PublishEndpoint.PublishBody.self, from: body) else { return }
            if let data = request.data { precondition(JSONParser.isValid(Array(data.jsonText.utf8))) }
            _ = try? ChannelName(validating: request.channel)
        case 3:
            guard let batch = try? RequestDecoding.decode(PublishEndpoint.BatchBody.self, from: body) else { return }
            for (index, item) in batch.messages.enumerated() {
                do {
                    _ = try PublishEndpoint.batchItem(item, index: index)
                } catch {
                    precondition(error.code == 40000, "a batch item failed with \(error.code)")
                }
            }
        default:
            guard let request = try? RequestDecoding.decode(RESTController.KeyRequest.self, from: body) else { return }
            _ = request.scopes.map(APIScope.init(rawValue:))
            if let text = String(bytes: body, encoding: .utf8) { _ = Cursor.decode(text) }
        }
    }
}

// MARK: deflate

enum DeflateTarget {
    static let budget = 1 << 16

    static func run(_ input: [UInt8]) {
        guard let mode = input.first else { return }
        let rest = Array(input.dropFirst())
        switch mode % 3 {
        case 0:
            // Raw bytes from the socket, through NIO's frame decoder, each compressed frame
            // inflated as the connection does.
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: budget)))
            defer { _ = try? channel.finish() }
            guard (try? channel.writeInbound(ByteBuffer(bytes: rest))) != nil else { return }
            guard let inflater = try? PerMessageDeflate.Inflater() else { return }
            var assembled = 0
            while let frame = try? channel.readInbound(as: WebSocketFrame.self) {
                guard frame.rsv1 else { continue }
                guard let out = try? inflater.inflate(frame.unmaskedData, final: frame.fin, budget: budget - assembled) else { return }
                assembled += out.readableBytes
                precondition(assembled <= budget, "inflated past the budget")
                if frame.fin { assembled = 0 }
            }
        case 1:
            // A compressed message body as it would arrive in one final frame.
            guard let inflater = try? PerMessageDeflate.Inflater() else { return }
            if let out = try? inflater.inflate(ByteBuffer(bytes: rest), final: true, budget: 4096) {
                precondition(out.readableBytes <= 4096, "inflated past the budget")
            }
        default:
            // The Sec-WebSocket-Extensions offer.
            let header = String(decoding: rest, as: UTF8.self)
            if let answer = PerMessageDeflate.negotiate([header]) {
                precondition(answer.hasPrefix(PerMessageDeflate.name))
                precondition(PerMessageDeflate.negotiate([answer]) != nil, "our answer is not an acceptable offer")
            }
        }
    }
}

// MARK: token

enum TokenTarget {
    static let secret = "fuzz-token-secret-0123456789abcdef0123"
    static let clock = ManualClock(milliseconds: 1_800_000_000_000)
    static let authority: TokenAuthority = blocking {
        await TokenAuthority(secrets: [TokenSecret(id: "f1", secret: secret)], clock: clock)
    }

    static func run(_ input: [UInt8]) {
        guard let mode = input.first else { return }
        let rest = Array(input.dropFirst())
        let token: String
        switch mode % 3 {
        case 0:
            token = String(decoding: rest, as: UTF8.self)
        case 1:
            // Any claims, signed: the fuzzer reaches the claim checks behind the signature.
            token = sign(header: Array(#"{"alg":"HS256","typ":"JWT","kid":"f1"}"#.utf8), payload: rest)
        default:
            let parts = rest.split(separator: 0x0A, maxSplits: 1, omittingEmptySubsequences: false)
            token = sign(header: Array(parts[0]), payload: parts.count > 1 ? Array(parts[1]) : [])
        }
        let result: Result<TokenClaims, RealtimeError> = blocking {
            do { return .success(try await authority.verify(token)) } catch {
                return .failure(error as? RealtimeError ?? .internal("\(error)"))
            }
        }
        switch result {
        case .success(let claims):
            let now = clock.nowMilliseconds() / 1000
            precondition(claims.expiresAt > now && claims.expiresAt <= TokenAuthority.latestSeconds, "accepted an expiry out of range")
            precondition(!claims.clientID.isEmpty, "accepted an empty sub")
        case .failure(let error):
            precondition(error.code == 40141 || error.code == 40140, "token refused with \(error.code)")
        }
    }

    static func sign(header: [UInt8], payload: [UInt8]) -> String {
        let input = base64URL(header) + "." + base64URL(payload)
        let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return input + "." + base64URL(Array(mac))
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// Runs async work to completion from libFuzzer's (non-cooperative) thread.
private final class Box<T>: @unchecked Sendable { var value: T? }

private func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = Box<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value!
}
