import Hummingbird
import HummingbirdWebSocket
import RealtimeCore

/// `GET /v1/realtime/ws`: the upgrade and the session it starts.
struct WebSocketController: Sendable {
    let runtime: GatewayRuntime

    func register(on router: Router<GatewayRequestContext>) {
        router.ws("v1/realtime/ws") { _, _ in
            // Refusals before the upgrade are plain HTTP errors with the contract's envelope.
            if runtime.draining.load(ordering: .relaxed) { throw RealtimeError.engineUnavailable("node is draining; connect to another node") }
            if runtime.registry.count >= runtime.configuration.limits.maxConnections {
                throw RealtimeError.engineUnavailable("node is at its connection limit; connect to another node")
            }
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            let session = WebSocketSession(runtime: runtime, channel: context.requestContext.channel)
            guard runtime.registry.add(session, limit: runtime.configuration.limits.maxConnections) else {
                try await outbound.close(.unknown(1013), reason: "connection limit")
                return
            }
            defer { runtime.registry.remove(session) }
            await session.run(inbound: inbound, outbound: outbound, queryToken: context.request.uri.queryParameters.get("token"))
        }
    }
}
