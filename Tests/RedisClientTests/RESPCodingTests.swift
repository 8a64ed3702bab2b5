import NIOCore
import RealtimeTestSupport
import RedisClient
import Testing

@Suite struct RESPEncoderTests {
    @Test func encodesCommandsAsArraysOfBulkStrings() {
        let bytes = RESPEncoder.encode(["SET", "key", "value"])
        #expect(String(buffer: bytes) == "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n")
    }

    @Test func encodesBinaryAndEmptyArgumentsByLength() {
        var out = ByteBuffer()
        RESPEncoder.encode([ByteBuffer(string: "ECHO"), ByteBuffer(bytes: [0, 13, 10, 255]), ByteBuffer()], into: &out)
        #expect(Array(out.readableBytesView) == Array("*3\r\n$4\r\nECHO\r\n$4\r\n".utf8) + [0, 13, 10, 255] + Array("\r\n$0\r\n\r\n".utf8))
    }

    /// What the encoder writes, hiredis' reader (the code that parses every reply) reads back
    /// as the same arguments, for commands of every shape: binary and text arguments, empty
    /// ones, lengths across digit boundaries, several commands back to back in one buffer.
    @Test func hiredisReadsBackWhatItWrites() throws {
        var random = SeededGenerator(seed: 15)
        let reader = RESPReader()
        for _ in 0..<200 {
            let count = Int.random(in: 1...14, using: &random)
            let arguments = (0..<count).map { _ -> [UInt8] in
                let length = [0, 1, 9, 10, 99, 100, 1000, Int.random(in: 0...2000, using: &random)].randomElement(using: &random)!
                return (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
            let text = arguments.map { String(decoding: $0.map { 32 + $0 % 90 }, as: UTF8.self) + "é" }
            var wire = ByteBuffer()
            RESPEncoder.encode(arguments.map { ByteBuffer(bytes: $0) }, into: &wire)
            RESPEncoder.encode(text, into: &wire)
            try reader.feed(wire)
            #expect(try reader.next() == .array(arguments.map { .bulkString(ByteBuffer(bytes: $0)) }))
            #expect(try reader.next() == .array(text.map { .bulkString(ByteBuffer(string: $0)) }))
            #expect(try reader.next() == nil)
        }
    }

    /// A command of text arguments built one argument at a time, as scripts are sent.
    @Test func buildsACommandArgumentByArgument() {
        var out = ByteBuffer()
        RESPEncoder.beginCommand(count: 3, into: &out)
        RESPEncoder.append("EVALSHA", into: &out)
        RESPEncoder.append("é", into: &out)
        RESPEncoder.append(ByteBuffer(string: "12345678901"), into: &out)
        #expect(String(buffer: out) == "*3\r\n$7\r\nEVALSHA\r\n$2\r\né\r\n$11\r\n12345678901\r\n")
    }
}

@Suite struct RESPReaderTests {
    @Test func decodesEveryReplyType() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "+OK\r\n-ERR bad\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n"))
        #expect(try reader.next() == .simpleString("OK"))
        #expect(try reader.next() == .error("ERR bad"))
        #expect(try reader.next() == .integer(42))
        #expect(try reader.next() == .bulkString(ByteBuffer(string: "hello")))
        #expect(try reader.next() == .null)
        #expect(try reader.next() == .array([.bulkString(ByteBuffer(string: "a")), .array([.integer(1)])]))
        #expect(try reader.next() == nil)
    }

    @Test func assemblesRepliesSplitAtEveryByte() throws {
        let wire = Array("*3\r\n$7\r\nmessage\r\n$4\r\nrt:x\r\n$12\r\nhello\r\nworld\r\n".utf8)
        let reader = RESPReader()
        var got: [RESPValue] = []
        for byte in wire {
            try reader.feed(ByteBuffer(bytes: [byte]))
            while let v = try reader.next() { got.append(v) }
        }
        #expect(got == [.array([.bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: "rt:x")), .bulkString(ByteBuffer(string: "hello\r\nworld"))])])
    }

    @Test func garbageIsAProtocolError() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "?what\r\n"))
        #expect(throws: RedisError.self) { try reader.next() }
    }
}

@Suite struct RedisConfigurationTests {
    @Test func parsesURLs() throws {
        let a = try RedisConfiguration(url: "redis://127.0.0.1:6380/2")
        #expect(a.host == "127.0.0.1" && a.port == 6380 && a.database == 2 && !a.tls && a.password == nil)
        let b = try RedisConfiguration(url: "rediss://user:s3cret@cache.example.com")
        #expect(b.host == "cache.example.com" && b.port == 6379 && b.tls && b.username == "user" && b.password == "s3cret")
        let c = try RedisConfiguration(url: "redis://:pw@localhost:7000")
        #expect(c.password == "pw" && c.username == nil && c.port == 7000)
        let d = try RedisConfiguration(url: "rediss://cache:6380/1?tls_ca_file=/etc/ca.pem")
        #expect(d.tls && d.tlsCAFile == "/etc/ca.pem" && d.database == 1 && d.port == 6380)
        for bad in ["http://x", "redis://", "redis://h:99999", "redis://h/db", "redis://h?what=1"] {
            #expect(throws: RedisError.self) { try RedisConfiguration(url: bad) }
        }
    }

    @Test func scriptsAreNamedBySHA1() {
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}
