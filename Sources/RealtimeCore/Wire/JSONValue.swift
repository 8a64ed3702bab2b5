/// Any JSON value, as clients send it in `data` fields.
///
/// Message and presence data is kept as compact JSON text (``JSONText``) after parsing, so fan-out
/// can splice it into frames without re-encoding.
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case integer(Int64)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let i = try? c.decode(Int64.self) { self = .integer(i); return }
        if let d = try? c.decode(Double.self) { self = .number(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        if let o = try? c.decode([String: JSONValue].self) { self = .object(o); return }
        throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value")
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d): try c.encode(d)
        case .integer(let i): try c.encode(i)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Compact JSON text for this value (object keys sorted, so equal values give equal text).
    public var jsonText: String {
        var out = JSONWriter()
        out.write(self)
        return out.text
    }
}

/// Appends compact JSON to a string; the one place string escaping lives.
public struct JSONWriter: Sendable {
    public private(set) var text: String = ""

    public init(capacity: Int = 128) { text.reserveCapacity(capacity) }

    public mutating func raw(_ s: String) { text += s }

    public mutating func string(_ s: String) {
        // Most strings need no escaping: append them whole.
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            text += "\""
            text += s
            text += "\""
            return
        }
        text.unicodeScalars.append("\"")
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default:
                text.unicodeScalars.append(scalar)
            }
        }
        text.unicodeScalars.append("\"")
    }

    public mutating func write(_ value: JSONValue) {
        switch value {
        case .null: text += "null"
        case .bool(let b): text += b ? "true" : "false"
        case .integer(let i): text += String(i)
        case .number(let d):
            if d.isFinite, d == d.rounded(), abs(d) < 1e15 { text += String(Int64(d)) } else if d.isFinite { text += "\(d)" } else { text += "null" }
        case .string(let s): string(s)
        case .array(let a):
            text += "["
            for (i, v) in a.enumerated() {
                if i > 0 { text += "," }
                write(v)
            }
            text += "]"
        case .object(let o):
            text += "{"
            for (i, k) in o.keys.sorted().enumerated() {
                if i > 0 { text += "," }
                string(k)
                text += ":"
                write(o[k]!)
            }
            text += "}"
        }
    }

    /// Writes `"key":` with a leading comma unless `first`.
    public mutating func key(_ k: String, first: Bool = false) {
        if !first { text += "," }
        string(k)
        text += ":"
    }
}

/// Guards the decoder against pathological input before it is parsed.
public enum JSONGuard {
    /// The deepest nesting of arrays/objects accepted in any client JSON.
    public static let maxDepth = 64

    /// Throws `40000` when brackets nest deeper than ``maxDepth`` (counted outside strings).
    public static func checkDepth(_ bytes: some Sequence<UInt8>) throws(RealtimeError) {
        var depth = 0
        var inString = false
        var escaped = false
        for b in bytes {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > maxDepth { throw .badRequest("JSON nested deeper than \(maxDepth) levels") }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
    }
}
