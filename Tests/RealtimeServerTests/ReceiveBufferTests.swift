@testable import RealtimeServer
import NIOCore
import Testing

/// What an upgraded connection keeps of its reads, driven through NIO's own receive-buffer pool
/// (the one a socket channel uses) with one read per readiness event, as the node configures it.
@Suite struct ReceiveBufferTests {
    /// Reads `sizes` in turn through `pool`, each filling what it reads; returns the capacity
    /// of the buffer each read was given.
    private func read(_ sizes: [Int], through pool: inout NIOPooledRecvBufferAllocator) -> [Int] {
        sizes.map { size in
            let (buffer, read) = pool.buffer(allocator: ByteBufferAllocator()) { buffer -> Int in
                let n = min(size, buffer.writableBytes)
                buffer.writeRepeatingByte(0x61, count: n)
                return n
            }
            pool.record(actualReadBytes: read)
            return buffer.capacity
        }
    }

    @Test func aLargeMessageLeavesNoGrownBufferBehind() {
        var pool = NIOPooledRecvBufferAllocator(capacity: 1, recvAllocator: UnpooledReceiveBuffers())
        // A 60 KB message arrives in reads that fill their buffers, so the sizes grow...
        let burst = read(Array(repeating: 65_536, count: 8), through: &pool)
        #expect(burst.max()! >= 16_384)
        // ...then the connection goes quiet (pongs): small reads get small buffers again (the
        // sizes step down one per two small reads), and the pool holds at most its one buffer.
        let quiet = read(Array(repeating: 20, count: 40), through: &pool)
        #expect(quiet.last! <= 1024, "buffers given to small reads: \(quiet)")
        #expect(pool.count <= 1)
    }

    /// The difference, pinned: NIO's adaptive allocator on its own keeps the grown buffer.
    @Test func theAdaptiveAllocatorAloneKeepsItsGrownBuffer() {
        var pool = NIOPooledRecvBufferAllocator(capacity: 1, recvAllocator: GatewayServerChannel.receiveBuffers)
        _ = read(Array(repeating: 65_536, count: 8), through: &pool)
        let quiet = read(Array(repeating: 20, count: 40), through: &pool)
        #expect(quiet.last! >= 16_384)
    }

    /// What a node sets on a real upgraded connection: one read per readiness event, and reads
    /// whose buffers are not kept.
    @Test func aNodeConfiguresUpgradedConnectionsToKeepNoReadBuffer() async throws {
        try await TestNode.with { node in
            let peer = try await RawPeer.connect(port: node.port, path: "/v1/realtime/ws?token=" + (try await node.token()))
            #expect(try await peer.firstText()?.contains("\"connected\"") == true)
            let session = try #require(node.gateway.runtime.registry.all.first)
            let (reads, unpooled) = try await session.loop.submit { () throws -> (UInt, Bool) in
                let channel = try #require(session.assumeIsolated { $0.connection?.channel })
                let options = try #require(channel.syncOptions)
                return (try options.getOption(ChannelOptions.maxMessagesPerRead), try options.getOption(ChannelOptions.recvAllocator) is UnpooledReceiveBuffers)
            }.get()
            #expect(reads == 1)
            #expect(unpooled)
            try await peer.close()
        }
    }
}
