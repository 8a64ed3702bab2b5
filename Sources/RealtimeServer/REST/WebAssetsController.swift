import Hummingbird
import NIOCore

/// The browser client (`/v1/realtime/client.js`, `.d.ts`) and the console page (`/console`),
/// compiled into the binary from `Web/` so every node serves them with nothing to deploy.
struct WebAssetsController: Sendable {
    struct Asset: Sendable {
        let body: ByteBuffer
        let contentType: String
    }

    static let clientJS = Asset(body: ByteBuffer(bytes: PackageResources.client_js), contentType: "text/javascript; charset=utf-8")
    static let clientTypes = Asset(body: ByteBuffer(bytes: PackageResources.client_d_ts), contentType: "application/typescript; charset=utf-8")
    static let console = Asset(body: ByteBuffer(bytes: PackageResources.console_html), contentType: "text/html; charset=utf-8")

    func register(on router: Router<GatewayRequestContext>) {
        router.get("v1/realtime/client.js") { _, _ in Self.response(Self.clientJS) }
        router.get("v1/realtime/client.d.ts") { _, _ in Self.response(Self.clientTypes) }
        router.get("console") { _, _ in Self.response(Self.console) }
    }

    static func response(_ asset: Asset) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = asset.contentType
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.body))
    }
}
