import JWTKit

/// The claims of a client token (contract section 3).
public struct TokenClaims: Sendable, Equatable {
    public var clientID: String
    public var userID: String?
    public var capabilities: Capabilities
    /// Seconds since the epoch.
    public var issuedAt: Int64
    /// Seconds since the epoch.
    public var expiresAt: Int64
    public var tokenID: String
    /// The API key that minted the token; `nil` for tokens minted offline.
    public var keyID: String?

    public init(clientID: String, userID: String?, capabilities: Capabilities, issuedAt: Int64, expiresAt: Int64, tokenID: String, keyID: String?) {
        self.clientID = clientID
        self.userID = userID
        self.capabilities = capabilities
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.tokenID = tokenID
        self.keyID = keyID
    }
}

/// The JWT payload on the wire: `sub`, `uid`, `cap`, `iat`, `exp`, `jti`, `key`.
struct TokenPayload: JWTPayload {
    var sub: String
    var uid: String?
    var cap: [String: [String]]
    var iat: Int64
    var exp: Int64
    var jti: String?
    var key: String?

    /// Expiry is checked by ``TokenAuthority`` against its own clock, so that expired and forged
    /// tokens get different codes; here only the signature has been checked.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// A token signing secret with its id (the JWT `kid`).
public struct TokenSecret: Sendable, Equatable {
    public var id: String
    public var secret: String

    public init(id: String, secret: String) {
        self.id = id
        self.secret = secret
    }
}

/// Mints and verifies HS256 client tokens.
///
/// Several secrets may be configured for rotation: tokens are signed with the first one and
/// verified with the one their `kid` names (or the first, when a token carries no `kid`).
public struct TokenAuthority: Sendable {
    private let keys: JWTKeyCollection
    private let signingKID: String
    private let clock: any RealtimeClock

    public init(secrets: [TokenSecret], clock: any RealtimeClock) async {
        precondition(!secrets.isEmpty, "at least one token secret")
        let keys = JWTKeyCollection()
        // The first secret is also the default for tokens that carry no `kid`.
        await keys.add(hmac: HMACKey(from: secrets[0].secret), digestAlgorithm: .sha256)
        for s in secrets {
            await keys.add(hmac: HMACKey(from: s.secret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: s.id))
        }
        self.keys = keys
        self.signingKID = secrets[0].id
        self.clock = clock
    }

    public func mint(_ claims: TokenClaims) async throws -> String {
        let payload = TokenPayload(
            sub: claims.clientID, uid: claims.userID, cap: claims.capabilities.wire,
            iat: claims.issuedAt, exp: claims.expiresAt, jti: claims.tokenID, key: claims.keyID
        )
        return try await keys.sign(payload, kid: JWKIdentifier(string: signingKID))
    }

    /// Verifies signature and expiry: `40141` for anything forged or malformed, `40140` once expired.
    public func verify(_ token: String) async throws(RealtimeError) -> TokenClaims {
        guard token.utf8.count <= 8192 else { throw .tokenInvalid("token too long") }
        let payload: TokenPayload
        do {
            payload = try await keys.verify(token, as: TokenPayload.self)
        } catch {
            throw .tokenInvalid("token invalid: signature, format or key id not accepted")
        }
        guard payload.exp * 1000 > clock.nowMilliseconds() else { throw .tokenExpired() }
        guard !payload.sub.isEmpty else { throw .tokenInvalid("token has an empty sub") }
        let caps: Capabilities
        do {
            caps = try Capabilities(wire: payload.cap)
        } catch {
            throw .tokenInvalid("token capability map invalid: \(error.message)")
        }
        return TokenClaims(
            clientID: payload.sub, userID: payload.uid, capabilities: caps,
            issuedAt: payload.iat, expiresAt: payload.exp, tokenID: payload.jti ?? "", keyID: payload.key
        )
    }
}
