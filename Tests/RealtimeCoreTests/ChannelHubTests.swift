import Foundation
import NIOCore
import Synchronization
import Testing
@testable import RealtimeCore

/// A sink that records the message ids it is sent.
final class RecordingSink: SubscriberSink {
    let frames = Mutex<[String]>([])
    let slow = Atomic<Bool>(false)
    var eventLoop: (any EventLoop)? { nil }
    func write(_ frame: WireFrame) -> Bool {
        frames.withLock { $0.append(String(buffer: frame.text)) }
        return false
    }
    func flush() {}
    func slowConsumer() { slow.store(true, ordering: .relaxed) }
    func channelEnded(_ channel: ChannelName) { frames.withLock { $0.append("ended:\(channel)") } }

    var messageIDs: [String] {
        frames.withLock { $0 }.compactMap { f in
            guard f.hasPrefix("{\"type\":\"message\""), let r = f.range(of: "\"id\":\"") else { return nil }
            return String(f[r.upperBound...].prefix { $0 != "\"" })
        }
    }
}

@Suite struct ChannelHubTests {
    @Test func resumeWhilePublishingHasNoGapAndNoDuplicate() async throws {
        let engine = MemoryEngine()
        let hub = ChannelHub(engine: engine)
        let s = ChannelSettings(name: try ChannelName(validating: "race"), type: .public, historySize: 10_000, historyTTLSeconds: 3600, createdAt: 0, explicit: true)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await engine.run(delivering: { hub.handle($0) }) }
            try await Task.sleep(for: .milliseconds(20))
            var published: [MessageID] = []
            for i in 0..<100 { published.append(try await engine.publish(PublishRequest(channel: s.name, event: "e", data: "\(i)")).id) }
            let resumeFrom = published[49]
            let publisher = Task {
                var ids: [MessageID] = []
                for i in 100..<600 { ids.append(try await engine.publish(PublishRequest(channel: s.name, event: "e", data: "\(i)")).id) }
                return ids
            }
            let sink = RecordingSink()
            let announced = Mutex<SubscribeOutcome?>(nil)
            _ = try await hub.subscribe(s.name, sink: sink, since: resumeFrom) { o in announced.withLock { $0 = o } }
            published += try await publisher.value
            let expected = published.drop { $0 <= resumeFrom }.map(\.description)
            #expect(sink.messageIDs == expected)
            #expect(announced.withLock { $0 }?.resumed == true)
            group.cancelAll()
        }
    }

    @Test func encodesOnceAndDeliversTheSameBytesToEverySubscriber() async throws {
        let engine = MemoryEngine()
        let hub = ChannelHub(engine: engine)
        let ch = try ChannelName(validating: "fan")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await engine.run(delivering: { hub.handle($0) }) }
            try await Task.sleep(for: .milliseconds(20))
            let sinks = (0..<3).map { _ in RecordingSink() }
            for sink in sinks { _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in } }
            #expect(hub.localCount(ch) == 3)
            _ = try await engine.publish(PublishRequest(channel: ch, event: "e", data: "{}"))
            let frames = sinks.map { $0.frames.withLock { $0 } }
            #expect(frames[0].count == 1 && frames.allSatisfy { $0 == frames[0] })
            #expect(try await engine.channelStats(ch).subscribers == 3)
            group.cancelAll()
        }
    }
}
