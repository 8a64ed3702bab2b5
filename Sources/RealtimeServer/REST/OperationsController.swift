import Hummingbird
import NIOCore
import RealtimeCore

/// `/healthz`, `/readyz` and `/metrics`; no key needed.
struct OperationsController: Sendable {
    let runtime: GatewayRuntime

    func register(on router: Router<GatewayRequestContext>) {
        router.get("healthz") { _, _ in JSONResponse.make(.ok, "{\"status\":\"ok\"}") }
        router.get("readyz") { _, _ in
            guard !runtime.draining.load(ordering: .relaxed) else {
                return JSONResponse.error(.engineUnavailable("node is draining"))
            }
            do {
                try await runtime.engine.broker.checkReady()
            } catch {
                return JSONResponse.error(.engineUnavailable("engine not reachable: \(error)"))
            }
            return JSONResponse.make(.ok, "{\"status\":\"ready\"}")
        }
        router.get("metrics") { _, _ in
            var bytes: [UInt8] = []
            runtime.metrics.registry.emit(into: &bytes)
            bytes += LockStatistics.prometheusText.utf8  // debug builds only
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }
}
