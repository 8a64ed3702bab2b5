import CHiredis
import NIOCore

/// Command encoding with hiredis' `redisFormatCommandArgv`.
public enum RESPEncoder {
    /// Appends the RESP encoding of a command (an array of bulk strings) to `buffer`.
    public static func encode(_ arguments: [ByteBuffer], into buffer: inout ByteBuffer) {
        // One contiguous copy of all arguments; argv points into it.
        var joined: [UInt8] = []
        joined.reserveCapacity(arguments.reduce(1) { $0 + $1.readableBytes })
        var offsets: [Int] = []
        var lengths: [Int] = []
        for arg in arguments {
            offsets.append(joined.count)
            lengths.append(arg.readableBytes)
            joined.append(contentsOf: arg.readableBytesView)
        }
        joined.append(0)
        var target: UnsafeMutablePointer<CChar>?
        let written: Int32 = joined.withUnsafeBufferPointer { bytes in
            let base = UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self)
            var argv: [UnsafePointer<CChar>?] = offsets.map { base + $0 }
            return argv.withUnsafeMutableBufferPointer { argvBuffer in
                lengths.withUnsafeBufferPointer { argvlen in
                    redisFormatCommandArgv(&target, Int32(arguments.count), argvBuffer.baseAddress, argvlen.baseAddress)
                }
            }
        }
        guard written > 0, let target else { return }
        buffer.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(written)))
        redisFreeCommand(target)
    }

    public static func encode(_ arguments: [String]) -> ByteBuffer {
        var buffer = ByteBuffer()
        encode(arguments.map { ByteBuffer(string: $0) }, into: &buffer)
        return buffer
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
