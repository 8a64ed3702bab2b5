import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// How a subscriber talks to the server under test.
enum WireProtocol: String, Codable {
    /// This project's protocol: `connected`, then `subscribe`, then `message` pushes.
    case realtime
    /// A plain WebSocket whose every text frame is one message (Nchan).
    case raw
}

/// What a subscriber worker process is asked to do.
struct SubscriberConfig: Codable {
    var wire: WireProtocol
    /// `ws://host:port/path?query`; `{channel}` is replaced by the connection's channel (raw mode).
    var url: String
    var channels: [String]
    /// This worker's connections are global indexes `offset ..< offset + count`; index i
    /// subscribes `channels[i % channels.count]`.
    var offset: Int
    var count: Int
    /// Connections are spread over source addresses 127.0.0.2 ... 127.0.0.(1+sources).
    var sources: Int = 50
    var connectConcurrency: Int = 256
    var threads: Int = 1
    /// PEM CA to trust for `wss://` (nil: the system's roots).
    var tlsCAFile: String?
    /// Bytes of `Cookie` header added to each upgrade request (a browser's carries cookies).
    var upgradeCookieBytes = 0
    /// Bytes of an extra field in each `subscribe` op (realtime mode): a client that once sent
    /// a large message.
    var subscribePaddingBytes = 0
}

/// Parsed `ws://host:port/path?query` (or `wss://`, `http://`, `https://`).
struct WSURL {
    var host: String
    var port: Int
    var path: String
    var tls = false

    init?(_ text: String) {
        var rest = Substring(text)
        if rest.hasPrefix("ws://") {
            rest = rest.dropFirst(5)
        } else if rest.hasPrefix("http://") {
            rest = rest.dropFirst(7)
        } else if rest.hasPrefix("wss://") || rest.hasPrefix("https://") {
            rest = rest.dropFirst(rest.hasPrefix("wss://") ? 6 : 8)
            tls = true
        } else {
            return nil
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        path = slash == rest.endIndex ? "/" : String(rest[slash...])
        if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]) else { return nil }
            port = p
        } else {
            host = String(authority)
            port = tls ? 443 : 80
        }
    }

    /// A client TLS context for this URL (nil for plain), trusting `caFile` when given.
    func tlsContext(caFile: String?) throws -> NIOSSLContext? {
        guard tls else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let caFile { configuration.trustRoots = .file(caFile) }
        return try NIOSSLContext(configuration: configuration)
    }

    /// The TLS handler for a new connection: SNI only for names, never for addresses.
    func tlsHandler(_ context: NIOSSLContext) throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: context, serverHostname: host.contains(where: \.isLetter) ? host : nil)
    }
}

/// One subscriber connection. Mutated only on its event loop.
final class SubscriberConnection: @unchecked Sendable {
    let index: Int
    let channelName: String
    let loop: any EventLoop
    let stats: LoopStats
    var channel: (any Channel)?
    var lastID: String?
    var resumeFrom: String?
    var received = 0
    var target = Int.max
    var resumedFalse = false
    var ready: EventLoopPromise<Void>?
    var caughtUp: EventLoopPromise<Void>?

    init(index: Int, channelName: String, loop: any EventLoop, stats: LoopStats) {
        self.index = index
        self.channelName = channelName
        self.loop = loop
        self.stats = stats
    }
}

/// Sends the upgrade request once connected, then leaves the pipeline.
private final class UpgradeRequester: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let host: String
    let uri: String
    let cookieBytes: Int

    init(host: String, uri: String, cookieBytes: Int) {
        self.host = host
        self.uri = uri
        self.cookieBytes = cookieBytes
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        if cookieBytes > 0 { headers.add(name: "Cookie", value: "session=" + String(repeating: "c", count: max(1, cookieBytes - 16))) }
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }
}

/// Reads frames: counts messages, measures latency from the payload's `"t":` (monotonic ns).
private final class SubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    let conn: SubscriberConnection
    let wire: WireProtocol

    let padding: Int

    init(conn: SubscriberConnection, wire: WireProtocol, padding: Int) {
        self.conn = conn
        self.wire = wire
        self.padding = padding
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if wire == .raw { conn.ready?.succeed() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        case .text, .binary:
            handle(frame.unmaskedData, context: context)
        default:
            break
        }
    }

    private static let messagePrefix = Array(#"{"type":"message""#.utf8)
    private static let connectedPrefix = Array(#"{"type":"connected""#.utf8)
    private static let subscribedPrefix = Array(#"{"type":"subscribed""#.utf8)
    private static let errorPrefix = Array(#"{"type":"error""#.utf8)

    private func handle(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        buffer.withUnsafeReadableBytes { bytes in
            if wire == .raw || bytes.starts(with: Self.messagePrefix) {
                delivered(bytes)
            } else if bytes.starts(with: Self.connectedPrefix) {
                var op = #"{"op":"subscribe","ref":1,"channel":""# + conn.channelName + "\""
                if let since = conn.resumeFrom { op += #","since_id":""# + since + "\"" }
                if padding > 0 { op += #","padding":""# + String(repeating: "p", count: padding) + "\"" }
                op += "}"
                let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: op))
                context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
            } else if bytes.starts(with: Self.subscribedPrefix) {
                if Self.find(Array(#""resumed":false"#.utf8), in: bytes) != nil, conn.resumeFrom != nil { conn.resumedFalse = true }
                conn.ready?.succeed()
            } else if bytes.starts(with: Self.errorPrefix) {
                conn.stats.errors += 1
                progress("subscriber \(conn.index): \(String(decoding: bytes, as: UTF8.self))")
            }
        }
    }

    private func delivered(_ bytes: UnsafeRawBufferPointer) {
        let now = monotonicNanos()
        conn.stats.received += 1
        if let t = Self.number(after: Self.tKey, in: bytes), now > t {
            _ = conn.stats.latency.record(max((now - t) / 1000, 1))
        }
        if wire == .realtime, let at = Self.find(Self.idKey, in: bytes) {
            var end = at + Self.idKey.count
            while end < bytes.count, bytes[end] != UInt8(ascii: "\"") { end += 1 }
            conn.lastID = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(at + Self.idKey.count)..<end]), as: UTF8.self)
        }
        conn.received += 1
        if conn.received >= conn.target { conn.caughtUp?.succeed() }
    }

    private static let tKey = Array(#""t":"#.utf8)
    private static let idKey = Array(#""id":""#.utf8)

    static func find(_ needle: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        var i = 0
        let last = bytes.count - needle.count
        outer: while i <= last {
            if bytes[i] == needle[0] {
                for j in 1..<needle.count where bytes[i + j] != needle[j] {
                    i += 1
                    continue outer
                }
                return i
            }
            i += 1
        }
        return nil
    }

    static func number(after key: [UInt8], in bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard var i = find(key, in: bytes) else { return nil }
        i += key.count
        var value: UInt64 = 0
        var digits = 0
        while i < bytes.count, bytes[i] >= 48, bytes[i] <= 57 {
            value = value &* 10 &+ UInt64(bytes[i] - 48)
            digits += 1
            i += 1
        }
        return digits > 0 ? value : nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Many subscriber connections multiplexed on a few event loops.
final class SubscriberPool: @unchecked Sendable {
    let config: SubscriberConfig
    let group: MultiThreadedEventLoopGroup
    let connections: [SubscriberConnection]
    let loopStats: [(any EventLoop, LoopStats)]
    let server: SocketAddress
    let target: WSURL
    /// One TLS context for every connection of the pool (`wss://`).
    let tls: NIOSSLContext?

    init(config: SubscriberConfig) throws {
        self.config = config
        guard let url = WSURL(config.url) else { throw BenchError("bad WebSocket URL \(config.url)") }
        target = url
        tls = try url.tlsContext(caFile: config.tlsCAFile)
        server = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, config.threads))
        let loops = Array(group.makeIterator())
        let stats = loops.map { ($0, LoopStats()) }
        loopStats = stats
        connections = (0..<config.count).map { i in
            let global = config.offset + i
            let (loop, s) = stats[i % stats.count]
            return SubscriberConnection(index: global, channelName: config.channels[global % config.channels.count], loop: loop, stats: s)
        }
    }

    /// Opens (or reopens) every connection, at most `connectConcurrency` at a time.
    func connectAll() async -> (connected: Int, failed: Int) {
        var connected = 0
        var failed = 0
        await withTaskGroup(of: Bool.self) { group in
            var next = 0
            func start() {
                let conn = connections[next]
                next += 1
                group.addTask { (try? await self.connect(conn).get()) != nil }
            }
            while next < min(config.connectConcurrency, connections.count) { start() }
            while let ok = await group.next() {
                if ok { connected += 1 } else { failed += 1 }
                if next < connections.count { start() }
            }
        }
        return (connected, failed)
    }

    private func connect(_ conn: SubscriberConnection) -> EventLoopFuture<Void> {
        let loop = conn.loop
        return loop.flatSubmit {
            let promise = loop.makePromise(of: Void.self)
            conn.ready = promise
            let uri = self.target.path.replacingOccurrences(of: "{channel}", with: conn.channelName)
            let source = try! SocketAddress(ipAddress: "127.0.0.\(2 + conn.index % max(1, self.config.sources))", port: 0)
            let host = "\(self.target.host):\(self.target.port)"
            let wire = self.config.wire
            let tls = self.tls
            let target = self.target
            let cookieBytes = self.config.upgradeCookieBytes
            let padding = self.config.subscribePaddingBytes
            let timeout = loop.scheduleTask(in: .seconds(30)) { promise.fail(BenchError("connect timeout")) }
            ClientBootstrap(group: loop)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(to: source)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls { try channel.pipeline.syncOperations.addHandler(try target.tlsHandler(tls)) }
                        let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 20, automaticErrorHandling: false) { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(SubscriberHandler(conn: conn, wire: wire, padding: padding))
                            }
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers(
                            leftOverBytesStrategy: .forwardBytes,
                            withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                        )
                        try channel.pipeline.syncOperations.addHandler(UpgradeRequester(host: host, uri: uri, cookieBytes: cookieBytes))
                    }
                }
                .connect(to: self.server)
                .whenComplete { result in
                    switch result {
                    case .success(let channel):
                        conn.channel = channel
                        channel.closeFuture.whenComplete { _ in promise.fail(BenchError("closed before ready")) }
                    case .failure(let error):
                        promise.fail(error)
                    }
                }
            return promise.futureResult.always { _ in timeout.cancel() }
        }
    }

    /// Sums and resets every loop's counters.
    func report() async -> WorkerReport {
        var total = WorkerReport()
        var histogram = makeHistogram()
        for (loop, stats) in loopStats {
            guard let r = try? await loop.submit({ stats.take() }).get() else { continue }
            total.received += r.received
            total.errors += r.errors
            histogram.add(pairs: r.latency)
        }
        total.latency = histogram.pairs
        return total
    }

    /// Closes every connection from the client side and waits until they are gone.
    func dropAll() async {
        for conn in connections {
            let closed = try? await conn.loop.submit { () -> EventLoopFuture<Void>? in
                guard let ch = conn.channel else { return nil }
                conn.channel = nil
                return ch.close().recover { _ in }
            }.get()
            if let closed { try? await closed.get() }
        }
    }

    /// Reconnects every connection resuming from its last id; returns once each has received
    /// `expected` messages (or after `timeout`).
    func reconnectAll(expected: Int, timeout: TimeAmount) async -> WorkerReport {
        let start = monotonicNanos()
        var report = WorkerReport()
        let waits = await withTaskGroup(of: EventLoopFuture<Void>?.self) { group -> [EventLoopFuture<Void>] in
            for conn in connections {
                group.addTask {
                    try? await conn.loop.submit { () -> EventLoopFuture<Void> in
                        conn.resumeFrom = conn.lastID
                        conn.received = 0
                        conn.target = expected
                        conn.resumedFalse = false
                        let p = conn.loop.makePromise(of: Void.self)
                        conn.caughtUp = p
                        let t = conn.loop.scheduleTask(in: timeout) { p.fail(BenchError("not caught up")) }
                        return p.futureResult.always { _ in t.cancel() }
                    }.get()
                }
            }
            var out: [EventLoopFuture<Void>] = []
            for await f in group { if let f { out.append(f) } }
            return out
        }
        let (connected, failed) = await connectAll()
        report.connected = connected
        report.failed = failed
        for w in waits { if (try? await w.get()) != nil { report.caughtUp += 1 } }
        report.elapsedMilliseconds = Double(monotonicNanos() - start) / 1_000_000
        for conn in connections { if (try? await conn.loop.submit({ conn.resumedFalse }).get()) == true { report.resumedFalse += 1 } }
        return report
    }

    func shutdown() {
        try? group.syncShutdownGracefully()
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
