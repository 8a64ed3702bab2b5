import Hummingbird
import NIOCore
import NIOSSL
import RealtimeCore

/// `GET /v1/realtime/ws`: the upgraded connections (``GatewayServerChannel`` performs the
/// upgrade) and the answer to a plain GET.
struct WebSocketController: Sendable {
    let runtime: GatewayRuntime

    func register(on router: Router<GatewayRequestContext>) {
        router.get("v1/realtime/ws") { _, _ -> Response in
            throw RealtimeError.badRequest("this endpoint takes a WebSocket upgrade (Upgrade: websocket)")
        }
    }

    /// Starts the session of a just-upgraded connection, on its event loop. Refusals happen
    /// after the upgrade, as close codes a WebSocket client can act on: 1012 while the node
    /// drains, 1013 at the connection limit or when too many connections wait without a token.
    func accept(channel: any Channel, token: String?, compressed: Bool) throws {
        let session = WebSocketSession(runtime: runtime, channel: channel)
        let refusal: (code: UInt16, reason: String)?
        if runtime.draining.load(ordering: .relaxed) {
            refusal = (1012, "node draining")
        } else if token == nil, !runtime.registry.addUnauthenticated(session, limit: runtime.configuration.limits.maxUnauthenticatedConnections) {
            refusal = (1013, "unauthenticated connection limit (REALTIME_MAX_UNAUTHENTICATED)")
        } else if !runtime.registry.add(session, limit: runtime.configuration.limits.maxConnections) {
            runtime.registry.authenticated(session, keyID: nil)
            refusal = (1013, "connection limit")
        } else {
            refusal = nil
        }
        do {
            let connection = WebSocketConnection(session: session, registered: refusal == nil, inflater: compressed ? try PerMessageDeflate.Inflater() : nil)
            let pipeline = channel.pipeline.syncOperations
            // Closest to the socket (but behind TLS, which must encrypt them), so its writes
            // bypass the frame encoder above it.
            if let tls = try? pipeline.handler(type: NIOSSLServerHandler.self) {
                try pipeline.addHandler(session.writer, position: .after(tls))
            } else {
                try pipeline.addHandler(session.writer, position: .first)
            }
            try pipeline.addHandler(connection)
            if let refusal {
                connection.requestClose(.init(code: refusal.code, reason: refusal.reason, dropQueued: false))
            } else {
                connection.open(token: token)
            }
        } catch {
            if refusal == nil { runtime.registry.remove(session) }
            throw error
        }
    }
}
