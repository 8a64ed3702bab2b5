import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// Request context for every route: carries the NIO channel so a WebSocket session can force a
/// close on a peer that stopped reading.
public struct GatewayRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.channel = source.channel
    }

    /// Bodies are collected per route with the configured limit; this is only the outer bound.
    public var maxUploadSize: Int { 256 * 1024 * 1024 }
}
