import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// A minimal WebSocket client connection on SwiftNIO (ws:// and wss://): text frames in and
/// out, pings answered, the peer's close code reported.
final class WebSocketTransport: Sendable {
    enum Event: Sendable {
        case text(String)
        /// The connection ended; the close code the server sent, if any.
        case closed(code: UInt16?)
    }

    let events: AsyncStream<Event>
    private let channel: any Channel

    private init(channel: any Channel, events: AsyncStream<Event>) {
        self.channel = channel
        self.events = events
    }

    struct Endpoint {
        var tls: Bool
        var host: String
        var port: Int
        var path: String

        init(_ url: String) throws {
            var rest = Substring(url)
            if rest.hasPrefix("wss://") { tls = true; rest = rest.dropFirst(6) }
            else if rest.hasPrefix("ws://") { tls = false; rest = rest.dropFirst(5) }
            else { throw RealtimeClientError(code: 0, message: "not a ws:// or wss:// URL: \(url)") }
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = rest[..<slash]
            path = slash == rest.endIndex ? "/" : String(rest[slash...])
            if let colon = authority.lastIndex(of: ":"), let p = Int(authority[authority.index(after: colon)...]) {
                host = String(authority[..<colon])
                port = p
            } else {
                host = String(authority)
                port = tls ? 443 : 80
            }
        }
    }

    static func connect(
        to url: String, tlsConfiguration: TLSConfiguration? = nil, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> WebSocketTransport {
        let endpoint = try Endpoint(url)
        let (events, continuation) = AsyncStream<Event>.makeStream()
        let loop = group.next()
        let upgraded = loop.makePromise(of: Void.self)
        let sslContext = endpoint.tls ? try NIOSSLContext(configuration: tlsConfiguration ?? .makeClientConfiguration()) : nil
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        // SNI carries names only; for an IP address the certificate is checked
                        // against the address connected to.
                        let name = endpoint.host.allSatisfy { $0.isHexDigit || $0 == "." || $0 == ":" } ? nil : endpoint.host
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: sslContext, serverHostname: name))
                    }
                    let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 24, automaticErrorHandling: true) { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(FrameHandler(continuation: continuation))
                            upgraded.succeed()
                        }
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        leftOverBytesStrategy: .forwardBytes,
                        withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                    )
                    try channel.pipeline.syncOperations.addHandler(UpgradeRequest(host: "\(endpoint.host):\(endpoint.port)", path: endpoint.path))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: endpoint.host, port: endpoint.port).get()
        } catch {
            upgraded.fail(error)  // never left pending
            throw error
        }
        channel.closeFuture.whenComplete { _ in
            upgraded.fail(RealtimeClientError(code: 0, message: "connection refused by the server"))
        }
        try await upgraded.futureResult.get()
        return WebSocketTransport(channel: channel, events: events)
    }

    func send(_ text: String) {
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: text))
        channel.writeAndFlush(frame, promise: nil)
    }

    /// Sends a close frame and closes the socket shortly after.
    func close(code: UInt16 = 1000) {
        var data = ByteBuffer()
        data.writeInteger(code)
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data)
        let channel = self.channel
        channel.writeAndFlush(frame).whenComplete { _ in
            channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
        }
    }

    /// Drops the socket without a close handshake.
    func abort() { channel.close(promise: nil) }
}

private final class UpgradeRequest: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let host: String
    let path: String

    init(host: String, path: String) {
        self.host = host
        self.path = path
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Length", value: "0")
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }
}

private final class FrameHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    let continuation: AsyncStream<WebSocketTransport.Event>.Continuation
    var message: ByteBuffer?
    var closeCode: UInt16?
    var closeSent = false
    private var ended = false

    init(continuation: AsyncStream<WebSocketTransport.Event>.Continuation) {
        self.continuation = continuation
    }

    /// A server that answers the upgrade and closes at once (a 4003 refusal, say) can end the
    /// connection while the upgrade is still being completed: its `channelInactive` then passed
    /// before this handler was added, and the stream would never end (the connection loop, and
    /// whoever waits on it, would hang). Then the stream ends here, once the bytes that came with
    /// the upgrade response (the close frame) have been read.
    func handlerAdded(context: ChannelHandlerContext) {
        guard !context.channel.isActive else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute { bound.value.end() }
    }

    private func end() {
        guard !ended else { return }
        ended = true
        continuation.yield(.closed(code: closeCode))
        continuation.finish()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            if frame.fin { continuation.yield(.text(String(buffer: frame.unmaskedData))) } else { message = frame.unmaskedData }
        case .continuation:
            var data = frame.unmaskedData
            message?.writeBuffer(&data)
            if frame.fin, let m = message {
                continuation.yield(.text(String(buffer: m)))
                message = nil
            }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            closeCode = data.readInteger(as: UInt16.self)
            var reply = ByteBuffer()
            reply.writeInteger(closeCode ?? 1000)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: reply)))
                .whenComplete { _ in bound.value.close(promise: nil) }
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
