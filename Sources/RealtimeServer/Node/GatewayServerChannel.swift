import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOSSL
import NIOWebSocket

/// The server's child channel: HTTP/1.1 requests go to Hummingbird's router (publishes are
/// answered before it, by ``PublishFastPath``); an upgrade on
/// `GET /v1/realtime/ws` becomes a WebSocket connection run by NIO handlers
/// (``WebSocketConnection``), so an idle connection holds no task, only its channel.
struct GatewayServerChannel: ServerChildChannel, HTTPChannelHandler {
    enum Negotiated: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refusedUpgrade(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// Upgraded: the channel now belongs to its ``WebSocketConnection``.
        case webSocket
    }

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    static let webSocketPath = "/v1/realtime/ws"
    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536)

    let responder: HTTPChannelHandler.Responder
    let webSocket: WebSocketController
    /// Every request head must arrive within this once its first byte did (the first request's
    /// within this of the connection opening); kept-alive connections idle longer than
    /// `idleTimeout` are closed.
    let headReadTimeout: TimeAmount
    let idleTimeout: TimeAmount
    /// The largest frame the decoder accepts; larger ones are refused with 1009.
    let maxFrameSize: Int
    /// TLS in front of everything, when configured: each connection takes the context current
    /// when it is accepted (SIGHUP swaps it for later ones).
    let tls: TLSContextStore?
    /// Publishes answered below the router, when on.
    let fastPath: PublishFastPath.Service?

    init(
        responder: @escaping HTTPChannelHandler.Responder, webSocket: WebSocketController, maxFrameSize: Int, tls: TLSContextStore? = nil,
        headReadTimeout: TimeAmount = .seconds(10), idleTimeout: TimeAmount = .seconds(60), fastPath: PublishFastPath.Service? = nil
    ) {
        self.tls = tls
        self.fastPath = fastPath
        self.responder = Self.redirectingLateUpgrades(responder)
        self.webSocket = webSocket
        self.maxFrameSize = maxFrameSize
        self.headReadTimeout = headReadTimeout
        self.idleTimeout = idleTimeout
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // The channel keeps its receive buffer between reads; NIO's default starts it at
            // 2 KiB, a quarter of an idle WebSocket's budget. Reads that fill it grow it.
            try channel.syncOptions?.setOption(ChannelOptions.recvAllocator, value: Self.receiveBuffers)
            // One read per readiness event (the poller is level-triggered, so what is left is
            // read on the next turn). NIO pools as many read buffers per channel as it may read
            // in a row, keeps them for the channel's life and never shrinks one: with its default
            // of four, a request head that arrived in two reads (a browser's, with cookies and a
            // token) left a second buffer and the pool's array behind, 1.3 KiB per idle
            // WebSocket. With one, the channel keeps a single buffer; a read while a decoder still
            // holds it takes a buffer of its own, freed after use.
            try channel.syncOptions?.setOption(ChannelOptions.maxMessagesPerRead, value: 1)
            let attempted = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            // Negotiated in `shouldUpgrade`, used once the pipeline is upgraded.
            let compressed = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            let webSocket = self.webSocket
            let headTimeout = HeadReadTimeout(timeout: headReadTimeout)
            let exchanges = HTTPExchanges(headTimeout, idleTimeout: idleTimeout, hsts: tls == nil ? nil : TLSMiddleware.hsts)
            // The HTTP-only handlers, removed when the connection becomes a WebSocket.
            let httpOnly = NIOLoopBound((headTimeout, exchanges), eventLoop: channel.eventLoop)
            try channel.pipeline.syncOperations.addHandler(headTimeout, position: .first)
            // Ahead of the head timeout, whose clock (started here) then covers the handshake too.
            if let tls {
                // A TLS client's stream that ends without close_notify (a browser or phone that
                // drops the socket) ends the connection here. With remote half-closure on, NIOSSL
                // answered that end with a TLS shutdown towards a gone peer and its handler, BoringSSL
                // state and buffers were never freed: 12-19 KiB per such connection, without bound
                // (`TLSRaggedCloseTests`). A half-close inside TLS (close_notify) still works.
                try channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: false)
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current), position: .first)
            }
            let upgrader = NIOTypedWebSocketServerUpgrader<Negotiated>(
                maxFrameSize: maxFrameSize,
                shouldUpgrade: { channel, head in
                    attempted.value = true
                    guard head.method == .GET, URI(head.uri).path == Self.webSocketPath, Self.asksForUpgrade(head.headers) else {
                        return channel.eventLoop.makeSucceededFuture(nil)
                    }
                    var headers = HTTPHeaders()
                    if let accepted = PerMessageDeflate.negotiate(head.headers["Sec-WebSocket-Extensions"]) {
                        headers.add(name: "Sec-WebSocket-Extensions", value: accepted)
                        compressed.value = true
                    }
                    return channel.eventLoop.makeSucceededFuture(headers)
                },
                upgradePipelineHandler: { channel, head in
                    channel.eventLoop.makeCompletedFuture {
                        channel.pipeline.syncOperations.removeHandler(httpOnly.value.0).whenComplete { _ in }
                        channel.pipeline.syncOperations.removeHandler(httpOnly.value.1).whenComplete { _ in }
                        // Idle most of its life from now on: no read buffer kept between reads.
                        try channel.syncOptions?.setOption(ChannelOptions.recvAllocator, value: UnpooledReceiveBuffers())
                        try webSocket.accept(channel: channel, token: URI(head.uri).queryParameters.get("token"), compressed: compressed.value)
                        return .webSocket
                    }
                }
            )
            let notUpgraded = NIOTypedHTTPServerUpgradeConfiguration<Negotiated>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        httpOnly.value.0.firstHeadRead()
                        if let fastPath = self.fastPath { try sync.addHandler(PublishFastPath(service: fastPath, eventLoop: channel.eventLoop)) }
                        try sync.addHandler(HTTP1ToHTTPServerCodec(secure: self.tls != nil))
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        return attempted.value ? .refusedUpgrade(asyncChannel) : .http(asyncChannel)
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Negotiated>(upgradeConfiguration: notUpgraded)
            configuration.enablePipelining = false  // NIOAsyncChannel serialises requests
            configuration.enableErrorHandling = false  // HTTPExchanges answers parse errors
            configuration.enableResponseHeaderValidation = false  // HTTPTypes validated them
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            // Right after the decoder (behind the upgrade handler, which passes errors on), so it
            // also sees a first request that does not parse.
            try channel.pipeline.syncOperations.addHandler(exchanges)
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refusedUpgrade(let http):
                try await http.executeThenClose { _, outbound in
                    let reply = JSONReply(error: .badRequest("a WebSocket upgrade is a GET of \(Self.webSocketPath) with Connection: Upgrade"))
                    var head = HTTPResponse(
                        status: .badRequest,
                        headerFields: [
                            .connection: "close", .contentType: "application/json; charset=utf-8",
                            .contentLength: String(reply.body.utf8.count),
                        ])
                    if tls != nil { head.headerFields[.strictTransportSecurity] = TLSMiddleware.hsts }
                    try await outbound.write(contentsOf: [.head(head), .body(ByteBuffer(string: reply.body)), .end(nil)])
                }
            case .webSocket:
                return
            }
        } catch {
            logger.debug("connection ended during negotiation", metadata: ["error": "\(error)"])
        }
    }

    /// Whether a handshake's `Connection` header has the token `upgrade`, as RFC 6455 (4.2.1)
    /// requires, in the form NIO's HTTP parser (llhttp) takes for one: after optional spaces
    /// or tabs, `upgrade` in any case, then only spaces up to the next comma or the line's end.
    /// The parser stops after a request only when it sees that token (and an `Upgrade`
    /// header), while NIO's upgrade handler looks at `Upgrade` alone: upgrading a request the
    /// parser read past would hand the next pipelined request, already parsed, to the
    /// WebSocket decoder, which traps. (A node crashed on `Upgrade: websocket` without
    /// `Connection: Upgrade`, and on `Connection: Upgrade<tab>`, each followed by a second
    /// request in the same write; `UpgradeDecisionTests` checks this rule against the parser.)
    static func asksForUpgrade(_ headers: HTTPHeaders) -> Bool {
        headers["connection"].contains { value in
            value.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).contains { element in
                let token = element.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
                guard token.count >= 7 else { return false }
                return token.prefix(7).elementsEqual("upgrade".utf8) { $0 | 0x20 == $1 }
                    && token.dropFirst(7).allSatisfy { $0 == UInt8(ascii: " ") }
            }
        }
    }

    /// NIO upgrades only on a connection's first request; a WebSocket upgrade arriving later on
    /// a kept-alive connection is redirected to the same URL on a new connection.
    static func redirectingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct CloseAfterRedirect: Error {}
        return { request, writer, channel in
            guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                return try await responder(request, writer, channel)
            }
            let location = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
            try await writer.writeResponse(HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: location]))
            throw CloseAfterRedirect()
        }
    }
}

/// Receive buffers for a connection that is idle most of its life (an upgraded WebSocket): each
/// read gets a buffer of its own, sized as NIO's adaptive allocator would size it, which is
/// freed once its bytes are consumed. NIO's pool would keep the channel's buffer for its life,
/// grown in place by the largest read it ever made and never shrunk: one 60 KB message made an
/// idle connection cost 38 KiB instead of 5.8. Telling the pool that the next buffer may grow,
/// with no size to check its buffer against, makes it allocate a fresh one for every read
/// (capacity one, `maxMessagesPerRead` 1: the fresh one is not kept). The cost is one
/// allocation per read, on connections that read little.
struct UnpooledReceiveBuffers: RecvByteBufferAllocator {
    private var sizes = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536)

    func buffer(allocator: ByteBufferAllocator) -> ByteBuffer { sizes.buffer(allocator: allocator) }

    /// No size: the pool then cannot reuse its buffer, whatever its capacity.
    func nextBufferSize() -> Int? { nil }

    mutating func record(actualReadBytes: Int) -> Bool {
        _ = sizes.record(actualReadBytes: actualReadBytes)
        return true
    }
}
