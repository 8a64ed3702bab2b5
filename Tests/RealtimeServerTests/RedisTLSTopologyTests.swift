import Foundation
import RealtimeTestSupport
import Testing

/// TLS towards every Redis topology (issue 16): a Redis Cluster whose nodes, bus and
/// replication speak TLS only (`rediss+cluster://`), and a Sentinel setup whose data nodes and
/// sentinels do (`rediss+sentinel://`), each with a private CA (`?tls_ca_file=`).
@Suite(.serialized) struct RedisTLSTopologyTests {
    @Test(arguments: [RedisTopologyProcess.Kind.cluster, .sentinel])
    func everyFeatureWorksOverTLSOnTheTopology(_ kind: RedisTopologyProcess.Kind) async throws {
        let topology = RedisTopologyProcess(kind, tls: true)
        try await topology.start(nodeTimeoutMilliseconds: 5000)
        defer { Task { await topology.stop() } }
        #expect(topology.url.hasPrefix(kind == .cluster ? "rediss+cluster://" : "rediss+sentinel://") && topology.url.contains("tls_ca_file="))
        // The servers refuse plain connections: everything below went over TLS.
        #expect(try await Command.run(["redis-cli", "-p", String(topology.dataPorts[0]), "PING"], directory: "/tmp", timeout: 10).output.contains("PONG") == false)
        try await Cluster.with(nodes: 2, topology: topology) { cluster in
            let (n1, n2) = (cluster.nodes[0], cluster.nodes[1])
            // Channels on every shard: subscribed through one node, published through the other.
            let channels = (0..<6).map { "tls-\($0)" }
            var sockets: [TestSocket] = []
            for channel in channels {
                let s = try await n1.connect(try await n1.token(client: "s-\(channel)"))
                _ = try await s.call("subscribe", #""channel":"\#(channel)""#)
                sockets.append(s)
            }
            for (channel, socket) in zip(channels, sockets) {
                let id = try await n2.publish(channel, data: #"{"over":"tls"}"#).json["message_id"].string
                #expect(try await socket.next(type: "message")["id"].string == id)
                #expect(try await n1.rest(.GET, "/v1/realtime/channels/\(channel)/history").json["messages"].array.count == 1)
            }
            // Presence and a channel acknowledged only once a replica has it (WAIT over TLS replication).
            let member = try await n2.connect(try await n2.token(client: "m"))
            _ = try await member.call("presence.enter", #""channel":"tls-0""#)
            #expect(try await sockets[0].next(type: "presence_event")["action"].string == "enter")
            #expect(try await n1.rest(.POST, "/v1/realtime/channels", #"{"name":"tls-durable","durability":"replicated"}"#).status == 201)
            #expect(try await n2.publish("tls-durable", data: "1").status == 201)
        }
    }
}
