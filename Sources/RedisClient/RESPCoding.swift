import CHiredis
import NIOCore

/// Command encoding: a RESP array of bulk strings (`*<n>\r\n` then `$<len>\r\n<bytes>\r\n` per
/// argument), written straight into the buffer that goes on the wire, with no copy of the
/// arguments in between (a test reads random commands back with hiredis' reply reader).
public enum RESPEncoder {
    /// Appends the RESP encoding of a command (an array of bulk strings) to `buffer`.
    public static func encode(_ arguments: [ByteBuffer], into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: arguments.reduce(16) { $0 + $1.readableBytes + 16 })
        beginCommand(count: arguments.count, into: &buffer)
        for argument in arguments { append(argument, into: &buffer) }
    }

    /// Appends the encoding of a command whose arguments are text.
    public static func encode(_ arguments: [String], into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: arguments.reduce(16) { $0 + $1.utf8.count + 16 })
        beginCommand(count: arguments.count, into: &buffer)
        for argument in arguments { append(argument, into: &buffer) }
    }

    public static func encode(_ arguments: [String]) -> ByteBuffer {
        var buffer = ByteBuffer()
        encode(arguments, into: &buffer)
        return buffer
    }

    /// Starts a command of `count` arguments; exactly `count` `append` calls must follow.
    public static func beginCommand(count: Int, into buffer: inout ByteBuffer) {
        writeHeader(UInt8(ascii: "*"), count, into: &buffer)
    }

    /// Appends one argument (a bulk string).
    public static func append(_ argument: String, into buffer: inout ByteBuffer) {
        writeHeader(UInt8(ascii: "$"), argument.utf8.count, into: &buffer)
        buffer.writeString(argument)
        buffer.writeInteger(crlf)
    }

    public static func append(_ argument: ByteBuffer, into buffer: inout ByteBuffer) {
        writeHeader(UInt8(ascii: "$"), argument.readableBytes, into: &buffer)
        buffer.writeImmutableBuffer(argument)
        buffer.writeInteger(crlf)
    }

    /// `\r\n` as one big-endian integer write.
    private static let crlf: UInt16 = 0x0D0A

    /// `<marker><decimal count>\r\n`, the digits written in place (no `String` made).
    private static func writeHeader(_ marker: UInt8, _ count: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(marker)
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var value = UInt(max(count, 0))
        withUnsafeMutableBytes(of: &digits) { raw in
            var at = raw.count
            repeat {
                at -= 1
                raw[at] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            } while value > 0
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[at...]))
        }
        buffer.writeInteger(crlf)
    }
}

/// Incremental RESP decoding with hiredis' reply reader: feed bytes as they arrive, take
/// complete replies out. Not thread-safe; one per connection, used on its event loop.
public final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>

    public init() {
        reader = redisReaderCreate()
    }

    deinit { redisReaderFree(reader) }

    public func feed(_ buffer: ByteBuffer) throws(RedisError) {
        let status = buffer.withUnsafeReadableBytes { bytes -> Int32 in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return REDIS_OK }
            return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard status == REDIS_OK else { throw .protocolError(errorString) }
    }

    /// The next complete reply, or nil when more bytes are needed.
    public func next() throws(RedisError) -> RESPValue? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else { throw .protocolError(errorString) }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.convert(reply.assumingMemoryBound(to: redisReply.self))
    }

    private var errorString: String {
        withUnsafeBytes(of: reader.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulkString(ByteBuffer(bytes: UnsafeRawBufferPointer(start: r.str, count: Int(r.len))))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: UnsafeRawBufferPointer(start: r.str, count: Int(r.len)), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: r.str, count: Int(r.len)), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(r.integer)
        case REDIS_REPLY_ARRAY:
            var out: [RESPValue] = []
            out.reserveCapacity(Int(r.elements))
            for i in 0..<Int(r.elements) {
                if let element = r.element[i] { out.append(convert(element)) }
            }
            return .array(out)
        default:
            return .null
        }
    }
}
