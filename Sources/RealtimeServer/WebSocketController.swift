import Hummingbird
import HummingbirdWebSocket
import RealtimeCore

/// `GET /v1/realtime/ws`: the upgrade and the session it starts.
struct WebSocketController: Sendable {
    let runtime: GatewayRuntime

    func register(on router: Router<GatewayRequestContext>) {
        // Refusals happen after the upgrade, as close codes a WebSocket client can act on
        // (hummingbird-websocket answers an error thrown before the upgrade with a bare 400).
        router.ws("v1/realtime/ws") { _, _ in
            .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            if runtime.draining.load(ordering: .relaxed) {
                try await outbound.close(.unknown(1012), reason: "node draining")
                return
            }
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
