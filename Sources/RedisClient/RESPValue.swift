import NIOCore

/// A RESP2 reply.
public enum RESPValue: Sendable, Equatable, CustomStringConvertible {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    case bulkString(ByteBuffer)
    case null
    case array([RESPValue])

    public var string: String? {
        switch self {
        case .simpleString(let s): return s
        case .bulkString(let b): return String(buffer: b)
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulkString(let b): return Int64(String(buffer: b))
        case .simpleString(let s): return Int64(s)
        default: return nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var isNull: Bool { self == .null }

    public var description: String {
        switch self {
        case .simpleString(let s): return "+\(s)"
        case .error(let e): return "-\(e)"
        case .integer(let i): return ":\(i)"
        case .bulkString(let b): return "\"\(String(buffer: b))\""
        case .null: return "(nil)"
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// Errors from the Redis client. `connection` errors mean the command may not have run.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Redis answered with an error reply.
    case server(String)
    /// No connection could be made: the command was not sent.
    case connection(String)
    /// The command was sent, then the connection dropped before its reply: it may have run.
    case connectionLost(String)
    /// No reply within the command timeout; the connection was closed.
    case timeout
    /// The reply stream was not valid RESP.
    case protocolError(String)
    case invalidURL(String)
    /// A cluster command whose keys are in different slots: refused before it was sent.
    case crossSlot(String)
    /// A script ran, then the command sent after it on the same connection (`WAIT`) failed:
    /// the script's writes stand; what the follow-up was to confirm is unknown.
    case followUpFailed(String)

    /// An error reply by which Redis refused to run a command for a passing reason: it is
    /// loading its data (`LOADING`), another client's script runs long (`BUSY`), it is a replica
    /// (`READONLY`), cut off from its primary (`MASTERDOWN`), cannot persist (`MISCONF`), is out
    /// of memory (`OOM`), lacks replicas (`NOREPLICAS`), or its cluster is reconfiguring
    /// (`CLUSTERDOWN`, `TRYAGAIN`). Nothing ran: a script gets these before its first write
    /// (Redis checks a script's writes only until its first one succeeds), so a retry is safe.
    public var isTransientRefusal: Bool {
        guard case .server(let message) = self else { return false }
        return Self.transientRefusals.contains(message.prefix { $0 != " " })
    }

    static let transientRefusals: Set<Substring> = [
        "LOADING", "BUSY", "READONLY", "MASTERDOWN", "MISCONF", "OOM", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN",
    ]

    public var description: String {
        switch self {
        case .server(let m): return "redis error: \(m)"
        case .connection(let m): return "redis connection: \(m)"
        case .connectionLost(let m): return "redis connection lost before the reply: \(m)"
        case .timeout: return "redis command timed out"
        case .protocolError(let m): return "redis protocol error: \(m)"
        case .invalidURL(let m): return "invalid redis URL: \(m)"
        case .crossSlot(let m): return "redis cluster: \(m)"
        case .followUpFailed(let m): return "redis: the script ran, the command after it failed: \(m)"
        }
    }
}
