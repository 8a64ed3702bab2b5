/// A strict JSON parser into ``JSONValue`` for the hot paths (REST publish bodies, WebSocket
/// frames). It accepts exactly RFC 8259 JSON and builds the same values Foundation's
/// `JSONDecoder` builds through `JSONValue.init(from:)`.
///
/// It returns nil for anything it does not accept (bad syntax, invalid UTF-8, lone surrogates,
/// nesting deeper than ``JSONGuard/maxDepth``, and the rare numbers whose integer-or-double
/// reading could differ from Foundation's). Callers then take the Foundation path, which
/// produces the precise error message, so errors are worded the same either way.
public enum JSONParser {
    public static func parse(_ bytes: [UInt8]) -> JSONValue? {
        bytes.withUnsafeBufferPointer { buffer in
            var p = Cursor(bytes: buffer)
            p.skipWhitespace()
            guard let value = p.value(depth: 0) else { return nil }
            p.skipWhitespace()
            return p.index == buffer.count ? value : nil
        }
    }

    /// Whether the bytes are one RFC 8259 JSON text (whatever its numbers read as). Foundation's
    /// decoder is more lenient (trailing commas, for one), so every body and frame passes here
    /// before it may be decoded at all.
    public static func isValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { buffer in
            var p = Cursor(bytes: buffer, validating: true)
            p.skipWhitespace()
            guard p.value(depth: 0) != nil else { return false }
            p.skipWhitespace()
            return p.index == buffer.count
        }
    }

    struct Cursor {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0
        /// Accept every syntactically valid number (its value is not used).
        let validating: Bool

        init(bytes: UnsafeBufferPointer<UInt8>, validating: Bool = false) {
            self.bytes = bytes
            self.validating = validating
        }

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func literal(_ word: StaticString, _ value: JSONValue) -> JSONValue? {
            let n = word.utf8CodeUnitCount
            guard index + n <= bytes.count else { return nil }
            for i in 0..<n where bytes[index + i] != word.utf8Start[i] { return nil }
            index += n
            return value
        }

        mutating func value(depth: Int) -> JSONValue? {
            guard let c = current else { return nil }
            switch c {
            case UInt8(ascii: "{"): return object(depth: depth + 1)
            case UInt8(ascii: "["): return array(depth: depth + 1)
            case UInt8(ascii: "\""): return string().map(JSONValue.string)
            case UInt8(ascii: "t"): return literal("true", .bool(true))
            case UInt8(ascii: "f"): return literal("false", .bool(false))
            case UInt8(ascii: "n"): return literal("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number()
            default: return nil
            }
        }

        mutating func object(depth: Int) -> JSONValue? {
            guard depth <= JSONGuard.maxDepth else { return nil }
            index += 1
            var members: [String: JSONValue] = [:]
            skipWhitespace()
            if current == UInt8(ascii: "}") { index += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard current == UInt8(ascii: "\""), let key = string() else { return nil }
                skipWhitespace()
                guard current == UInt8(ascii: ":") else { return nil }
                index += 1
                skipWhitespace()
                guard let v = value(depth: depth) else { return nil }
                // A repeated key keeps its first value, as Foundation's decoder does.
                if members[key] == nil { members[key] = v }
                skipWhitespace()
                switch current {
                case UInt8(ascii: ","): index += 1
                case UInt8(ascii: "}"): index += 1; return .object(members)
                default: return nil
                }
            }
        }

        mutating func array(depth: Int) -> JSONValue? {
            guard depth <= JSONGuard.maxDepth else { return nil }
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if current == UInt8(ascii: "]") { index += 1; return .array(items) }
            while true {
                skipWhitespace()
                guard let v = value(depth: depth) else { return nil }
                items.append(v)
                skipWhitespace()
                switch current {
                case UInt8(ascii: ","): index += 1
                case UInt8(ascii: "]"): index += 1; return .array(items)
                default: return nil
                }
            }
        }

        /// A string at `index` (on its opening quote).
        mutating func string() -> String? {
            index += 1
            let start = index
            // Fast path: no escapes, so the bytes between the quotes are the string.
            while index < bytes.count {
                let b = bytes[index]
                if b == UInt8(ascii: "\"") {
                    let s = String(validating: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                    index += 1
                    return s
                }
                if b == UInt8(ascii: "\\") { break }
                if b < 0x20 { return nil }
                index += 1
            }
            guard index < bytes.count else { return nil }
            var out = Array(bytes[start..<index])
            while index < bytes.count {
                let b = bytes[index]
                switch b {
                case UInt8(ascii: "\""):
                    index += 1
                    return String(validating: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    index += 1
                    guard let e = current else { return nil }
                    index += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        guard var scalar = hex4() else { return nil }
                        if (0xD800..<0xDC00).contains(scalar) {
                            guard current == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else { return nil }
                            index += 2
                            guard let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00..<0xE000).contains(scalar) {
                            return nil
                        }
                        guard let u = Unicode.Scalar(scalar) else { return nil }
                        out.append(contentsOf: UTF8.encode(u)!)
                    default:
                        return nil
                    }
                default:
                    if b < 0x20 { return nil }
                    out.append(b)
                    index += 1
                }
            }
            return nil
        }

        mutating func hex4() -> UInt32? {
            guard index + 4 <= bytes.count else { return nil }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[index]
                let d: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = b - UInt8(ascii: "A") + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
                index += 1
            }
            return v
        }

        /// A number: an integer when it is written as one and fits Int64, else a double. Integral
        /// doubles of 1e15 and beyond written with a fraction or exponent are left to Foundation.
        mutating func number() -> JSONValue? {
            let start = index
            if current == UInt8(ascii: "-") { index += 1 }
            guard let first = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return nil }
            if first == UInt8(ascii: "0") {
                index += 1
            } else {
                while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
            }
            var integral = true
            if current == UInt8(ascii: ".") {
                integral = false
                index += 1
                guard digits() else { return nil }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                integral = false
                index += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
                guard digits() else { return nil }
            }
            if validating { return .null }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if integral, let i = Int64(text) { return .integer(i) }
            guard let d = Double(text), d.isFinite else { return nil }
            if !integral, d == d.rounded() {
                // Foundation reads an integral value written with a fraction or exponent
                // (`1.5e3`) as an integer; past 1e15 the two readings may differ, so let it decide.
                guard abs(d) < 1e15 else { return nil }
                return .integer(Int64(d))
            }
            return .number(d)
        }

        mutating func digits() -> Bool {
            let start = index
            while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
            return index > start
        }
    }
}

extension JSONValue {
    /// The object's members, or nil when this is not an object.
    public var objectMembers: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }

    /// Nil for JSON `null`, as an optional `Decodable` field reads it.
    public var nonNull: JSONValue? { self == .null ? nil : self }

    /// A string member: absent is `.some(nil)`; present but not a string is nil (a type error).
    public static func optionalString(_ value: JSONValue?) -> String?? {
        switch value {
        case nil, .null?: return .some(nil)
        case .string(let s)?: return .some(s)
        default: return nil
        }
    }
}
