import Foundation
import Logging
import RealtimeCore
import RealtimeTestSupport
@testable import RedisClient
import Synchronization
import Testing

/// Redis failures past one server, with real processes: a cluster primary killed under load, a
/// Sentinel failover, a live slot migration. Each test has a topology of its own (the suite runs
/// one at a time: each is six or five redis processes and two gateways).
///
/// The guarantee checked: every acknowledged publish reaches every live subscriber and every
/// resuming one, in order and once, unless that subscriber was told `resumed: false`; and the
/// nodes recover on their own.
@Suite(.serialized) struct FailoverTests {
    /// Short timeouts so that a dead primary is noticed quickly.
    static let urlOptions = "command_timeout_ms=1500&connect_timeout_ms=500"

    @Test func aClusterPrimaryKilledUnderLoadLosesNoAcknowledgedPublish() async throws {
        let topology = RedisTopologyProcess(.cluster)
        try await topology.start(nodeTimeoutMilliseconds: 1000)
        defer { Task { await topology.stop() } }
        try await Cluster.with(nodes: 2, topology: topology, urlOptions: Self.urlOptions) { cluster in
            let channels = (0..<6).map { "feed-\($0)" }
            // The primary serving the first channel's slot is the one to die.
            let map = try await Self.slotMap(topology)
            let victim = try #require(map.primary(forSlot: HashSlot.of(channels[0])))
            try await Self.exercise(cluster, channels: channels) {
                topology.kill(topology.name(ofPort: victim.port))
            }
            // The replica took over the slot.
            try await eventually("a new primary for the slot", timeout: .seconds(30)) {
                let now = try? await Self.slotMap(topology, avoiding: victim)
                return now.flatMap { $0.primary(forSlot: HashSlot.of(channels[0])) }.map { $0 != victim } ?? false
            }
        }
    }

    @Test func aSentinelFailoverLosesNoAcknowledgedPublish() async throws {
        let topology = RedisTopologyProcess(.sentinel)
        try await topology.start(nodeTimeoutMilliseconds: 1000)
        defer { Task { await topology.stop() } }
        try await Cluster.with(nodes: 2, topology: topology, urlOptions: Self.urlOptions) { cluster in
            try await Self.exercise(cluster, channels: ["room-a", "room-b"]) {
                topology.kill("primary")
            }
            // The sentinels promoted the replica.
            let replica = topology.dataPorts[1]
            try await eventually("the replica to be promoted", timeout: .seconds(30)) {
                (try? await topology.cli(topology.sentinelPorts[0], ["SENTINEL", "get-master-addr-by-name", "rtmaster"]))?.contains(String(replica)) == true
            }
        }
    }

    @Test func aSlotMigratedUnderLoadLosesNothing() async throws {
        let topology = RedisTopologyProcess(.cluster)
        try await topology.start(nodeTimeoutMilliseconds: 2000)
        defer { Task { await topology.stop() } }
        try await Cluster.with(nodes: 2, topology: topology, urlOptions: Self.urlOptions) { cluster in
            let channel = "moving"
            let slot = HashSlot.of(channel)
            let map = try await Self.slotMap(topology)
            let source = try #require(map.primary(forSlot: slot))
            let target = try #require(map.primaries.first { $0 != source })
            let outcome = try await Self.exercise(cluster, channels: [channel]) {
                try await Self.migrate(slot: slot, from: source, to: target, topology)
            }
            // Nothing is lost in a migration: no subscriber may even be told so.
            #expect(outcome.resyncs == 0)
            #expect(try await Self.slotMap(topology).primary(forSlot: slot) == target)
        }
    }

    @Test func aReplicatedChannelAcknowledgesOnlyWhatAReplicaHas() async throws {
        let topology = RedisTopologyProcess(.sentinel)
        try await topology.start(nodeTimeoutMilliseconds: 5000)
        defer { Task { await topology.stop() } }
        try await Cluster.with(nodes: 1, topology: topology) { cluster in
            let node = cluster.nodes[0]
            let created = try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"ledger","durability":"replicated"}"#)
            #expect(created.status == 201 && created.json["durability"].string == "replicated")
            #expect(try await node.publish("ledger", data: "1", extra: #","idempotency_key":"a""#).status == 201)
            // The replica stops answering: the publish is applied on the primary but not
            // acknowledged; the answer says the outcome is unknown.
            topology.suspend("replica")
            let unsure = try await node.publish("ledger", data: "2", extra: #","idempotency_key":"b""#)
            topology.resume("replica")
            #expect(unsure.status == 504 && unsure.json["error"]["code"].int == 50400)
            // The SDK's retry with the same key: the original id, now on the replica too.
            let retried = try await node.publish("ledger", data: "2", extra: #","idempotency_key":"b""#)
            #expect(retried.status == 200 && retried.json["status"].string == "duplicate")
            let history = try await node.rest(.GET, "/v1/realtime/channels/ledger/history").json["messages"].array
            #expect(history.count == 2 && history[0]["id"] == retried.json["message_id"])
            // A channel with the default durability does not wait.
            topology.suspend("replica")
            let plain = try await node.publish("plain", data: "3")
            topology.resume("replica")
            #expect(plain.status == 201)
            #expect(try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"ledger","durability":"primary"}"#).status == 409)
            #expect(try await node.rest(.POST, "/v1/realtime/channels", #"{"name":"x","durability":"eventually"}"#).status == 400)
        }
    }

    @Test func withNoPrimaryKnownANodeIsNotReadyAndRefusesPublishesUntilOneIs() async throws {
        let topology = RedisTopologyProcess(.sentinel)
        try await topology.start(nodeTimeoutMilliseconds: 1000)
        defer { Task { await topology.stop() } }
        try await Cluster.with(nodes: 1, topology: topology, urlOptions: Self.urlOptions) { cluster in
            let node = cluster.nodes[0]
            #expect(try await node.publish("before", data: "1").status == 201)
            // Primary and replica down: no sentinel can name a primary that answers.
            topology.suspend("replica")
            topology.kill("primary")
            try await eventually("not ready", timeout: .seconds(20)) { try await node.rest(.GET, "/readyz", key: "").status == 503 }
            let refused = try await node.publish("during", data: "2")
            #expect(refused.status == 503 && refused.json["error"]["code"].int == 50300, "\(refused.json)")
            // The replica answers again; the sentinels promote it and the node follows.
            topology.resume("replica")
            try await eventually("ready on the promoted replica", timeout: .seconds(60)) {
                try await node.rest(.GET, "/readyz", key: "").status == 200
            }
            try await eventually("publishes accepted again", timeout: .seconds(20)) { try await node.publish("after", data: "3").status == 201 }
        }
    }

    // MARK: The scenario

    struct Outcome {
        /// Subscribers that were told `resumed: false` (live notices or resumes).
        var resyncs = 0
    }

    /// Subscribers on node 1 (live) and clients that leave and come back (resume), a publisher
    /// on node 2 that behaves like an SDK (idempotency key, retries), and `fault` in the middle.
    /// Then checks every channel's deliveries against the acknowledged ids.
    static func exercise(_ cluster: Cluster, channels: [String], fault: () async throws -> Void) async throws -> Outcome {
        let (n1, n2) = (cluster.nodes[0], cluster.nodes[1])
        var live: [String: Collector] = [:]
        var resumers: [String: (token: String, since: String, epoch: String)] = [:]
        for channel in channels {
            let socket = try await n1.connect(try await n1.token(client: "live-\(channel)"))
            let reply = try await socket.call("subscribe", #""channel":"\#(channel)""#)
            #expect(reply["type"].string == "subscribed")
            live[channel] = Collector(socket)
        }
        let ledger = Ledger()
        // Some traffic first; the resumers see part of it and leave.
        for channel in channels {
            for n in 0..<3 { _ = try await ledger.publish(n2, channel, n) }
        }
        for channel in channels {
            let token = try await n2.token(client: "resumer-\(channel)")
            let socket = try await n2.connect(token)
            let reply = try await socket.call("subscribe", #""channel":"\#(channel)","since_id":"0-0""#)
            var last = ""
            while last != ledger.acked(channel).last { last = try await socket.next(type: "message")["id"].string ?? "" }
            resumers[channel] = (token, last, reply["epoch"].string ?? "")
            socket.close()
        }
        let publishing = Task {
            var n = 3
            while !Task.isCancelled, n < 400 {
                for channel in channels { _ = try? await ledger.publish(n2, channel, n) }
                n += 1
                try? await Task.sleep(for: .milliseconds(10), clock: .suspending)
            }
        }
        try await Task.sleep(for: .milliseconds(800), clock: .suspending)
        try await fault()
        // Publishing goes on through the failover, and a while after it.
        // (A window of 5 s for 10 rounds: a loaded 2-core machine still makes that.)
        try await eventually("publishes acknowledged after the fault", timeout: .seconds(90)) {
            let after = ledger.count
            try await Task.sleep(for: .seconds(5), clock: .suspending)
            return ledger.count > after + 10 * channels.count
        }
        publishing.cancel()
        await publishing.value
        var outcome = Outcome()
        for channel in channels {
            let acked = ledger.acked(channel)
            // Live subscribers: everything acknowledged, in order, once; or told of a gap.
            let collector = live[channel]!
            try await eventually("\(channel): live delivery of the last acknowledged id", timeout: .seconds(30)) {
                collector.told || collector.ids.contains(acked.last!)
            }
            if collector.told {
                outcome.resyncs += 1
            } else {
                // Once each, in order; and every acknowledged id among them (a publish cut off
                // by the end of the test may have been applied unacknowledged).
                let ids = collector.ids.compactMap { MessageID($0) }
                #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 }, "\(channel): live subscriber got an id twice or out of order")
                let got = Set(collector.ids)
                #expect(acked.filter { !got.contains($0) } == [], "\(channel): acknowledged but never delivered live")
            }
            // Resumers come back on node 1 with their position and epoch.
            let (token, since, epoch) = resumers[channel]!
            let socket = try await n1.connect(token)
            let reply = try await socket.call("subscribe", #""channel":"\#(channel)","since_id":"\#(since)","epoch":"\#(epoch)""#)
            if reply["resumed"].bool == true {
                let expected = Array(acked.drop { $0 != since }.dropFirst())
                var got: [String] = []
                while got.count < expected.count { got.append(try await socket.next(type: "message")["id"].string ?? "") }
                #expect(got == expected, "\(channel): resumed subscriber")
            } else {
                outcome.resyncs += 1
            }
            socket.close()
        }
        // Both nodes recovered by themselves: ready, and a publish reaches a live subscriber.
        for node in [n1, n2] {
            try await eventually("node \(node.nodeID) ready", timeout: .seconds(30)) { try await node.rest(.GET, "/readyz").status == 200 }
        }
        for channel in channels {
            let id = try await ledger.publish(n2, channel, 1000)
            try await eventually("\(channel) live after recovery", timeout: .seconds(20)) { live[channel]!.told || live[channel]!.ids.contains(id ?? "") }
        }
        for collector in live.values { collector.stop() }
        return outcome
    }

    /// Acknowledged message ids per channel, in acknowledgement order.
    final class Ledger: Sendable {
        let state = Mutex<[String: [String]]>([:])

        /// Publishes as the SDKs do: a key of its own, the same key on every retry of `50300`,
        /// `50400` or a connection error (bounded), so a retry is never applied twice.
        func publish(_ node: GatewayProcess, _ channel: String, _ n: Int) async throws -> String? {
            let key = "\(channel)-\(n)"
            for _ in 0..<100 {
                if let reply = try? await node.publish(channel, data: "\(n)", extra: #","idempotency_key":"\#(key)""#) {
                    if reply.status == 201 || reply.status == 200, let id = reply.json["message_id"].string {
                        state.withLock { $0[channel, default: []].append(id) }
                        return id
                    }
                    guard reply.status == 503 || reply.status == 504 else {
                        Issue.record("publish \(key): unexpected \(reply.status)")
                        return nil
                    }
                }
                try await Task.sleep(for: .milliseconds(100), clock: .suspending)
            }
            Issue.record("publish \(key) never acknowledged")
            return nil
        }

        func acked(_ channel: String) -> [String] { state.withLock { $0[channel] ?? [] } }
        var count: Int { state.withLock { $0.values.reduce(0) { $0 + $1.count } } }
    }

    /// Reads one subscriber's frames in the background: message ids, and whether it was told
    /// `resumed: false`.
    final class Collector: Sendable {
        final class Inbox: Sendable {
            let state = Mutex<(ids: [String], told: Bool)>(([], false))
        }
        let inbox = Inbox()
        let reader: Task<Void, Never>
        let socket: TestSocket

        init(_ socket: TestSocket) {
            self.socket = socket
            let inbox = self.inbox
            reader = Task {
                while !Task.isCancelled {
                    guard let frame = try? await socket.next(timeout: .seconds(120)) else { return }
                    switch frame["type"].string {
                    case "message": inbox.state.withLock { $0.ids.append(frame["id"].string ?? "") }
                    case "subscribed" where frame["resumed"].bool == false: inbox.state.withLock { $0.told = true }
                    default: break
                    }
                }
            }
        }

        var ids: [String] { inbox.state.withLock { $0.ids } }
        var told: Bool { inbox.state.withLock { $0.told } }

        func stop() {
            reader.cancel()
            socket.close()
        }
    }

    // MARK: Cluster plumbing

    /// The slot map, read from any reachable node (not `avoiding`).
    static func slotMap(_ topology: RedisTopologyProcess, avoiding: ClusterNodeAddress? = nil) async throws -> SlotMap {
        let seeds = topology.dataPorts.map { ClusterNodeAddress(host: "127.0.0.1", port: $0) }.filter { $0 != avoiding }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let client = RedisClusterClient(seeds: seeds, template: try RedisConfiguration(url: "redis://127.0.0.1?connect_timeout_ms=300"), logger: logger)
        defer { client.close() }
        return try await client.refresh()
    }

    /// Moves a slot between primaries as `redis-cli --cluster reshard` does: IMPORTING on the
    /// target, MIGRATING on the source, MIGRATE of its keys in batches, then NODE everywhere.
    static func migrate(slot: Int, from source: ClusterNodeAddress, to target: ClusterNodeAddress, _ topology: RedisTopologyProcess) async throws {
        let sourceID = try await topology.cli(source.port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let targetID = try await topology.cli(target.port, ["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try await topology.cli(target.port, ["CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceID])
        _ = try await topology.cli(source.port, ["CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID])
        // Publishing goes on between the batches.
        while true {
            let keys = try await topology.cli(source.port, ["CLUSTER", "GETKEYSINSLOT", String(slot), "2"])
                .split(separator: "\n").map(String.init).filter { !$0.isEmpty }
            if keys.isEmpty { break }
            _ = try await topology.cli(source.port, ["MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "KEYS"] + keys)
            try await Task.sleep(for: .milliseconds(200), clock: .suspending)
        }
        for port in [target.port, source.port] + topology.dataPorts.prefix(3).filter({ $0 != target.port && $0 != source.port }) {
            _ = try await topology.cli(port, ["CLUSTER", "SETSLOT", String(slot), "NODE", targetID])
        }
    }
}
