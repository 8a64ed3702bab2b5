/// An operation a token may be granted on a channel.
public enum ChannelOperation: String, Sendable, Hashable, CaseIterable, Codable {
    case subscribe, publish, presence, history
}

/// A capability map key: an exact channel name, `prefix:*`, or `*`.
public enum ChannelPattern: Hashable, Sendable, CustomStringConvertible {
    case all
    /// Matches any channel whose name starts with the stored prefix (which ends in `:`).
    case prefix(String)
    case exact(String)

    public init(parsing raw: String) throws(RealtimeError) {
        if raw == "*" {
            self = .all
        } else if raw.hasSuffix(":*") {
            let prefix = String(raw.dropLast())
            guard ChannelName.isValid(String(prefix.dropLast())) else {
                throw .badRequest("invalid channel pattern '\(raw)': use a name, 'prefix:*' or '*'")
            }
            self = .prefix(prefix)
        } else {
            guard ChannelName.isValid(raw) else {
                throw .badRequest("invalid channel pattern '\(raw)': use a name, 'prefix:*' or '*'")
            }
            self = .exact(raw)
        }
    }

    public func matches(_ channel: ChannelName) -> Bool {
        switch self {
        case .all: return true
        case .prefix(let p): return channel.rawValue.hasPrefix(p)
        case .exact(let n): return channel.rawValue == n
        }
    }

    public var description: String {
        switch self {
        case .all: return "*"
        case .prefix(let p): return p + "*"
        case .exact(let n): return n
        }
    }
}

/// A token's capability map: channel pattern -> granted operations.
///
/// Grants are additive: an operation is allowed when any matching pattern grants it.
public struct Capabilities: Sendable, Equatable {
    public private(set) var grants: [ChannelPattern: Set<ChannelOperation>]

    public init() { self.grants = [:] }

    /// Parses the wire form `{"pattern": ["op", ...]}`; `"*"` as an operation grants all four.
    public init(wire: [String: [String]]) throws(RealtimeError) {
        self.grants = [:]
        for (pattern, ops) in wire {
            let p = try ChannelPattern(parsing: pattern)
            var set = Set<ChannelOperation>()
            for op in ops {
                if op == "*" {
                    set.formUnion(ChannelOperation.allCases)
                } else if let o = ChannelOperation(rawValue: op) {
                    set.insert(o)
                } else {
                    throw .badRequest("invalid operation '\(op)' for pattern '\(pattern)': use subscribe, publish, presence, history or *")
                }
            }
            grants[p, default: []].formUnion(set)
        }
    }

    public mutating func grant(_ ops: some Sequence<ChannelOperation>, on pattern: ChannelPattern) {
        grants[pattern, default: []].formUnion(ops)
    }

    public func merging(_ other: Capabilities) -> Capabilities {
        var result = self
        for (p, ops) in other.grants { result.grant(ops, on: p) }
        return result
    }

    public func allows(_ op: ChannelOperation, on channel: ChannelName) -> Bool {
        for (pattern, ops) in grants where ops.contains(op) && pattern.matches(channel) { return true }
        return false
    }

    /// The wire form; a pattern granted every operation is written as `["*"]`.
    public var wire: [String: [String]] {
        var out: [String: [String]] = [:]
        for (p, ops) in grants {
            out[p.description] = ops.count == ChannelOperation.allCases.count ? ["*"] : ops.map(\.rawValue).sorted()
        }
        return out
    }
}
