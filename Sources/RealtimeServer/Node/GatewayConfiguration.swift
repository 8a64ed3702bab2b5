import RealtimeCore
import RedisClient

/// Everything a node is configured with (contract section 9). Each field is one environment
/// variable and one `realtime-gateway` flag; see ``GatewayConfiguration/settings``.
public struct GatewayConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// `redis://host:port[/db]`; nil selects the memory engine.
    public var redisURL: String?
    /// The bootstrap API key (all scopes). Generated at start when not configured.
    public var apiKey: String?
    /// Signing secrets, the first signs; at least one, each at least 32 bytes.
    public var tokenSecrets: [TokenSecret] = []
    public var nodeID = ""
    /// Base URL clients use; the token response's `endpoint` derives from it.
    public var publicURL: String?
    public var keyPrefix = "rt"
    public var logLevel = "info"
    /// Publishes answered from the connection's pipeline (``PublishFastPath``); off sends them
    /// through the router like every other request (the same answers, slower: for comparison).
    public var publishFastPath = true

    public var limits = Limits()
    public var engine = EngineConfiguration()
    public var timing = Timing()
    /// TLS on the node's listener (HTTPS and WSS); nil serves plain HTTP.
    public var tls: TLSSettings?

    /// The listener's certificate, key and optional client CA (PEM files), re-read on SIGHUP.
    public struct TLSSettings: Sendable, Equatable {
        public var certificateFile: String
        public var keyFile: String
        /// With it, REST requests must present a client certificate it signed (mutual TLS).
        public var clientCAFile: String?
        /// "1.2" (default) or "1.3".
        public var minimumVersion = "1.2"

        public init(certificateFile: String, keyFile: String, clientCAFile: String? = nil, minimumVersion: String = "1.2") {
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.clientCAFile = clientCAFile
            self.minimumVersion = minimumVersion
        }
    }

    /// Bounds on what clients may send and hold.
    public struct Limits: Sendable {
        /// Size of `data` (compact JSON) plus `event` of one message.
        public var maxMessageBytes = 65_536
        public var maxPresenceDataBytes = 1024
        public var maxBatchSize = 1000
        /// Largest REST request body; batch requests need room for many messages.
        public var maxRequestBytes = 16 * 1024 * 1024
        public var maxHistoryLimit = 1000
        /// Events buffered for one subscriber while it resumes (and for one channel while the
        /// node catches up after an engine outage) before it counts as a slow consumer.
        public var outboundQueueFrames = 4096
        /// Bytes one connection may have written and not yet sent (pushes, replies, replays,
        /// pongs) before it is closed as a slow consumer (4008).
        public var outboundQueueBytes = 4 * 1024 * 1024
        public var maxConnections = 10_000
        /// Connections that arrived without a token and have not sent one yet (contract §10).
        public var maxUnauthenticatedConnections = 1000
        public var maxSubscriptionsPerConnection = 1000
        /// Channels one connection may be present on at once.
        public var maxPresencePerConnection = 100
        /// Publishes per second per WebSocket connection (bursts up to twice that).
        public var connectionPublishRate = 100
        /// Publishes per second per API key over REST (bursts up to twice that).
        public var keyPublishRate = 50_000

        public init() {}

        /// The largest inbound WebSocket message accepted before closing with 4009: a message
        /// plus room for the envelope around it.
        public var maxInboundFrameBytes: Int { maxMessageBytes + 16 * 1024 }
    }

    public struct Timing: Sendable {
        /// WebSocket ping period; a peer that misses two is dropped.
        public var heartbeatSeconds = 25
        public var presenceHeartbeatSeconds = 10
        /// A new HTTP connection's first request head must arrive within this.
        public var httpHeadReadTimeoutSeconds = 10
        /// Kept-alive HTTP connections idle this long are closed.
        public var httpIdleTimeoutSeconds = 60
        /// Time allowed for the first `auth` frame when no token is in the URL.
        public var authTimeoutSeconds = 10
        /// `token_expiring` is pushed this long before a connection's token expires.
        public var tokenExpiryWarningSeconds = 30
        /// Bound on graceful shutdown.
        public var shutdownTimeoutSeconds = 10
        /// The least time between two flush passes of one event loop's subscriber sockets (0:
        /// flush as soon as the loop is free).
        public var flushGapMicroseconds = 1000

        public init() {}
    }

    public init() {}

    /// The TLS settings as given, before they are checked together.
    var tlsDraft = TLSDraft()

    struct TLSDraft: Sendable {
        var certificateFile: String?
        var keyFile: String?
        var clientCAFile: String?
        var minimumVersion: String?

        func settings() throws(ConfigurationError) -> TLSSettings? {
            switch (certificateFile, keyFile) {
            case (nil, nil):
                if clientCAFile != nil {
                    throw ConfigurationError(setting: "REALTIME_TLS_CLIENT_CA_FILE", problem: "needs REALTIME_TLS_CERT_FILE and REALTIME_TLS_KEY_FILE")
                }
                if minimumVersion != nil {
                    throw ConfigurationError(setting: "REALTIME_TLS_MIN_VERSION", problem: "needs REALTIME_TLS_CERT_FILE and REALTIME_TLS_KEY_FILE")
                }
                return nil
            case (nil, _?):
                throw ConfigurationError(setting: "REALTIME_TLS_CERT_FILE", problem: "required with REALTIME_TLS_KEY_FILE")
            case (_?, nil):
                throw ConfigurationError(setting: "REALTIME_TLS_KEY_FILE", problem: "required with REALTIME_TLS_CERT_FILE")
            case (let cert?, let key?):
                return TLSSettings(certificateFile: cert, keyFile: key, clientCAFile: clientCAFile, minimumVersion: minimumVersion ?? "1.2")
            }
        }
    }

    /// The WebSocket URL clients connect to.
    public var webSocketEndpoint: String { webSocketEndpoint(requestHost: nil) }

    /// The WebSocket URL clients connect to: from `REALTIME_PUBLIC_URL`, else from the host the
    /// request was addressed to (what the client and any proxy in front used), else host:port.
    public func webSocketEndpoint(requestHost: String?) -> String {
        let hostHeader = requestHost.flatMap { h -> String? in
            h.isEmpty || h.contains(where: { $0 == "/" || $0 == " " || $0 == "@" }) ? nil : h
        }
        let scheme = tls == nil ? "http" : "https"
        var base = publicURL ?? hostHeader.map { "\(scheme)://\($0)" } ?? "\(scheme)://\(host):\(port)"
        while base.hasSuffix("/") { base.removeLast() }
        if base.hasPrefix("https://") {
            base = "wss://" + base.dropFirst("https://".count)
        } else if base.hasPrefix("http://") {
            base = "ws://" + base.dropFirst("http://".count)
        }
        return base + "/v1/realtime/ws"
    }
}

/// A configuration problem, naming the setting; the node refuses to start.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public init(setting: String, problem: String) {
        self.setting = setting
        self.problem = problem
    }

    public var setting: String
    public var problem: String
    public var description: String { "invalid setting \(setting): \(problem)" }
}

extension GatewayConfiguration {
    /// One setting: its environment variable, its flag and how it applies.
    public struct Setting: Sendable {
        public let variable: String
        public let help: String
        let apply: @Sendable (inout GatewayConfiguration, String) throws(ConfigurationError) -> Void

        /// `REALTIME_MAX_MESSAGE_BYTES` -> `max-message-bytes`.
        public var flag: String {
            String(variable.dropFirst("REALTIME_".count)).lowercased().replacingOccurrences(of: "_", with: "-")
        }
    }

    static func int(_ variable: String, _ help: String, min: Int, max: Int = Int.max, _ path: any WritableKeyPath<GatewayConfiguration, Int> & Sendable) -> Setting {
        Setting(variable: variable, help: help) { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard let n = Int(v), n >= min, n <= max else {
                throw ConfigurationError(setting: variable, problem: "'\(v)' is not a whole number from \(min) to \(max)")
            }
            c[keyPath: path] = n
        }
    }

    static func string(_ variable: String, _ help: String, _ path: any WritableKeyPath<GatewayConfiguration, String?> & Sendable) -> Setting {
        Setting(variable: variable, help: help) { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            c[keyPath: path] = v.isEmpty ? nil : v
        }
    }

    /// Every setting, in the order the docs list them.
    public static let settings: [Setting] = [
        Setting(variable: "REALTIME_HOST", help: "listen address (default 127.0.0.1)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard !v.isEmpty else { throw ConfigurationError(setting: "REALTIME_HOST", problem: "empty") }
            c.host = v
        },
        int("REALTIME_PORT", "listen port, 0 picks a free one (default 8080)", min: 0, max: 65535, \.port),
        string("REALTIME_REDIS_URL", "redis://host:port[/db], redis+cluster://h:p,h:p, redis+sentinel://h:p,h:p/<master>[/db] (rediss… for TLS); unset = memory engine", \.redisURL),
        Setting(variable: "REALTIME_API_KEY", help: "bootstrap API key with all scopes (default: generated, printed once)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard v.utf8.count >= 16 else { throw ConfigurationError(setting: "REALTIME_API_KEY", problem: "at least 16 characters") }
            c.apiKey = v
        },
        Setting(variable: "REALTIME_TOKEN_SECRET", help: "HS256 token secret, at least 32 bytes (default: generated)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard v.utf8.count >= 32 else { throw ConfigurationError(setting: "REALTIME_TOKEN_SECRET", problem: "must be at least 32 bytes") }
            c.tokenSecrets = [TokenSecret(id: "default", secret: v)]
        },
        Setting(variable: "REALTIME_TOKEN_SECRETS", help: "rotation: 'kid=secret,kid=secret', the first signs") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            var secrets: [TokenSecret] = []
            for part in v.split(separator: ",") {
                guard let eq = part.firstIndex(of: "="), eq != part.startIndex else {
                    throw ConfigurationError(setting: "REALTIME_TOKEN_SECRETS", problem: "each entry must be kid=secret")
                }
                let secret = String(part[part.index(after: eq)...])
                guard secret.utf8.count >= 32 else {
                    throw ConfigurationError(setting: "REALTIME_TOKEN_SECRETS", problem: "secret '\(part[..<eq])' must be at least 32 bytes")
                }
                secrets.append(TokenSecret(id: String(part[..<eq]), secret: secret))
            }
            guard !secrets.isEmpty else { throw ConfigurationError(setting: "REALTIME_TOKEN_SECRETS", problem: "no secret given") }
            c.tokenSecrets = secrets
        },
        Setting(variable: "REALTIME_NODE_ID", help: "this node's id (default: host name + random suffix)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            c.nodeID = v
        },
        Setting(variable: "REALTIME_PUBLIC_URL", help: "base URL clients use (default http://HOST:PORT)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard v.hasPrefix("http://") || v.hasPrefix("https://") else {
                throw ConfigurationError(setting: "REALTIME_PUBLIC_URL", problem: "must start with http:// or https://")
            }
            c.publicURL = v
        },
        Setting(variable: "REALTIME_KEY_PREFIX", help: "Redis key prefix (default rt)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard !v.isEmpty, !v.contains(where: { $0 == " " || $0 == "{" || $0 == "}" }) else {
                throw ConfigurationError(setting: "REALTIME_KEY_PREFIX", problem: "non-empty, without spaces or braces")
            }
            c.keyPrefix = v
        },
        int("REALTIME_MAX_MESSAGE_BYTES", "largest message: data JSON plus event (default 65536)", min: 16, max: 16 * 1024 * 1024, \.limits.maxMessageBytes),
        int("REALTIME_MAX_PRESENCE_DATA_BYTES", "largest presence data (default 1024)", min: 0, max: 1024 * 1024, \.limits.maxPresenceDataBytes),
        int("REALTIME_MAX_BATCH_SIZE", "messages per batch publish (default 1000)", min: 1, max: 100_000, \.limits.maxBatchSize),
        int("REALTIME_MAX_REQUEST_BYTES", "largest REST body (default 16777216)", min: 1024, \.limits.maxRequestBytes),
        int("REALTIME_MAX_HISTORY_LIMIT", "largest history page (default 1000)", min: 1, max: 100_000, \.limits.maxHistoryLimit),
        int("REALTIME_OUTBOUND_QUEUE_FRAMES", "frames queued per connection before 4008 (default 4096)", min: 1, \.limits.outboundQueueFrames),
        int("REALTIME_MAX_CONNECTIONS", "WebSocket connections per node (default 10000)", min: 1, \.limits.maxConnections),
        int("REALTIME_MAX_SUBSCRIPTIONS", "channels per connection (default 1000)", min: 1, \.limits.maxSubscriptionsPerConnection),
        int("REALTIME_HTTP_HEAD_TIMEOUT_SECONDS", "a request head must arrive within this of its first byte, or of the connection opening (default 10)", min: 1, \.timing.httpHeadReadTimeoutSeconds),
        int("REALTIME_HTTP_IDLE_TIMEOUT_SECONDS", "idle keep-alive connections closed after (default 60)", min: 1, \.timing.httpIdleTimeoutSeconds),
        int("REALTIME_OUTBOUND_QUEUE_BYTES", "outbound budget per connection in bytes (default 4194304)", min: 65_536, \.limits.outboundQueueBytes),
        int("REALTIME_MAX_UNAUTHENTICATED", "WebSocket connections waiting for their auth frame (default 1000)", min: 1, \.limits.maxUnauthenticatedConnections),
        int("REALTIME_MAX_PRESENCE_PER_CONNECTION", "presence memberships per connection (default 100)", min: 1, \.limits.maxPresencePerConnection),
        int("REALTIME_CONNECTION_PUBLISH_RATE", "publishes/s per connection (default 100)", min: 1, \.limits.connectionPublishRate),
        int("REALTIME_KEY_PUBLISH_RATE", "REST publishes/s per API key (default 50000)", min: 1, \.limits.keyPublishRate),
        int("REALTIME_HEARTBEAT_SECONDS", "WebSocket ping period (default 25)", min: 1, max: 3600, \.timing.heartbeatSeconds),
        int("REALTIME_PRESENCE_HEARTBEAT_SECONDS", "presence refresh period (default 10)", min: 1, max: 3600, \.timing.presenceHeartbeatSeconds),
        int("REALTIME_PRESENCE_TTL_SECONDS", "presence expiry without heartbeat (default 30)", min: 2, max: 86_400, \.engine.presenceTTLSeconds),
        int("REALTIME_IDEMPOTENCY_WINDOW_SECONDS", "idempotency key window (default 86400)", min: 1, \.engine.idempotencyWindowSeconds),
        int("REALTIME_HISTORY_SIZE", "default history_size of a channel (default 1000)", min: 0, \.engine.channelDefaults.historySize),
        int("REALTIME_HISTORY_TTL_SECONDS", "default history_ttl_seconds (default 86400)", min: 1, \.engine.channelDefaults.historyTTLSeconds),
        int("REALTIME_MAX_HISTORY_SIZE", "largest history_size accepted (default 100000)", min: 1, \.engine.channelDefaults.maxHistorySize),
        int("REALTIME_MAX_HISTORY_TTL_SECONDS", "largest history_ttl_seconds accepted (default 31536000, one year)", min: 1, \.engine.channelDefaults.maxHistoryTTLSeconds),
        Setting(variable: "REALTIME_DEFAULT_CHANNEL_TYPE", help: "type of channels never created (default private)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard let t = ChannelType(rawValue: v) else {
                throw ConfigurationError(setting: "REALTIME_DEFAULT_CHANNEL_TYPE", problem: "one of public, private, presence")
            }
            c.engine.channelDefaults.type = t
        },
        int("REALTIME_AUTH_TIMEOUT_SECONDS", "time for the first auth frame (default 10)", min: 1, max: 600, \.timing.authTimeoutSeconds),
        int("REALTIME_TOKEN_EXPIRY_WARNING_SECONDS", "token_expiring lead time (default 30)", min: 1, max: 3600, \.timing.tokenExpiryWarningSeconds),
        int("REALTIME_SHUTDOWN_TIMEOUT_SECONDS", "bound on graceful shutdown (default 10)", min: 1, max: 600, \.timing.shutdownTimeoutSeconds),
        int(
            "REALTIME_FLUSH_GAP_MICROSECONDS", "least time between two flushes of one event loop's subscriber sockets, 0 = at once (default 1000)",
            min: 0, max: 100_000, \.timing.flushGapMicroseconds),
        Setting(variable: "REALTIME_TLS_CERT_FILE", help: "PEM certificate (with its chain) to serve HTTPS and WSS; needs REALTIME_TLS_KEY_FILE") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            c.tlsDraft.certificateFile = v
        },
        Setting(variable: "REALTIME_TLS_KEY_FILE", help: "PEM private key of REALTIME_TLS_CERT_FILE") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            c.tlsDraft.keyFile = v
        },
        Setting(variable: "REALTIME_TLS_CLIENT_CA_FILE", help: "PEM CA: REST requests must present a client certificate it signed (mutual TLS)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            c.tlsDraft.clientCAFile = v
        },
        Setting(variable: "REALTIME_TLS_MIN_VERSION", help: "lowest TLS version accepted: 1.2 or 1.3 (default 1.2)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard v == "1.2" || v == "1.3" else { throw ConfigurationError(setting: "REALTIME_TLS_MIN_VERSION", problem: "1.2 or 1.3") }
            c.tlsDraft.minimumVersion = v
        },
        Setting(variable: "REALTIME_PUBLISH_FAST_PATH", help: "serve REST publishes below the router: on or off (default on; off only to compare)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard v == "on" || v == "off" else { throw ConfigurationError(setting: "REALTIME_PUBLISH_FAST_PATH", problem: "on or off") }
            c.publishFastPath = v == "on"
        },
        Setting(variable: "REALTIME_LOG_LEVEL", help: "trace, debug, info, notice, warning, error, critical (default info)") { (c: inout GatewayConfiguration, v: String) throws(ConfigurationError) in
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(v) else {
                throw ConfigurationError(setting: "REALTIME_LOG_LEVEL", problem: "one of trace, debug, info, notice, warning, error, critical")
            }
            c.logLevel = v
        },
    ]

    /// Builds a configuration from settings given by variable name (environment, then flags over it).
    /// Unknown `REALTIME_*` variables are refused so a typo cannot pass silently.
    public static func load(_ values: [String: String]) throws(ConfigurationError) -> GatewayConfiguration {
        var config = GatewayConfiguration()
        let known = Dictionary(uniqueKeysWithValues: settings.map { ($0.variable, $0) })
        for name in values.keys.sorted() where name.hasPrefix("REALTIME_") {
            guard let setting = known[name] else {
                throw ConfigurationError(setting: name, problem: "unknown setting")
            }
            try setting.apply(&config, values[name]!)
        }
        if let url = config.redisURL {
            let schemes = ["redis://", "rediss://", "redis+cluster://", "rediss+cluster://", "redis+sentinel://", "rediss+sentinel://"]
            guard schemes.contains(where: { url.hasPrefix($0) }) else {
                throw ConfigurationError(
                    setting: "REALTIME_REDIS_URL",
                    problem: "must look like redis://host:port[/db], redis+cluster://host:port,host:port or redis+sentinel://host:port,host:port/<master-name>[/db]")
            }
            do {
                _ = try RedisTopology(url: url)
            } catch {
                throw ConfigurationError(setting: "REALTIME_REDIS_URL", problem: "\(error)")
            }
            guard !config.tokenSecrets.isEmpty else {
                throw ConfigurationError(setting: "REALTIME_TOKEN_SECRET", problem: "required with the redis engine (all nodes must share it)")
            }
        }
        config.tls = try config.tlsDraft.settings()
        guard config.timing.presenceHeartbeatSeconds < config.engine.presenceTTLSeconds else {
            throw ConfigurationError(setting: "REALTIME_PRESENCE_HEARTBEAT_SECONDS", problem: "must be shorter than REALTIME_PRESENCE_TTL_SECONDS")
        }
        return config
    }
}

extension GatewayConfiguration {
    /// Environment `REALTIME_*` variables overlaid with `--flag value` / `--flag=value` arguments.
    public static func values(environment: [String: String], flags: [String]) throws(ConfigurationError) -> [String: String] {
        var values = environment.filter { $0.key.hasPrefix("REALTIME_") }
        let byFlag = Dictionary(uniqueKeysWithValues: settings.map { ($0.flag, $0.variable) })
        var i = 0
        while i < flags.count {
            let arg = flags[i]
            guard arg.hasPrefix("--") else { throw ConfigurationError(setting: arg, problem: "expected a --flag") }
            var name = String(arg.dropFirst(2))
            let value: String
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            } else {
                guard i + 1 < flags.count else { throw ConfigurationError(setting: "--\(name)", problem: "missing value") }
                i += 1
                value = flags[i]
            }
            guard let variable = byFlag[name] else { throw ConfigurationError(setting: "--\(name)", problem: "unknown flag") }
            values[variable] = value
            i += 1
        }
        return values
    }
}
