/// A validated channel name: 1-200 characters of `A-Z a-z 0-9 _ - : . @ =`.
///
/// `:` separates namespace segments (`orders:eu`); `*` is never part of a name, which keeps
/// capability patterns unambiguous.
public struct ChannelName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: String

    public init(validating raw: String) throws(RealtimeError) {
        guard Self.isValid(raw) else { throw .badChannelName(raw) }
        self.rawValue = raw
    }

    /// For names already validated (read back from an engine's own storage).
    public init(trusted raw: String) { self.rawValue = raw }

    public static func isValid(_ raw: String) -> Bool {
        let bytes = raw.utf8
        guard !bytes.isEmpty, bytes.count <= 200 else { return false }
        for b in bytes where !Self.allowed(b) { return false }
        return true
    }

    @inline(__always)
    static func allowed(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "."),
            UInt8(ascii: "@"), UInt8(ascii: "="):
            return true
        default:
            return false
        }
    }

    public var description: String { rawValue }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}
