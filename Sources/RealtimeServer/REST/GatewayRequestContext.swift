import Hummingbird
import NIOCore

/// Request context for every route.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The connection the request came on (its TLS state, for mutual TLS).
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// Bodies are collected per route with the configured limit; this is only the outer bound.
    public var maxUploadSize: Int { 256 * 1024 * 1024 }
}
