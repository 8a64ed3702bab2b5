/// Any JSON value: message `data`, presence `data`, and the fields of replies.
public enum RealtimeJSON: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([RealtimeJSON])
    case object([String: RealtimeJSON])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([RealtimeJSON].self) { self = .array(a) }
        else { self = .object(try c.decode([String: RealtimeJSON].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public subscript(key: String) -> RealtimeJSON? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var number: Double? { if case .number(let n) = self { return n }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [RealtimeJSON]? { if case .array(let a) = self { return a }; return nil }
}

extension RealtimeJSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: RealtimeJSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, RealtimeJSON)...) { self = .object(Dictionary(elements) { $1 }) }
    public init(nilLiteral: ()) { self = .null }
}

/// A refused request or op: the contract's 5-digit `code` (0 for client-side failures).
public struct RealtimeClientError: Error, Sendable, CustomStringConvertible {
    public let code: Int
    public let message: String
    public let status: Int?
    /// The server's retry hint (`retry_after_ms`, or `Retry-After`), for `42900`.
    public let retryAfterMilliseconds: Int?

    public init(code: Int, message: String, status: Int? = nil, retryAfterMilliseconds: Int? = nil) {
        self.code = code
        self.message = message
        self.status = status
        self.retryAfterMilliseconds = retryAfterMilliseconds
    }

    public var description: String { "\(code): \(message)" }
}
