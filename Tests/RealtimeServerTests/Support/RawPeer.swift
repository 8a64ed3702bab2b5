import NIOCore
import NIOPosix
import Synchronization

/// A bare TCP WebSocket peer: it performs the handshake, can send masked text frames, records
/// the raw bytes it receives and parses the server's (unmasked) frames. It never answers pings
/// or sends a close frame, so it also stands for a client that vanished.
struct RawPeer {
    let channel: any Channel
    let received: Collector

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex<[UInt8]>([])
        let closed = Atomic<Bool>(false)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            bytes.withLock { $0 += buffer.readableBytesView }
        }
        func channelInactive(context: ChannelHandlerContext) { closed.store(true, ordering: .relaxed) }
    }

    /// Opens the connection and sends the upgrade request (offering `extensions`, if any),
    /// without waiting for the answer.
    /// - Parameter reading: false for a peer that never reads what the server sends.
    static func connect(port: Int, path: String?, extensions: String? = nil, reading: Bool = true) async throws -> RawPeer {
        let collector = Collector()
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).channelOption(.autoRead, value: reading)
        // A peer that never reads gets a small receive buffer, so the server's writes back up
        // soon. (A reading peer keeps the kernel's default: SO_RCVBUF 0 means the minimum, about
        // 2 KiB, which held pipelined answers back by delayed window updates, 200 ms a step.)
        if !reading { bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: 4096) }
        let channel = try await bootstrap
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) } }
            .connect(host: "127.0.0.1", port: port).get()
        guard let path else { return RawPeer(channel: channel, received: collector) }  // a plain TCP connection
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + (extensions.map { "Sec-WebSocket-Extensions: \($0)\r\n" } ?? "") + "\r\n"
        try await channel.writeAndFlush(ByteBuffer(string: request)).get()
        return RawPeer(channel: channel, received: collector)
    }

    func sendText(_ text: String) async throws { try await sendTexts([text]) }

    func sendRaw(_ bytes: [UInt8]) async throws { try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get() }

    var isClosed: Bool { received.closed.load(ordering: .relaxed) }

    /// Ends this side's output (a half-close: the peer reads on).
    func closeOutput() async throws { try await channel.close(mode: .output).get() }

    /// HTTP responses received so far on a plain connection (status lines counted).
    var answers: Int {
        let text = String(decoding: received.bytes.withLock { $0 }, as: UTF8.self)
        return text.components(separatedBy: "HTTP/1.1 ").count - 1
    }

    /// Sends text frames in one write, so they reach the server together.
    func sendTexts(_ texts: [String]) async throws { try await channel.writeAndFlush(Self.textFrames(texts)).get() }

    /// Masked (with a zero key) text frames of under 126 bytes each, back to back.
    static func textFrames(_ texts: [String]) -> ByteBuffer {
        var frames = ByteBuffer()
        for text in texts {
            let payload = Array(text.utf8)
            precondition(payload.count < 126)
            frames.writeInteger(UInt8(0x81))
            frames.writeInteger(UInt8(0x80 | payload.count))
            frames.writeBytes([0, 0, 0, 0])  // a zero mask leaves the payload as is
            frames.writeBytes(payload)
        }
        return frames
    }

    /// Sends one frame, masked with a non-zero key as a browser would.
    func sendFrame(opcode: UInt8, fin: Bool = true, rsv: UInt8 = 0, payload: [UInt8]) async throws {
        precondition(payload.count < 126)
        let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        var frame = ByteBuffer()
        frame.writeInteger((fin ? 0x80 : 0) | (rsv << 4) | opcode)
        frame.writeInteger(UInt8(0x80 | payload.count))
        frame.writeBytes(mask)
        frame.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset & 3] })
        try await channel.writeAndFlush(frame).get()
    }

    func close() async throws { try? await channel.close().get() }

    /// Waits (up to `timeout`) for a server frame with `opcode`; returns its payload.
    func frame(opcode: UInt8, timeout: Duration = .seconds(30)) async throws -> [UInt8]? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let found = Self.frames(received.bytes.withLock { $0 }).first(where: { $0.opcode == opcode }) { return found.payload }
            try await Task.sleep(for: .milliseconds(5), clock: .suspending)
        }
        return nil
    }

    /// What the server sent after the handshake: text frames and the close code, once the server
    /// has sent a close frame (waits up to `timeout`).
    func framesUntilClose(timeout: Duration = .seconds(30)) async throws -> (texts: [String], closeCode: Int?) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let parsed = Self.parse(received.bytes.withLock { $0 })
            if parsed.closeCode != nil || ContinuousClock.now >= deadline || received.closed.load(ordering: .relaxed) { return parsed }
            try await Task.sleep(for: .milliseconds(10), clock: .suspending)
        }
    }

    /// The first text frame the server sent (waits up to `timeout`).
    func firstText(timeout: Duration = .seconds(30)) async throws -> String? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let first = Self.parse(received.bytes.withLock { $0 }).texts.first { return first }
            try await Task.sleep(for: .milliseconds(5), clock: .suspending)
        }
        return nil
    }

    static func parse(_ bytes: [UInt8]) -> (texts: [String], closeCode: Int?) {
        var texts: [String] = []
        for frame in frames(bytes) {
            if frame.opcode == 1 { texts.append(String(decoding: frame.payload, as: UTF8.self)) }
            if frame.opcode == 8 {
                return (texts, frame.payload.count >= 2 ? Int(frame.payload[0]) << 8 | Int(frame.payload[1]) : 1005)
            }
        }
        return (texts, nil)
    }

    /// The complete server frames after the HTTP response head.
    static func frames(_ bytes: [UInt8]) -> [(opcode: UInt8, payload: [UInt8])] {
        guard let headEnd = (0..<max(bytes.count - 3, 0)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 && bytes[$0 + 2] == 13 && bytes[$0 + 3] == 10 }) else {
            return []
        }
        var i = headEnd + 4
        var frames: [(opcode: UInt8, payload: [UInt8])] = []
        while i + 2 <= bytes.count {
            let opcode = bytes[i] & 0x0F
            var length = Int(bytes[i + 1] & 0x7F)
            var offset = i + 2
            if length == 126 {
                guard offset + 2 <= bytes.count else { break }
                length = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
                offset += 2
            } else if length == 127 {
                guard offset + 8 <= bytes.count else { break }
                length = (0..<8).reduce(0) { $0 << 8 | Int(bytes[offset + $1]) }
                offset += 8
            }
            guard offset + length <= bytes.count else { break }
            frames.append((opcode, Array(bytes[offset..<(offset + length)])))
            i = offset + length
        }
        return frames
    }
}
