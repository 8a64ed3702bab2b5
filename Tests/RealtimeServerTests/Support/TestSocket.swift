import Foundation
import Logging
import NIOCore
import NIOWebSocket
import RealtimeCore
import Synchronization
import Testing
import WSClient
import WSCompression

/// A real WebSocket client over a real socket, with received frames decoded for assertions.
final class TestSocket: Sendable {
    private struct Inbox {
        var frames: [JSONValue] = []
        var ended = false
        var closeCode: Int?
        var upgraded = false
    }

    private let inbox = Mutex(Inbox())
    private let outgoing: AsyncStream<Outgoing>.Continuation
    /// While set, the client stops reading from its socket (a slow consumer, seen from the server).
    private let paused = Atomic<Bool>(false)

    enum Outgoing: Sendable {
        case text(String)
        case binary(ByteBuffer)
        case close
    }

    private init(outgoing: AsyncStream<Outgoing>.Continuation) {
        self.outgoing = outgoing
    }

    static func connect(_ url: String, compression: Bool = false) async throws -> TestSocket {
        let (outStream, outCont) = AsyncStream<Outgoing>.makeStream()
        let socket = TestSocket(outgoing: outCont)
        var logger = Logger(label: "test-ws")
        logger.logLevel = .critical
        let config = WebSocketClientConfiguration(maxFrameSize: 1 << 24, extensions: compression ? [.perMessageDeflate()] : [])
        Task {
            let close = try? await WebSocketClient.connect(url: url, configuration: config, logger: logger) { inbound, outbound, _ in
                socket.inbox.withLock { $0.upgraded = true }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await item in outStream {
                            switch item {
                            case .text(let s): try await outbound.write(.text(s))
                            case .binary(let b): try await outbound.write(.binary(b))
                            case .close:
                                try await outbound.close(.normalClosure, reason: nil)
                                return
                            }
                        }
                    }
                    var iterator = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                    while true {
                        while socket.paused.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(10), clock: .suspending) }
                        guard let message = try await iterator.next() else { break }
                        if case .text(let text) = message {
                            // RealtimeCore's parser: JSONDecoder probes types by throwing, and Swift Testing
                            // captures a backtrace per throw, which made floods of frames starve other tests.
                            let value = JSONParser.parse(Array(text.utf8)) ?? .string(text)
                            socket.inbox.withLock { $0.frames.append(value) }
                        }
                    }
                    group.cancelAll()
                }
            }
            socket.inbox.withLock {
                $0.ended = true
                $0.closeCode = close.map { Int($0.closeCode.rawCode) }
            }
        }
        return socket
    }

    /// Whether the WebSocket handshake completed.
    var isUpgraded: Bool { inbox.withLock { $0.upgraded } }

    /// Whether the connection has ended, read or not.
    var isClosed: Bool { inbox.withLock { $0.ended } }

    /// Whether the connection has ended (and every frame it received was read).
    var hasEnded: Bool { inbox.withLock { $0.ended && $0.frames.isEmpty } }

    func pause() { paused.store(true, ordering: .relaxed) }
    func resume() { paused.store(false, ordering: .relaxed) }

    func send(_ text: String) { outgoing.yield(.text(text)) }
    func sendBinary(_ bytes: [UInt8]) { outgoing.yield(.binary(ByteBuffer(bytes: bytes))) }
    func close() { outgoing.yield(.close) }

    struct Timeout: Error, CustomStringConvertible {
        var what: String
        var description: String { "timed out waiting for \(what)" }
    }

    /// The next frame, or throws after `timeout` or when the connection has ended.
    func next(timeout: Duration = .seconds(30)) async throws -> JSONValue {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (frame, ended, code) = inbox.withLock { i -> (JSONValue?, Bool, Int?) in
                i.frames.isEmpty ? (nil, i.ended, i.closeCode) : (i.frames.removeFirst(), false, nil)
            }
            if let frame { return frame }
            if ended { throw Timeout(what: "a frame (connection closed, code \(code.map(String.init) ?? "none"))") }
            guard ContinuousClock.now < deadline else {
                throw Timeout(what: "a frame (upgraded: \(inbox.withLock { $0.upgraded }))")
            }
            try await Task.sleep(for: .milliseconds(2), clock: .suspending)
        }
    }

    /// The next frame of a type, skipping the others.
    @discardableResult
    func next(type: String, timeout: Duration = .seconds(30)) async throws -> JSONValue {
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw Timeout(what: "a '\(type)' frame") }
            let frame = try await next(timeout: remaining)
            if frame["type"].string == type { return frame }
        }
    }

    /// Frames until none arrives for `quiet`.
    func drain(quiet: Duration = .milliseconds(300)) async -> [JSONValue] {
        var frames: [JSONValue] = []
        while let f = try? await next(timeout: quiet) { frames.append(f) }
        return frames
    }

    /// The close code the server sent, once the connection has ended (reading resumes).
    func closeCode(timeout: Duration = .seconds(30)) async throws -> Int? {
        resume()
        let deadline = ContinuousClock.now + timeout
        while true {
            let (ended, code) = inbox.withLock { ($0.ended, $0.closeCode) }
            if ended { return code }
            guard ContinuousClock.now < deadline else { throw Timeout(what: "the connection to close") }
            try await Task.sleep(for: .milliseconds(5), clock: .suspending)
        }
    }

    /// Sends an op and returns the reply with the same ref (skipping pushes).
    func call(_ op: String, ref: String = UUID().uuidString, _ fields: String = "") async throws -> JSONValue {
        send(#"{"op":"\#(op)","ref":"\#(ref)"\#(fields.isEmpty ? "" : "," + fields)}"#)
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let frame = try await next(timeout: deadline - ContinuousClock.now)
            if frame["ref"].string == ref { return frame }
        }
    }
}

extension WebSocketErrorCode {
    var rawCode: UInt16 {
        var buffer = ByteBuffer()
        buffer.write(webSocketErrorCode: self)
        return buffer.readInteger(as: UInt16.self) ?? 0
    }
}
