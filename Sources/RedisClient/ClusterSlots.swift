/// Redis Cluster addressing, without I/O: the hash slot of a key, the slot map a node reports
/// (`CLUSTER SLOTS`), and the redirections a node answers with (`MOVED`, `ASK`). The groundwork
/// of the cluster client (issue 13); see docs/redis-keys.md for how keys are slotted.
public enum HashSlot {
    public static let count = 16384

    /// The slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the part between the
    /// first `{` and the next `}`, when not empty), modulo 16384.
    public static func of(_ key: String) -> Int {
        let bytes = Array(key.utf8)
        var hashed = bytes[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            hashed = bytes[(open + 1)..<close]
        }
        return Int(crc16(hashed) % UInt16(count))
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as Redis Cluster uses.
    public static func crc16(_ bytes: some Collection<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }
}

/// A cluster node's address.
public struct ClusterNodeAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// Which primary (and replicas) serve each slot.
public struct SlotMap: Sendable, Equatable {
    public struct Range: Sendable, Equatable {
        public var slots: ClosedRange<Int>
        public var primary: ClusterNodeAddress
        public var replicas: [ClusterNodeAddress]
    }

    public private(set) var ranges: [Range]

    public init(ranges: [Range]) { self.ranges = ranges.sorted { $0.slots.lowerBound < $1.slots.lowerBound } }

    /// The primary serving `slot`, or nil when no range covers it (the cluster is incomplete).
    public func primary(forSlot slot: Int) -> ClusterNodeAddress? {
        var low = 0
        var high = ranges.count - 1
        while low <= high {
            let mid = (low + high) / 2
            let range = ranges[mid].slots
            if slot < range.lowerBound { high = mid - 1 } else if slot > range.upperBound { low = mid + 1 } else { return ranges[mid].primary }
        }
        return nil
    }

    /// The distinct primaries, in slot order.
    public var primaries: [ClusterNodeAddress] {
        var seen: Set<ClusterNodeAddress> = []
        return ranges.map(\.primary).filter { seen.insert($0).inserted }
    }

    /// Whether every one of the 16384 slots is served.
    public var coversEverySlot: Bool {
        var next = 0
        for range in ranges {
            guard range.slots.lowerBound == next else { return false }
            next = range.slots.upperBound + 1
        }
        return next == HashSlot.count
    }

    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id?], replica...], ...]`. An
    /// empty host means the node that answered (`answeredBy`).
    public static func parse(clusterSlots reply: RESPValue, answeredBy: ClusterNodeAddress) throws(RedisError) -> SlotMap {
        guard let entries = reply.array else { throw .protocolError("CLUSTER SLOTS: not an array: \(reply)") }
        var ranges: [Range] = []
        for entry in entries {
            guard let fields = entry.array, fields.count >= 3, let start = fields[0].int, let end = fields[1].int,
                0 <= start, start <= end, end < HashSlot.count
            else { throw .protocolError("CLUSTER SLOTS: bad entry \(entry)") }
            let nodes = try fields[2...].map { value throws(RedisError) in try node(value, answeredBy: answeredBy) }
            // Nodes list replicas in no fixed order: sorted, equal maps compare equal.
            let replicas = nodes.dropFirst().sorted { ($0.host, $0.port) < ($1.host, $1.port) }
            ranges.append(Range(slots: Int(start)...Int(end), primary: nodes[0], replicas: replicas))
        }
        return SlotMap(ranges: ranges)
    }

    private static func node(_ value: RESPValue, answeredBy: ClusterNodeAddress) throws(RedisError) -> ClusterNodeAddress {
        guard let fields = value.array, fields.count >= 2, let host = fields[0].string, let port = fields[1].int, (1...65535).contains(port)
        else { throw .protocolError("CLUSTER SLOTS: bad node \(value)") }
        return ClusterNodeAddress(host: host.isEmpty ? answeredBy.host : host, port: Int(port))
    }
}

/// A cluster node's answer that a key lives elsewhere: `MOVED` (the slot has moved: update the
/// map) or `ASK` (the slot is migrating: ask the target once, after `ASKING`).
public enum ClusterRedirection: Sendable, Equatable {
    case moved(slot: Int, to: ClusterNodeAddress)
    case ask(slot: Int, to: ClusterNodeAddress)

    /// Parses an error reply such as `MOVED 3999 127.0.0.1:6381`; nil for any other error.
    public init?(errorMessage: String) {
        let parts = errorMessage.split(separator: " ")
        guard parts.count == 3, let slot = Int(parts[1]), (0..<HashSlot.count).contains(slot),
            let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        let address = ClusterNodeAddress(host: String(parts[2][..<colon]), port: port)
        switch parts[0] {
        case "MOVED": self = .moved(slot: slot, to: address)
        case "ASK": self = .ask(slot: slot, to: address)
        default: return nil
        }
    }
}
