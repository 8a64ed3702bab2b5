import Crypto
import Synchronization

/// A scope an API key may hold (contract section 3).
public enum APIScope: String, Sendable, Codable, CaseIterable {
    case publish = "realtime:publish"
    case subscribe = "realtime:subscribe"
    case tokens = "realtime:tokens"
    case admin = "realtime:admin"
}

/// A stored API key: never the secret, only its SHA-256.
public struct APIKeyRecord: Sendable, Equatable, Codable {
    public var keyID: String
    public var name: String
    public var scopes: [APIScope]
    /// Milliseconds since the epoch.
    public var createdAt: Int64
    /// Lowercase hex SHA-256 of the whole key string.
    public var secretHash: String
    public var revoked: Bool

    public init(keyID: String, name: String, scopes: [APIScope], createdAt: Int64, secretHash: String, revoked: Bool = false) {
        self.keyID = keyID
        self.name = name
        self.scopes = scopes
        self.createdAt = createdAt
        self.secretHash = secretHash
        self.revoked = revoked
    }

    enum CodingKeys: String, CodingKey {
        case keyID = "key_id", name, scopes, createdAt = "created_at", secretHash = "secret_hash", revoked
    }
}

/// Making, parsing and checking API key strings of the form `<key_id>.<secret>`.
public enum APIKeyMaterial {
    /// The id under which the configured bootstrap key is known.
    public static let bootstrapKeyID = "bootstrap"

    /// A new key: its id and the full secret string to hand to the user once.
    public static func generate() -> (keyID: String, key: String) {
        let keyID = "k_" + RandomID.hex(bytes: 8)
        return (keyID, keyID + "." + RandomID.base64URL(bytes: 32))
    }

    /// The key id a presented key claims (`nil` for keys without one, such as a bootstrap key).
    public static func keyID(of key: String) -> String? {
        guard let dot = key.firstIndex(of: "."), key.hasPrefix("k_") else { return nil }
        return String(key[..<dot])
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    public static func hash(_ key: String) -> String {
        let digits = hexDigits
        var hex: [UInt8] = []
        hex.reserveCapacity(64)
        for byte in SHA256.hash(data: Array(key.utf8)) {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: hex, as: UTF8.self)
    }

    /// Compares a presented key with a stored hash in time independent of where they differ.
    public static func matches(_ key: String, hash stored: String) -> Bool {
        sameHash(hash(key), stored)
    }

    /// Compares two hashes in time independent of where they differ (a key checked against
    /// several stored hashes is hashed once).
    public static func sameHash(_ a: String, _ b: String) -> Bool {
        var a = a, b = b
        return a.withUTF8 { x in
            b.withUTF8 { y in
                guard x.count == y.count else { return false }
                var diff: UInt8 = 0
                for i in 0..<x.count { diff |= x[i] ^ y[i] }
                return diff == 0
            }
        }
    }
}

/// Random identifiers for keys, connections, clients and token ids.
public enum RandomID {
    /// `n` bytes from the system's generator, eight per draw (each draw is a `getrandom` call:
    /// one per byte cost a publish six system calls).
    public static func bytes(_ n: Int) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        var out = [UInt8]()
        out.reserveCapacity(n)
        while out.count < n {
            var word = rng.next()
            for _ in 0..<min(8, n - out.count) {
                out.append(UInt8(truncatingIfNeeded: word))
                word >>= 8
            }
        }
        return out
    }

    /// `n` random bytes as `2n` lowercase hex digits.
    public static func hex(bytes n: Int) -> String {
        let raw = bytes(n)
        return hexDigits(n) { raw[$0] }
    }

    /// `2n` lowercase hex digits (`n` at most 8) that repeat no more often than random ones: a
    /// SplitMix64 step (a bijection of 64 bits) over a counter that starts at a random point,
    /// so with `n` = 8 no two calls in a process return the same, and shorter ones or other
    /// processes coincide only by chance (1 in 2^(8n) per pair). No system call: for
    /// identifiers that must differ, not be secret. A Redis publish draws one per message as
    /// its channel's epoch candidate (with ``hex(bytes:)`` that was a `getrandom` call each).
    public static func uniqueHex(bytes n: Int) -> String {
        precondition(n <= 8)
        var z = sequenceStart &+ sequence.wrappingAdd(1, ordering: .relaxed).oldValue &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return hexDigits(n) { UInt8(truncatingIfNeeded: z >> (8 * UInt64($0))) }
    }

    private static let sequenceStart: UInt64 = {
        var rng = SystemRandomNumberGenerator()
        return rng.next()
    }()
    private static let sequence = Atomic<UInt64>(0)

    /// One string built in place from `n` bytes.
    private static func hexDigits(_ n: Int, byte: (Int) -> UInt8) -> String {
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 2 * n) { out in
            digits.withUTF8Buffer { digit in
                for i in 0..<n {
                    let b = byte(i)
                    out[2 * i] = digit[Int(b >> 4)]
                    out[2 * i + 1] = digit[Int(b & 15)]
                }
            }
            return 2 * n
        }
    }

    public static func base64URL(bytes n: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        let raw = bytes(n)
        var out = [UInt8]()
        var i = 0
        while i + 3 <= raw.count {
            let v = UInt32(raw[i]) << 16 | UInt32(raw[i + 1]) << 8 | UInt32(raw[i + 2])
            for shift in [18, 12, 6, 0] { out.append(alphabet[Int((v >> UInt32(shift)) & 63)]) }
            i += 3
        }
        let rest = raw.count - i
        if rest > 0 {
            var v = UInt32(raw[i]) << 16
            if rest == 2 { v |= UInt32(raw[i + 1]) << 8 }
            let chars = rest == 1 ? 2 : 3
            for (k, shift) in [18, 12, 6].enumerated() where k < chars { out.append(alphabet[Int((v >> UInt32(shift)) & 63)]) }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
