/// Where and how to connect: parsed from `redis://[user:password@]host[:port][/db]` or
/// `rediss://...` (TLS, verified against the system's trust roots, or against the PEM file
/// named by a `?tls_ca_file=/path` query for a private CA).
public struct RedisConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var database: Int
    public var username: String?
    public var password: String?
    public var tls: Bool
    /// PEM file of the CA to trust for `rediss://` instead of the system's roots.
    public var tlsCAFile: String?
    /// A command without a reply in this time fails and its connection is closed.
    public var commandTimeout: Duration = .seconds(5)
    public var connectTimeout: Duration = .seconds(3)
    /// Command connections shared (pipelined) by all concurrent requests.
    public var poolSize = 4

    public init(host: String, port: Int = 6379, database: Int = 0, username: String? = nil, password: String? = nil, tls: Bool = false) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
        self.tls = tls
    }

    public init(url: String) throws(RedisError) {
        var rest: Substring
        let tls: Bool
        if url.hasPrefix("redis://") {
            rest = url.dropFirst("redis://".count)
            tls = false
        } else if url.hasPrefix("rediss://") {
            rest = url.dropFirst("rediss://".count)
            tls = true
        } else {
            throw .invalidURL("must start with redis:// or rediss://")
        }
        var caFile: String?
        var commandTimeout: Duration?
        var connectTimeout: Duration?
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2 else { throw .invalidURL("unknown parameter '\(pair)'") }
                switch kv[0] {
                case "tls_ca_file": caFile = String(kv[1])
                case "command_timeout_ms", "connect_timeout_ms":
                    guard let ms = Int(kv[1]), (1...3_600_000).contains(ms) else { throw .invalidURL("\(kv[0]) must be 1-3600000") }
                    if kv[0] == "command_timeout_ms" { commandTimeout = .milliseconds(ms) } else { connectTimeout = .milliseconds(ms) }
                default: throw .invalidURL("unknown parameter '\(pair)'")
                }
            }
            rest = rest[..<q]
        }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let auth = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = auth.firstIndex(of: ":") {
                username = auth[..<colon].isEmpty ? nil : String(auth[..<colon])
                password = String(auth[auth.index(after: colon)...])
            } else {
                password = String(auth)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else { throw .invalidURL("database must be a number") }
                database = n
            }
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else { throw .invalidURL("bad port") }
            port = p
            host = String(rest[..<colon])
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw .invalidURL("missing host") }
        self.init(host: host, port: port, database: database, username: username, password: password, tls: tls)
        self.tlsCAFile = caFile
        if let commandTimeout { self.commandTimeout = commandTimeout }
        if let connectTimeout { self.connectTimeout = connectTimeout }
    }
}
