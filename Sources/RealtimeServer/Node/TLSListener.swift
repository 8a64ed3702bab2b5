import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The listener's TLS context (swift-nio-ssl, BoringSSL; see docs/architecture.md for why not
/// Debian's OpenSSL). Built at start, so a bad file stops the node with the setting's name, and
/// rebuilt on SIGHUP: new connections get the new certificate, open ones keep theirs.
final class TLSContextStore: Sendable {
    let settings: GatewayConfiguration.TLSSettings
    private let context: Mutex<NIOSSLContext>

    init(_ settings: GatewayConfiguration.TLSSettings) throws(ConfigurationError) {
        self.settings = settings
        self.context = Mutex(try Self.makeContext(settings))
    }

    /// The context a new connection is served with.
    var current: NIOSSLContext { context.withLock { $0 } }

    /// Re-reads the files; on a problem the old context stays and the error is returned.
    func reload() throws(ConfigurationError) {
        let fresh = try Self.makeContext(settings)
        context.withLock { $0 = fresh }
    }

    static func makeContext(_ settings: GatewayConfiguration.TLSSettings) throws(ConfigurationError) -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(settings.certificateFile)
        } catch {
            throw ConfigurationError(setting: "REALTIME_TLS_CERT_FILE", problem: "cannot read a PEM certificate from \(settings.certificateFile): \(error)")
        }
        guard !chain.isEmpty else {
            throw ConfigurationError(setting: "REALTIME_TLS_CERT_FILE", problem: "no certificate in \(settings.certificateFile)")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: settings.keyFile, format: .pem)
        } catch {
            throw ConfigurationError(setting: "REALTIME_TLS_KEY_FILE", problem: "cannot read a PEM private key from \(settings.keyFile): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = settings.minimumVersion == "1.3" ? .tlsv13 : .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        if let caFile = settings.clientCAFile {
            let roots: [NIOSSLCertificate]
            do {
                roots = try NIOSSLCertificate.fromPEMFile(caFile)
            } catch {
                throw ConfigurationError(setting: "REALTIME_TLS_CLIENT_CA_FILE", problem: "cannot read PEM certificates from \(caFile): \(error)")
            }
            guard !roots.isEmpty else { throw ConfigurationError(setting: "REALTIME_TLS_CLIENT_CA_FILE", problem: "no certificate in \(caFile)") }
            configuration.trustRoots = .certificates(roots)
            // A presented certificate must chain to the CA; none at all is allowed at this layer
            // (browsers on WSS have none) and refused for the REST API by ClientCertificateMiddleware.
            configuration.certificateVerification = .optionalVerification
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError(
                setting: "REALTIME_TLS_KEY_FILE", problem: "the key does not fit the certificate in REALTIME_TLS_CERT_FILE, or is unusable: \(error)")
        }
    }
}

/// Reloads the listener's certificate and key on SIGHUP until the node shuts down.
struct TLSReloadService: Service {
    let store: TLSContextStore
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            do {
                try store.reload()
                logger.notice("TLS certificate and key reloaded")
            } catch {
                logger.error("TLS reload failed, still serving the previous certificate: \(error)")
            }
        }
    }
}

/// With TLS on: `Strict-Transport-Security` on every response; with a client CA, REST requests
/// without a verified client certificate are refused (`401`, `40100`). The WebSocket endpoint
/// and the browser assets stay open to clients without one (they authenticate with tokens).
struct TLSMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    let requireClientCertificate: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if requireClientCertificate, Self.needsClientCertificate(request.uri.path) {
            let certificate = try? await context.channel.nioSSL_peerCertificate().get()
            guard certificate != nil else {
                var response = JSONResponse.error(.noCredentials("a client certificate signed by REALTIME_TLS_CLIENT_CA_FILE is required"))
                response.headers[.strictTransportSecurity] = Self.hsts
                return response
            }
        }
        var response = try await next(request, context)
        response.headers[.strictTransportSecurity] = Self.hsts
        return response
    }

    static let hsts = "max-age=31536000"

    static func needsClientCertificate(_ path: String) -> Bool {
        guard path.hasPrefix("/v1/") else { return false }
        return ![GatewayServerChannel.webSocketPath, "/v1/realtime/client.js", "/v1/realtime/client.d.ts"].contains(path)
    }
}
