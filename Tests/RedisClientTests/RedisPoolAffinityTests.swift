import NIOCore
import NIOPosix
import RealtimeTestSupport
@testable import RedisClient
import Testing

/// A command issued on one of the pool's event loops goes out on a connection of that loop
/// (no thread hop; one write per loop turn), and the pool keeps its configured size.
@Suite struct RedisPoolAffinityTests {
    /// Runs a task's jobs on one event loop, as the gateway's publish fast path does.
    final class OnLoop: TaskExecutor {
        let loop: any EventLoop
        init(_ loop: any EventLoop) { self.loop = loop }
        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
        }
    }

    @Test func aCommandIssuedOnALoopUsesThatLoopsConnection() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var config = try RedisConfiguration(url: server.url)
        config.poolSize = 4
        let client = RedisCommandClient(configuration: config, group: group)
        #expect(client.slots.count == 4)
        for loop in group.makeIterator() {
            for _ in 0..<4 {
                let used = try await Task(executorPreference: OnLoop(loop)) { try await client.connection() }.value
                #expect(used.channel.eventLoop === loop)
            }
            let reply = try await Task(executorPreference: OnLoop(loop)) { try await client.send(["PING"]) }.value
            #expect(reply.string == "PONG")
        }
        client.close()
        server.stop()
        try await group.shutdownGracefully()
    }
}
