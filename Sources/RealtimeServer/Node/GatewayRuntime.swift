import Logging
import RealtimeCore
import Synchronization

/// What REST routes, WebSocket sessions and background services of one node share.
final class GatewayRuntime: Sendable {
    let configuration: GatewayConfiguration
    let engine: Engine
    let hub: ChannelHub
    let tokens: TokenAuthority
    let keys: APIKeyAuthenticator
    let registry: ConnectionRegistry
    let metrics: GatewayMetrics
    let clock: any RealtimeClock
    let logger: Logger
    let keyLimiter: KeyedRateLimiter
    let draining = Atomic<Bool>(false)
    let startedAt: Int64
    var operations: ChannelOperations { ChannelOperations(runtime: self) }

    init(
        configuration: GatewayConfiguration, engine: Engine, tokens: TokenAuthority, bootstrapKeyHash: String,
        metrics: GatewayMetrics, clock: any RealtimeClock, logger: Logger
    ) {
        self.configuration = configuration
        self.engine = engine
        self.hub = ChannelHub(
            engine: engine, resumeBufferLimit: configuration.limits.outboundQueueFrames,
            flushGap: .microseconds(Int64(configuration.timing.flushGapMicroseconds)))
        self.tokens = tokens
        self.keys = APIKeyAuthenticator(engine: engine, bootstrapHash: bootstrapKeyHash)
        self.registry = ConnectionRegistry()
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
        self.keyLimiter = KeyedRateLimiter(rate: configuration.limits.keyPublishRate, clock: clock)
        self.startedAt = clock.nowMilliseconds()
    }

    /// Verifies a token and, when an API key minted it, that the key is still valid (`40141` if revoked).
    func verifyToken(_ token: String) async throws(RealtimeError) -> TokenClaims {
        let claims = try await tokens.verify(token)
        if let keyID = claims.keyID, keyID != APIKeyMaterial.bootstrapKeyID {
            let record: APIKeyRecord?
            do { record = try await engine.keys.key(id: keyID) } catch { throw .engineUnavailable("cannot check the token's key") }
            guard let record, !record.revoked else { throw .tokenInvalid("the API key that minted this token was revoked") }
        }
        return claims
    }

    /// Closes (4001) every WebSocket session whose token the key minted: the key was revoked.
    func closeSessions(mintedBy keyID: String) {
        for session in registry.sessions(mintedBy: keyID) {
            session.push(WebSocketSession.error(.tokenInvalid("the API key that minted this token was revoked"), ref: nil))
            session.close(code: 4001, reason: "token revoked")
        }
    }

    /// Checks an operation against the channel's type and the token's capabilities.
    ///
    /// On `public` channels subscribe, history and reading presence need no capability; entering
    /// presence and publishing always do.
    func authorize(_ op: ChannelOperation, readOnly: Bool, on settings: ChannelSettings, claims: TokenClaims) throws(RealtimeError) {
        if settings.type == .public, readOnly { return }
        guard claims.capabilities.allows(op, on: settings.name) else {
            throw .capabilityMissing(op.rawValue, settings.name.rawValue)
        }
    }

    func settings(_ channel: ChannelName) async throws(RealtimeError) -> ChannelSettings {
        do { return try await engine.channels.settings(channel) } catch { throw Self.engineError(error) }
    }

    /// Maps anything an engine throws to the contract's errors.
    static func engineError(_ error: any Error) -> RealtimeError {
        (error as? RealtimeError) ?? .engineUnavailable()
    }

    /// Validates `data`/`event` size and returns the compact data text.
    func checkMessageSize(event: String, data: String) throws(RealtimeError) {
        let size = event.utf8.count + data.utf8.count
        guard size <= configuration.limits.maxMessageBytes else {
            throw .tooLarge("message is \(size) bytes; the limit is \(configuration.limits.maxMessageBytes) (data JSON plus event)")
        }
    }
}

/// Checks API keys: the configured bootstrap key, then stored keys by id, hashes compared in constant time.
struct APIKeyAuthenticator: Sendable {
    let engine: Engine
    let bootstrapHash: String

    struct Authenticated: Sendable {
        var keyID: String
        var scopes: Set<APIScope>
    }

    private static let allScopes = Set(APIScope.allCases)

    func authenticate(_ presented: String?) async throws(RealtimeError) -> Authenticated {
        guard let presented, !presented.isEmpty else { throw .noCredentials("missing API key: send Authorization: Bearer <key> or X-API-Key") }
        let presentedHash = APIKeyMaterial.hash(presented)
        if APIKeyMaterial.sameHash(presentedHash, bootstrapHash) {
            return Authenticated(keyID: APIKeyMaterial.bootstrapKeyID, scopes: Self.allScopes)
        }
        guard let keyID = APIKeyMaterial.keyID(of: presented) else { throw .noCredentials("unknown API key") }
        let record: APIKeyRecord?
        do { record = try await engine.keys.key(id: keyID) } catch { throw GatewayRuntime.engineError(error) }
        guard let record, !record.revoked, APIKeyMaterial.sameHash(presentedHash, record.secretHash) else {
            throw .noCredentials("unknown API key")
        }
        return Authenticated(keyID: record.keyID, scopes: Set(record.scopes))
    }
}

/// The node's open WebSocket sessions, indexed for the background services: by the API key
/// that minted each one's token (revocation) and by whether it holds presence (heartbeat).
final class ConnectionRegistry: Sendable {
    private struct Entry {
        let session: WebSocketSession
        var keyID: String?
        var present = false
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// Adds unless `limit` sessions are already open.
    func add(_ session: WebSocketSession, limit: Int) -> Bool {
        entries.withLock { s in
            guard s.count < limit else { return false }
            s[session.connectionID] = Entry(session: session)
            return true
        }
    }

    func remove(_ session: WebSocketSession) {
        _ = entries.withLock { $0.removeValue(forKey: session.connectionID) }
        authenticated(session, keyID: nil)
    }

    /// Connections open without a token yet (they have `auth_timeout_seconds` to send one).
    private let unauthenticated = Atomic<Int>(0)

    /// Counts a connection that came without a token, unless `limit` already wait.
    func addUnauthenticated(_ session: WebSocketSession, limit: Int) -> Bool {
        guard unauthenticated.add(1, ordering: .relaxed).newValue <= limit else {
            unauthenticated.subtract(1, ordering: .relaxed)
            return false
        }
        session.awaitingAuth.store(true, ordering: .relaxed)
        return true
    }

    /// The session authenticated with a token `keyID` minted (or will never: refused, gone):
    /// it no longer counts as unauthenticated.
    func authenticated(_ session: WebSocketSession, keyID: String?) {
        if session.awaitingAuth.exchange(false, ordering: .relaxed) { unauthenticated.subtract(1, ordering: .relaxed) }
        guard let keyID else { return }
        entries.withLock { $0[session.connectionID]?.keyID = keyID }
    }

    /// The session now holds some presence membership (or none).
    func presenceChanged(_ session: WebSocketSession, present: Bool) {
        entries.withLock { $0[session.connectionID]?.present = present }
    }

    var unauthenticatedCount: Int { unauthenticated.load(ordering: .relaxed) }

    var count: Int { entries.withLock { $0.count } }

    var all: [WebSocketSession] { entries.withLock { $0.values.map(\.session) } }

    /// The API keys behind the open sessions' tokens.
    var keyIDs: Set<String> { entries.withLock { Set($0.values.compactMap(\.keyID)) } }

    func sessions(mintedBy keyID: String) -> [WebSocketSession] {
        entries.withLock { $0.values.filter { $0.keyID == keyID }.map(\.session) }
    }

    /// Sessions with at least one presence membership.
    var withPresence: [WebSocketSession] { entries.withLock { $0.values.filter(\.present).map(\.session) } }
}
