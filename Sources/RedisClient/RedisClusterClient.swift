import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Commands to a Redis Cluster: each command goes to the primary that serves its key's slot,
/// over that primary's own pool of pipelined connections (a ``RedisCommandClient`` each).
///
/// - The slot map comes from `CLUSTER SLOTS`, asked of any known node (the seeds first).
/// - `MOVED` updates the map for that slot, schedules a full refresh and retries there; `ASK`
///   retries once on the importing node after `ASKING`; `TRYAGAIN` (a multi-key command during
///   a migration: refused, not run) retries every 50 ms for up to 2 s. At most five hops per
///   command.
/// - A command whose keys span slots is refused before it is sent (`RedisError.crossSlot`).
/// - A node that cannot be reached makes the client refresh the map (at most every 200 ms) and
///   try again once if the slot's primary changed: a replica promoted by a failover.
/// - Scripts are loaded per node on `NOSCRIPT`, as on one server.
public final class RedisClusterClient: RedisCommandSending {
    public let template: RedisConfiguration
    let seeds: [ClusterNodeAddress]
    let group: any EventLoopGroup
    let logger: Logger
    let state = Mutex(State())

    struct State {
        var map: SlotMap?
        var pools: [ClusterNodeAddress: RedisCommandClient] = [:]
        var refreshing: Task<SlotMap, any Error>?
        var refreshedAt = ContinuousClock.now - .seconds(60)
        /// Bumped whenever the map changes: subscribers compare it to move their channels.
        var version = 0
    }

    public init(seeds: [ClusterNodeAddress], template: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.seeds = seeds
        self.template = template
        self.group = group
        self.logger = logger
    }

    /// The configuration of one node: the template's credentials, TLS and timeouts.
    public func configuration(for node: ClusterNodeAddress) -> RedisConfiguration { template.at(node) }

    // MARK: The slot map

    /// The current map and its version, reading it first if there is none yet.
    public func slotMap() async throws -> (map: SlotMap, version: Int) {
        if let known = state.withLock({ s in s.map.map { ($0, s.version) } }) { return known }
        _ = try await refresh()
        guard let known = state.withLock({ s in s.map.map { ($0, s.version) } }) else { throw RedisError.connection("no cluster slot map") }
        return known
    }

    /// The map's version (0 before the first read).
    public var mapVersion: Int { state.withLock { $0.version } }

    /// Reads the map again (one read at a time; callers arriving meanwhile share it).
    @discardableResult
    public func refresh() async throws -> SlotMap {
        let task = state.withLock { s -> Task<SlotMap, any Error> in
            if let running = s.refreshing { return running }
            let candidates = (s.map?.ranges.flatMap { [$0.primary] + $0.replicas } ?? []) + seeds
            let task = Task { try await self.readMap(from: candidates) }
            s.refreshing = task
            return task
        }
        do {
            let map = try await task.value
            install(map)
            return map
        } catch {
            state.withLock { s in
                s.refreshing = nil
                s.refreshedAt = .now
            }
            throw error
        }
    }

    /// Refreshes in the background unless a refresh ran in the last 200 ms.
    public func refreshSoon() {
        let due = state.withLock { s -> Bool in
            guard s.refreshing == nil, ContinuousClock.now - s.refreshedAt > .milliseconds(200) else { return false }
            s.refreshedAt = .now
            return true
        }
        if due { Task { _ = try? await self.refresh() } }
    }

    private func install(_ map: SlotMap) {
        let (retired, newPrimaries) = state.withLock { s -> ([RedisCommandClient], Bool) in
            s.refreshing = nil
            s.refreshedAt = .now
            guard s.map != map else { return ([], false) }
            let changed = s.map != nil && Set(s.map!.primaries) != Set(map.primaries)
            s.map = map
            s.version += 1
            let primaries = Set(map.primaries)
            let gone = s.pools.keys.filter { !primaries.contains($0) }
            return (gone.compactMap { s.pools.removeValue(forKey: $0) }, changed)
        }
        for pool in retired { pool.close() }
        if newPrimaries { logger.warning("redis cluster: the primaries changed", metadata: ["primaries": "\(map.primaries)"]) }
    }

    private func readMap(from candidates: [ClusterNodeAddress]) async throws -> SlotMap {
        var seen: Set<ClusterNodeAddress> = []
        var lastError: any Error = RedisError.connection("no cluster node given")
        for node in candidates where seen.insert(node).inserted {
            do {
                var config = configuration(for: node)
                config.connectTimeout = min(config.connectTimeout, .seconds(1))
                let connection = try await RedisConnection.connect(config, group: group)
                defer { connection.close() }
                let map = try SlotMap.parse(clusterSlots: try await connection.send(["CLUSTER", "SLOTS"]), answeredBy: node)
                // A node that lost contact with the majority may answer with an old map: only a
                // map that serves every slot is taken.
                guard map.coversEverySlot else {
                    lastError = RedisError.connection("cluster node \(node) reports unserved slots")
                    continue
                }
                return map
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Points one slot at a node (a `MOVED` answer), ahead of the full refresh.
    private func moved(slot: Int, to node: ClusterNodeAddress) {
        state.withLock { s in
            guard var map = s.map, map.primary(forSlot: slot) != node else { return }
            map.assign(slot: slot, to: node)
            s.map = map
            s.version += 1
        }
        refreshSoon()
    }

    /// The pool of a primary, made on first use.
    func pool(_ node: ClusterNodeAddress) -> RedisCommandClient {
        state.withLock { s in
            if let pool = s.pools[node] { return pool }
            let pool = RedisCommandClient(configuration: configuration(for: node), group: group)
            s.pools[node] = pool
            return pool
        }
    }

    // MARK: Commands

    public func send(buffers: [ByteBuffer]) async throws -> RESPValue {
        let slot = try Self.slot(ofCommand: buffers)
        return try await routed(slot: slot) { connection, asking in try await connection.send(buffers: buffers, asking: asking) }
    }

    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        let slot = try Self.slot(ofKeys: keys)
        return try await routed(slot: slot) { connection, asking in
            try await connection.evaluate(script, keys: keys, arguments: arguments, asking: asking)
        }
    }

    public func evaluate(
        _ script: RedisScript, keys: [String], arguments: [String], then follow: @Sendable (RESPValue) -> [String]?
    ) async throws -> (RESPValue, RESPValue?) {
        let slot = try Self.slot(ofKeys: keys)
        return try await routed(slot: slot) { connection, asking in
            let reply = try await connection.evaluate(script, keys: keys, arguments: arguments, asking: asking)
            guard let command = follow(reply) else { return (reply, nil) }
            // Never retried from here on: the script has run.
            return (reply, try await RedisCommandClient.followUp { try await connection.send(command) })
        }
    }

    /// Sends a command to one particular node (`CLUSTER` commands, `SCAN` of a whole node).
    public func send(_ arguments: [String], to node: ClusterNodeAddress) async throws -> RESPValue {
        try await pool(node).send(arguments)
    }

    /// Runs `body` on a connection to the slot's primary, following redirections.
    func routed<T>(slot: Int?, _ body: (RedisConnection, Bool) async throws -> T) async throws -> T {
        let (map, _) = try await slotMap()
        // A command without keys (PING) goes to the node serving slot 0.
        guard var node = map.primary(forSlot: slot ?? 0) else { throw RedisError.connection("cluster slot \(slot ?? 0) is not served") }
        var asking = false
        var retriedAfterRefresh = false
        var hops = 0
        var pauses = 0
        while hops < 5 {
            do {
                let connection = try await pool(node).connection()
                return try await body(connection, asking)
            } catch RedisError.server(let message) {
                asking = false
                switch ClusterRedirection(errorMessage: message) {
                case .moved(let s, let to)?:
                    moved(slot: s, to: to)
                    node = to
                    hops += 1
                    continue
                case .ask(_, let to)?:
                    node = to
                    asking = true
                    hops += 1
                    continue
                case nil:
                    break
                }
                if message.hasPrefix("TRYAGAIN"), pauses < 40 {
                    // A slot half migrated: some of the command's keys moved, some not yet.
                    // Refused, not run; MIGRATE finishes within moments.
                    pauses += 1
                    try await Task.sleep(for: .milliseconds(50), clock: .suspending)
                    continue
                }
                if message.hasPrefix("TRYAGAIN") { throw RedisError.connection("slot \(slot ?? 0) stays mid-migration: \(message)") }
                if message.hasPrefix("CLUSTERDOWN") {
                    // Refused, not run: the cluster is electing a new primary for the slot.
                    refreshSoon()
                    throw RedisError.connection("redis cluster is down: \(message)")
                }
                throw RedisError.server(message)
            } catch RedisError.connection(let reason) {
                // Not sent: the map may be stale (a failover). Read it again, once.
                guard !retriedAfterRefresh, let fresh = try? await refresh(), let owner = fresh.primary(forSlot: slot ?? 0), owner != node else {
                    refreshSoon()
                    throw RedisError.connection(reason)
                }
                retriedAfterRefresh = true
                node = owner
                asking = false
            } catch {
                // Sent and unanswered: the outcome is unknown; the next commands see a fresh map.
                refreshSoon()
                throw error
            }
        }
        throw RedisError.connection("too many cluster redirections for slot \(slot ?? 0)")
    }

    public func close() {
        let pools = state.withLock { s -> [RedisCommandClient] in
            s.refreshing?.cancel()
            defer { s.pools = [:] }
            return Array(s.pools.values)
        }
        for pool in pools { pool.close() }
    }

    // MARK: Keys

    /// The one slot all `keys` share; nil for none. Throws when they span slots.
    public static func slot(ofKeys keys: [String]) throws(RedisError) -> Int? {
        guard let first = keys.first else { return nil }
        let slot = HashSlot.of(first)
        for key in keys.dropFirst() where HashSlot.of(key) != slot {
            throw .crossSlot("keys \(first) and \(key) are in different cluster slots")
        }
        return slot
    }

    /// The slot of a command's keys. The key is the first argument for the commands the engine
    /// sends, except: `EVAL`/`EVALSHA` (keys after the count), `DEL`/`EXISTS`/`UNLINK` (every
    /// argument), `SCAN` (the `MATCH` pattern's hash tag) and `PING` (none).
    public static func slot(ofCommand arguments: [ByteBuffer]) throws(RedisError) -> Int? {
        let words = arguments.map { String(buffer: $0) }
        guard let name = words.first?.uppercased() else { return nil }
        switch name {
        case "PING", "TIME", "INFO", "ROLE":
            return nil
        case "EVAL", "EVALSHA":
            guard words.count >= 3, let n = Int(words[2]), n >= 0, words.count >= 3 + n else { throw .crossSlot("malformed \(name)") }
            return try slot(ofKeys: Array(words[3..<(3 + n)]))
        case "DEL", "EXISTS", "UNLINK", "MGET":
            return try slot(ofKeys: Array(words.dropFirst()))
        case "SCAN":
            guard let m = words.firstIndex(where: { $0.uppercased() == "MATCH" }), m + 1 < words.count, words[m + 1].contains("{") else {
                throw .crossSlot("SCAN on a cluster needs a MATCH pattern with a hash tag")
            }
            return HashSlot.of(words[m + 1])
        default:
            guard words.count >= 2 else { return nil }
            return HashSlot.of(words[1])
        }
    }
}

extension SlotMap {
    /// Serves `slot` from `node`, splitting the range that held it.
    mutating func assign(slot: Int, to node: ClusterNodeAddress) {
        var result: [Range] = []
        for range in ranges {
            guard range.slots.contains(slot) else {
                result.append(range)
                continue
            }
            if range.slots.lowerBound < slot { result.append(Range(slots: range.slots.lowerBound...(slot - 1), primary: range.primary, replicas: range.replicas)) }
            result.append(Range(slots: slot...slot, primary: node, replicas: []))
            if slot < range.slots.upperBound { result.append(Range(slots: (slot + 1)...range.slots.upperBound, primary: range.primary, replicas: range.replicas)) }
        }
        self = SlotMap(ranges: result)
    }
}
