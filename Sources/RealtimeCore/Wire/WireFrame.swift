import NIOCore

/// A server-to-client text message encoded once as a complete, unmasked WebSocket frame, so
/// the very same bytes are written to every subscriber's socket.
public struct WireFrame: Sendable {
    /// Header and payload, ready for the socket.
    public let bytes: ByteBuffer

    /// The JSON payload (a view into `bytes`).
    public var text: ByteBuffer {
        var b = bytes
        b.moveReaderIndex(forwardBy: Self.headerLength(forFrame: bytes))
        return b
    }

    public init(text: String) {
        let length = text.utf8.count
        var buffer = ByteBufferAllocator().buffer(capacity: length + 10)
        Self.writeHeader(payloadLength: length, into: &buffer)
        buffer.writeString(text)
        bytes = buffer
    }

    public init(text payload: ByteBuffer) {
        var buffer = ByteBufferAllocator().buffer(capacity: payload.readableBytes + 10)
        Self.writeHeader(payloadLength: payload.readableBytes, into: &buffer)
        buffer.writeImmutableBuffer(payload)
        bytes = buffer
    }

    /// FIN + text opcode, then the length in the shortest form RFC 6455 allows; no mask.
    static func writeHeader(payloadLength n: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(0x81))
        if n < 126 {
            buffer.writeInteger(UInt8(n))
        } else if n <= 0xFFFF {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(n))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(n))
        }
    }

    static func headerLength(forFrame bytes: ByteBuffer) -> Int {
        switch bytes.getInteger(at: bytes.readerIndex + 1, as: UInt8.self) ?? 0 {
        case 126: 4
        case 127: 10
        default: 2
        }
    }
}

/// Frames of one channel, in order, that one fan-out task writes to each of its sinks: their
/// bytes back to back in one buffer, so a sink that takes the run whole costs one write and one
/// `iovec` for all of them instead of one per frame.
public struct WireFrameRun: Sendable {
    public let frames: [WireFrame]
    /// Every frame's bytes back to back (the frame's own bytes when there is one and
    /// `ownCopy` is false).
    public let bytes: ByteBuffer

    /// `ownCopy`: always copy, so that the run's buffer is this loop's alone. A frame that
    /// several loops write is otherwise one buffer whose reference count every socket write on
    /// every loop changes: one cache line bounced between the cores at each of a message's
    /// thousands of writes, where a copy costs one allocation and a few hundred bytes per loop.
    public init(_ frames: [WireFrame], ownCopy: Bool = false) {
        self.frames = frames
        if frames.count == 1, !ownCopy {
            bytes = frames[0].bytes
            return
        }
        var buffer = ByteBufferAllocator().buffer(capacity: frames.reduce(0) { $0 + $1.bytes.readableBytes })
        for f in frames { buffer.writeImmutableBuffer(f.bytes) }
        bytes = buffer
    }
}
