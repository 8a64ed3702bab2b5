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
    var nbf: Int64?
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
    private let kids: Set<String>
    private let clock: any RealtimeClock
    /// Clock skew allowed for `nbf` (seconds).
    public static let notBeforeLeewaySeconds: Int64 = 60
    /// Claims above this (9999-12-31, in seconds) are refused: no arithmetic on them can overflow.
    static let latestSeconds: Int64 = 253_402_300_799

    public init(secrets: [TokenSecret], clock: any RealtimeClock) async {
        precondition(!secrets.isEmpty, "at least one token secret")
        let keys = JWTKeyCollection()
        // The first secret is also the default for tokens that carry no `kid`.
        await keys.add(hmac: HMACKey(from: secrets[0].secret), digestAlgorithm: .sha256)
        for s in secrets {
            await keys.add(hmac: HMACKey(from: s.secret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: s.id))
        }
        self.keys = keys
        self.kids = Set(secrets.map(\.id))
        self.signingKID = secrets[0].id
        self.clock = clock
    }

    public func mint(_ claims: TokenClaims) async throws -> String {
        let payload = TokenPayload(
            sub: claims.clientID, uid: claims.userID, cap: claims.capabilities.wire,
            iat: claims.issuedAt, exp: claims.expiresAt, nbf: nil, jti: claims.tokenID, key: claims.keyID
        )
        return try await keys.sign(payload, kid: JWKIdentifier(string: signingKID))
    }

    /// Verifies signature and expiry: `40141` for anything forged or malformed, `40140` once expired.
    public func verify(_ token: String) async throws(RealtimeError) -> TokenClaims {
        guard token.utf8.count <= 8192 else { throw .tokenInvalid("token too long") }
        try checkHeader(token)
        let payload: TokenPayload
        do {
            payload = try await keys.verify(token, as: TokenPayload.self)
        } catch {
            throw .tokenInvalid("token invalid: signature, format or key id not accepted")
        }
        for claim in [payload.iat, payload.exp, payload.nbf ?? 0] where claim < 0 || claim > Self.latestSeconds {
            throw .tokenInvalid("token has a time claim out of range")
        }
        let now = clock.nowMilliseconds()
        guard payload.exp * 1000 > now else { throw .tokenExpired() }
        if let nbf = payload.nbf, (nbf - Self.notBeforeLeewaySeconds) * 1000 > now { throw .tokenInvalid("token not valid yet (nbf)") }
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

    /// The header must say HS256, and name a configured `kid` (it may leave `kid` out only when
    /// one secret is configured): an unknown `kid` is refused, never tried against a default.
    private func checkHeader(_ token: String) throws(RealtimeError) {
        guard let dot = token.utf8.firstIndex(of: UInt8(ascii: ".")),
            let header = Base64URL.decode(Substring(token.utf8[..<dot])).flatMap({ JSONParser.parse($0)?.objectMembers })
        else { throw .tokenInvalid("token header is not base64url JSON") }
        guard case .string("HS256")? = header["alg"] else { throw .tokenInvalid("token alg must be HS256") }
        switch header["kid"] {
        case nil:
            guard kids.count == 1 else { throw .tokenInvalid("token has no kid, and several secrets are configured") }
        case .string(let kid)?:
            guard kids.contains(kid) else { throw .tokenInvalid("token kid '\(kid.prefix(64))' is not a configured secret") }
        default:
            throw .tokenInvalid("token kid must be a string")
        }
    }
}

/// Base64url without padding (JWT segments).
enum Base64URL {
    static func decode(_ text: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count * 3 / 4)
        var buffer: UInt32 = 0
        var bits = 0
        for c in text.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): v = 62
            case UInt8(ascii: "_"): v = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            buffer = (buffer << 6) | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((buffer >> UInt32(bits)) & 0xFF))
            }
        }
        return out
    }
}
