import Hummingbird
import NIOCore

/// The browser client (`/v1/realtime/client.js`, `.d.ts`) and the console page (`/console`),
/// compiled into the binary from `Web/` so every node serves them with nothing to deploy.
struct WebAssetsController: Sendable {
    struct Asset: Sendable {
        let body: ByteBuffer
        let contentType: String
        /// Loadable by a page of any origin. A browser fetches a module script
        /// (`<script type="module" src>`, `import()`) in CORS mode, so a web app on its own
        /// origin can load the client from a node only with `Access-Control-Allow-Origin`.
        /// The client carries no secret; the console page is not shared.
        var anyOrigin = false
    }

    static let clientJS = Asset(body: ByteBuffer(bytes: PackageResources.client_js), contentType: "text/javascript; charset=utf-8", anyOrigin: true)
    static let clientTypes = Asset(body: ByteBuffer(bytes: PackageResources.client_d_ts), contentType: "application/typescript; charset=utf-8", anyOrigin: true)
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
        if asset.anyOrigin { headers[.accessControlAllowOrigin] = "*" }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.body))
    }
}
