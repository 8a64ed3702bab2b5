import NIOCore
import RealtimeTestSupport
import RedisClient
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

/// The harness's real Redis Cluster: six redis-server processes, and what the pure types above
/// read from them.
@Suite struct LiveClusterTests {
    @Test func aRealClusterReportsASlotMapThatItsRedirectionsAgreeWith() async throws {
        let cluster = try RedisClusterProcess()
        try await cluster.start()
        defer { cluster.stop() }
        let first = ClusterNodeAddress(host: "127.0.0.1", port: cluster.ports[0])
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
        #expect(Set(map.primaries.map(\.port) + map.ranges.flatMap { $0.replicas.map(\.port) }) == Set(cluster.ports))
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
}
