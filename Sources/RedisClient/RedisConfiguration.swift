import NIOCore

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
    /// Command connections shared (pipelined) by all concurrent requests: by default one per
    /// core (at least 4), so that each event loop has one of its own (``RedisCommandClient``).
    public var poolSize = max(4, System.coreCount)

    public init(host: String, port: Int = 6379, database: Int = 0, username: String? = nil, password: String? = nil, tls: Bool = false) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
        self.tls = tls
    }

    /// The same credentials, TLS and timeouts, for another node (a cluster node, the primary
    /// Sentinel names).
    public func at(_ node: ClusterNodeAddress) -> RedisConfiguration {
        var c = self
        c.host = node.host
        c.port = node.port
        return c
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

/// Which Redis deployment a URL names (contract §10):
/// - `redis://` / `rediss://`: one server;
/// - `redis+cluster://h1:p1,h2:p2[,…]` / `rediss+cluster://…`: a Redis Cluster, given by any of
///   its nodes (no database number: a cluster has only database 0);
/// - `redis+sentinel://s1:p1,s2:p2[,…]/<master-name>[/db]` / `rediss+sentinel://…`: the primary
///   that Redis Sentinel names, followed across failovers. TLS (`rediss+`) then covers the
///   sentinels and the data nodes alike.
///
/// Credentials, `tls_ca_file`, `command_timeout_ms` and `connect_timeout_ms` apply to every node.
/// `sentinel_password=` (sentinel form only) authenticates to the sentinels when they have a
/// password of their own.
public enum RedisTopology: Sendable, Equatable {
    case single(RedisConfiguration)
    /// `template` holds credentials, TLS and timeouts; its host and port are the first seed's.
    case cluster(seeds: [ClusterNodeAddress], template: RedisConfiguration)
    case sentinel(sentinels: [ClusterNodeAddress], masterName: String, template: RedisConfiguration, sentinelPassword: String?)

    public init(url: String) throws(RedisError) {
        let schemes: [(String, String, Bool)] = [
            ("redis+cluster://", "redis://", false), ("rediss+cluster://", "rediss://", true),
            ("redis+sentinel://", "redis://", false), ("rediss+sentinel://", "rediss://", true),
        ]
        guard let (scheme, plain, _) = schemes.first(where: { url.hasPrefix($0.0) }) else {
            guard url.hasPrefix("redis://") || url.hasPrefix("rediss://") else {
                throw .invalidURL("must start with redis://, rediss://, redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://")
            }
            self = .single(try RedisConfiguration(url: url))
            return
        }
        var rest = Substring(url.dropFirst(scheme.count))
        var query = ""
        if let q = rest.firstIndex(of: "?") {
            query = String(rest[q...])
            rest = rest[..<q]
        }
        var sentinelPassword: String?
        if query.contains("sentinel_password=") {
            guard scheme.contains("sentinel") else { throw .invalidURL("sentinel_password is for redis+sentinel:// URLs") }
            var kept: [Substring] = []
            for pair in query.dropFirst().split(separator: "&") {
                if pair.hasPrefix("sentinel_password=") { sentinelPassword = String(pair.dropFirst("sentinel_password=".count)) } else { kept.append(pair) }
            }
            query = kept.isEmpty ? "" : "?" + kept.joined(separator: "&")
        }
        var auth = ""
        if let at = rest.lastIndex(of: "@") {
            auth = String(rest[...at])
            rest = rest[rest.index(after: at)...]
        }
        let hostList: Substring
        var path: [Substring] = []
        if let slash = rest.firstIndex(of: "/") {
            hostList = rest[..<slash]
            path = rest[rest.index(after: slash)...].split(separator: "/", omittingEmptySubsequences: false)
        } else {
            hostList = rest
        }
        let hosts = hostList.split(separator: ",", omittingEmptySubsequences: false)
        guard !hosts.isEmpty, hosts.allSatisfy({ !$0.isEmpty }) else { throw .invalidURL("list at least one host:port, separated by commas") }
        // Each host parses as a one-server URL with the shared credentials and options.
        var configurations: [RedisConfiguration] = []
        for host in hosts {
            configurations.append(try RedisConfiguration(url: plain + auth + host + query))
        }
        let addresses = configurations.map { ClusterNodeAddress(host: $0.host, port: $0.port) }
        if scheme.contains("cluster") {
            guard path.allSatisfy(\.isEmpty) else { throw .invalidURL("a cluster URL takes no path: Redis Cluster has only database 0") }
            self = .cluster(seeds: addresses, template: configurations[0])
        } else {
            guard let name = path.first, !name.isEmpty, path.count <= 2 else { throw .invalidURL("a sentinel URL ends with /<master-name>[/db]") }
            var template = configurations[0]
            if path.count == 2, !path[1].isEmpty {
                guard let db = Int(path[1]), db >= 0 else { throw .invalidURL("database must be a number") }
                template.database = db
            }
            self = .sentinel(sentinels: addresses, masterName: String(name), template: template, sentinelPassword: sentinelPassword)
        }
    }
}
