import Logging
import NIOCore
import RealtimeTestSupport
@testable import RedisClient
import Testing

/// Cluster addressing without I/O: slots, the slot map, redirections.
@Suite struct ClusterSlotsTests {
    @Test func slotsFollowRedisClusterHashing() {
        // The specification's test vector, and slots Redis itself reports (CLUSTER KEYSLOT).
        #expect(HashSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(HashSlot.of("foo") == 12182)
        #expect(HashSlot.of("bar") == 5061)
        // A hash tag slots by its content; an empty tag or none slots the whole key.
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("user1000"))
        #expect(HashSlot.of("rt:{orders:eu}:h") == HashSlot.of("orders:eu"))
        #expect(HashSlot.of("foo{}{bar}") == HashSlot.of("foo{}{bar}") && HashSlot.of("foo{}{bar}") != HashSlot.of("bar"))
        #expect(HashSlot.of("foo{{bar}}zap") == HashSlot.of("{bar"))
    }

    @Test func aSlotMapFindsThePrimaryOfEverySlotAndNoticesGaps() throws {
        func node(_ port: Int) -> RESPValue { .array([.bulkString(ByteBuffer(string: "127.0.0.1")), .integer(Int64(port))]) }
        let reply = RESPValue.array([
            .array([.integer(5461), .integer(10922), node(7001), node(7004)]),
            .array([.integer(0), .integer(5460), .array([.bulkString(ByteBuffer(string: "")), .integer(7000)]), node(7003)]),
            .array([.integer(10923), .integer(16383), node(7002)]),
        ])
        let map = try SlotMap.parse(clusterSlots: reply, answeredBy: ClusterNodeAddress(host: "10.0.0.9", port: 7000))
        #expect(map.coversEverySlot)
        #expect(map.primary(forSlot: 0) == ClusterNodeAddress(host: "10.0.0.9", port: 7000))  // empty host: the node asked
        #expect(map.primary(forSlot: 5461)?.port == 7001)
        #expect(map.primary(forSlot: 16383)?.port == 7002)
        #expect(map.primaries.map(\.port) == [7000, 7001, 7002])
        #expect(map.ranges[1].replicas.map(\.port) == [7004])
        let partial = SlotMap(ranges: Array(map.ranges.dropFirst()))
        #expect(!partial.coversEverySlot && partial.primary(forSlot: 100) == nil)
        #expect(throws: RedisError.self) { try SlotMap.parse(clusterSlots: .array([.array([.integer(9), .integer(3), node(1)])]), answeredBy: .init(host: "h", port: 1)) }
    }

    @Test func redirectionsAreRead() {
        #expect(ClusterRedirection(errorMessage: "MOVED 3999 127.0.0.1:6381") == .moved(slot: 3999, to: .init(host: "127.0.0.1", port: 6381)))
        #expect(ClusterRedirection(errorMessage: "ASK 12 10.1.2.3:7000") == .ask(slot: 12, to: .init(host: "10.1.2.3", port: 7000)))
        #expect(ClusterRedirection(errorMessage: "ERR unknown command") == nil)
        #expect(ClusterRedirection(errorMessage: "MOVED 99999 h:1") == nil)
        #expect(ClusterRedirection(errorMessage: "MOVED 1 nohostport") == nil)
    }
}

/// The harness's real Redis Cluster (ops/redis-up.sh: six redis-server processes), what the pure
/// types above read from it, and the cluster client's routing.
@Suite struct LiveClusterTests {
    @Test func aRealClusterReportsASlotMapThatItsRedirectionsAgreeWith() async throws {
        let cluster = try await RedisTopologyProcess.shared(.cluster)
        let first = ClusterNodeAddress(host: "127.0.0.1", port: cluster.dataPorts[0])
        let client = RedisCommandClient(configuration: try RedisConfiguration(url: "redis://\(first)"))
        defer { client.close() }
        // A replica is listed once its primary has pinged it (its replication offset is past 0).
        var map = SlotMap(ranges: [])
        try await eventually(timeout: .seconds(30)) {
            map = try SlotMap.parse(clusterSlots: try await client.send(["CLUSTER", "SLOTS"]), answeredBy: first)
            return map.ranges.count == 3 && map.ranges.allSatisfy { $0.replicas.count == 1 }
        }
        #expect(map.coversEverySlot)
        #expect(map.primaries.count == 3)
        #expect(Set(map.primaries.map(\.port) + map.ranges.flatMap { $0.replicas.map(\.port) }) == Set(cluster.dataPorts))
        // Our slot function agrees with the server's, and a key sent to the wrong primary is
        // redirected to the one the map names.
        for key in ["orders:eu", "rt:{chat:lobby}:h", "a", "zzz"] {
            #expect(try await client.send(["CLUSTER", "KEYSLOT", key]).int == Int64(HashSlot.of(key)))
        }
        let key = try #require((0..<200).map { "k\($0)" }.first { map.primary(forSlot: HashSlot.of($0)) != first })
        do {
            _ = try await client.send(["SET", key, "1"])
            Issue.record("expected a redirection")
        } catch RedisError.server(let message) {
            #expect(ClusterRedirection(errorMessage: message) == .moved(slot: HashSlot.of(key), to: map.primary(forSlot: HashSlot.of(key))!))
        }
    }

    @Test func theClusterClientRoutesEachKeyToItsPrimaryAndRefusesCrossSlotCommands() async throws {
        let cluster = try await RedisTopologyProcess.shared(.cluster)
        let client = RedisClusterClient(
            seeds: [ClusterNodeAddress(host: "127.0.0.1", port: cluster.dataPorts[1])], template: try RedisConfiguration(url: "redis://127.0.0.1"),
            logger: Logger(label: "test"))
        defer { client.close() }
        let prefix = "route-\(UInt32.random(in: 0...UInt32.max))"
        // Keys spread over every shard are written and read back through one client.
        for i in 0..<30 { try await client.send(["SET", "\(prefix):\(i)", String(i)]) }
        for i in 0..<30 { #expect(try await client.send(["GET", "\(prefix):\(i)"]).string == String(i)) }
        let map = try await client.slotMap().map
        #expect(Set((0..<30).compactMap { map.primary(forSlot: HashSlot.of("\(prefix):\($0)")) }).count == 3)
        // A script's keys must share a slot: refused before anything is sent.
        let script = RedisScript("return redis.call('GET', KEYS[1])")
        await #expect(throws: RedisError.self) {
            _ = try await client.evaluate(script, keys: ["\(prefix):a", "\(prefix):b"], arguments: [])
        }
        #expect(try await client.evaluate(script, keys: ["{\(prefix)}:a"], arguments: []).isNull)
        // A map pointing a slot at the wrong primary is corrected by the node's MOVED answer.
        let key = "\(prefix):7"
        let slot = HashSlot.of(key)
        let wrong = try #require(map.primaries.first { $0 != map.primary(forSlot: slot) })
        client.state.withLock { s in
            s.map?.assign(slot: slot, to: wrong)
        }
        #expect(try await client.send(["GET", key]).string == "7")
        #expect(client.state.withLock { $0.map?.primary(forSlot: slot) } == map.primary(forSlot: slot))
    }
}

@Suite struct RedisTopologyURLTests {
    @Test func everyDeploymentFormParses() throws {
        #expect(try RedisTopology(url: "redis://h:1/2") == .single(try RedisConfiguration(url: "redis://h:1/2")))
        guard case .cluster(let seeds, let template) = try RedisTopology(url: "rediss+cluster://u:p@a:7000,b:7001?tls_ca_file=/ca.pem") else {
            Issue.record("not a cluster")
            return
        }
        #expect(seeds == [ClusterNodeAddress(host: "a", port: 7000), ClusterNodeAddress(host: "b", port: 7001)])
        #expect(template.tls && template.username == "u" && template.password == "p" && template.tlsCAFile == "/ca.pem")
        guard case .sentinel(let sentinels, let name, let t, let sentinelPassword) = try RedisTopology(
            url: "redis+sentinel://:secret@s1:26379,s2:26380/mymaster/3?sentinel_password=sp&command_timeout_ms=900")
        else {
            Issue.record("not a sentinel URL")
            return
        }
        #expect(sentinels.map(\.port) == [26379, 26380] && name == "mymaster" && t.database == 3 && t.password == "secret")
        #expect(sentinelPassword == "sp" && t.commandTimeout == .milliseconds(900) && !t.tls)
    }

    @Test(arguments: [
        "http://x", "redis+cluster://", "redis+cluster://a:1,,b:2", "redis+cluster://a:1/0", "redis+sentinel://a:1",
        "redis+sentinel://a:1/", "redis+sentinel://a:1/m/x", "redis+sentinel://a:1/m/1/2", "redis+cluster://a:99999",
        "redis://a:1?sentinel_password=x",
    ])
    func aBadURLIsRefusedWithTheReason(_ url: String) {
        #expect(throws: RedisError.self) { try RedisTopology(url: url) }
    }
}
