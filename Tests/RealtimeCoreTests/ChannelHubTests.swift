import Foundation
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import Testing
@testable import RealtimeCore

/// A sink that records the frames it is sent.
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

    var all: [String] { frames.withLock { $0 } }

    var messageIDs: [String] {
        all.compactMap { f in
            guard f.hasPrefix("{\"type\":\"message\""), let r = f.range(of: "\"id\":\"") else { return nil }
            return String(f[r.upperBound...].prefix { $0 != "\"" })
        }
    }
}

/// The memory engine's broker with a link the test controls: it can hold `subscribe` until
/// released, fail it, go down (dropping events, as a lost pub/sub connection does) and come
/// back, and fail replays. The hub's guarantees are checked against it without I/O.
final class ScriptedBroker: Broker {
    let memory: MemoryEngine
    struct State {
        var handler: (@Sendable (EngineEvent) -> Void)?
        var down = false
        var subscribes: [ChannelName] = []
        var unsubscribes: [ChannelName] = []
        var gate: [CheckedContinuation<Void, Never>] = []
        var holdSubscribes = false
        var failSubscribes = false
        var failReplays = 0
        /// A failover to a replica that missed writes: replays no longer show the ids after
        /// `survivor` up to `through`, and the stream's newest id falls back to `survivor`.
        var lost: (survivor: MessageID, through: MessageID)?
        var changedEpochs = 0
    }
    let state = Mutex(State())

    init(_ memory: MemoryEngine) { self.memory = memory }

    func run(delivering handler: @escaping @Sendable (EngineEvent) -> Void) async throws {
        state.withLock { $0.handler = handler }
        try await memory.run(delivering: { [weak self] event in
            guard let self else { return }
            let (deliver, down) = self.state.withLock { ($0.handler, $0.down) }
            if !down { deliver?(event) }
        })
    }

    func subscribe(_ channel: ChannelName) async throws {
        let (hold, fail) = state.withLock { s in
            s.subscribes.append(channel)
            return (s.holdSubscribes, s.failSubscribes)
        }
        if hold { await withCheckedContinuation { c in state.withLock { $0.gate.append(c) } } }
        if fail { throw RealtimeError.engineUnavailable() }
    }

    func unsubscribe(_ channel: ChannelName) async { state.withLock { $0.unsubscribes.append(channel) } }

    func release() {
        let waiting = state.withLock { s in
            s.holdSubscribes = false
            defer { s.gate = [] }
            return s.gate
        }
        for c in waiting { c.resume() }
    }

    var heldSubscribes: Int { state.withLock { $0.gate.count } }

    /// The link drops: events are lost from now on until `restore`.
    func interrupt() {
        let handler = state.withLock { s in
            s.down = true
            return s.handler
        }
        handler?(.interrupted)
    }

    func restore() {
        let handler = state.withLock { s in
            s.down = false
            return s.handler
        }
        handler?(.restored)
    }

    func publish(_ request: PublishRequest) async throws -> PublishOutcome { try await memory.publish(request) }
    func history(_ channel: ChannelName, _ query: HistoryQuery) async throws -> HistoryPage { try await memory.history(channel, query) }
    func replay(_ channel: ChannelName, after position: MessageID, limit: Int) async throws -> Replay {
        let fail = state.withLock { s -> Bool in
            guard s.failReplays > 0 else { return false }
            s.failReplays -= 1
            return true
        }
        if fail { throw RealtimeError.engineUnavailable() }
        var page = try await memory.replay(channel, after: position, limit: limit)
        if let lost = state.withLock({ $0.lost }) {
            page.messages.removeAll { $0.id > lost.survivor && $0.id <= lost.through }
            if page.newest > lost.survivor, page.newest <= lost.through { page.newest = lost.survivor }
            if position > lost.survivor, position <= lost.through { page.positionLost = true }
        }
        return page
    }
    func position(_ channel: ChannelName) async throws -> MessageID { try await memory.position(channel) }
    func epoch(_ channel: ChannelName) async throws -> String { try await memory.epoch(channel) }
    func changeEpoch(_ channel: ChannelName, from: String) async throws -> String {
        state.withLock { $0.changedEpochs += 1 }
        return try await memory.changeEpoch(channel, from: from)
    }
    func checkReady() async throws { try await memory.checkReady() }
}

/// A hub over a scripted broker, running while `body` runs.
func withHub(pageSize: Int = 7, flushGap: TimeAmount = .milliseconds(1), _ body: (ChannelHub, ScriptedBroker) async throws -> Void) async throws {
    let memory = MemoryEngine(configuration: EngineConfiguration(replayPageSize: pageSize))
    let broker = ScriptedBroker(memory)
    let engine = Engine(configuration: memory.configuration, broker: broker, presence: memory, channels: memory, keys: memory)
    let hub = ChannelHub(engine: engine, flushGap: flushGap)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await hub.run() }
        try await waitUntil("the engine to run") { (try? await engine.broker.checkReady()) != nil }
        do {
            try await body(hub, broker)
        } catch {
            group.cancelAll()
            throw error
        }
        group.cancelAll()
    }
}

/// Runs `body` with one event loop of its own, shut down afterwards (also when `body` throws).
func withOneLoop(_ body: (any EventLoop) async throws -> Void) async throws {
    try await withLoops(1) { loops in try await body(loops[0]) }
}

/// Runs `body` with `count` event loops of their own, shut down afterwards.
func withLoops(_ count: Int, _ body: ([any EventLoop]) async throws -> Void) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: count)
    do {
        try await body(Array(group.makeIterator()))
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
    try await group.shutdownGracefully()
}

/// Keeps `loop` busy with a task that waits until the returned semaphore is signalled: what is
/// queued to the loop meanwhile waits behind it.
func holdBusy(_ loop: any EventLoop) -> DispatchSemaphore {
    let busy = DispatchSemaphore(value: 0)
    loop.execute { busy.wait() }
    return busy
}

func waitUntil(_ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting for \(what)")
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(5), clock: .suspending)
    }
}

@Suite struct ChannelHubTests {
    let ch = try! ChannelName(validating: "race")

    func publish(_ broker: ScriptedBroker, _ range: Range<Int>) async throws -> [MessageID] {
        var ids: [MessageID] = []
        for i in range { ids.append(try await broker.publish(PublishRequest(channel: ch, event: "e", data: "\(i)")).id) }
        return ids
    }

    @Test func resumeWhilePublishingHasNoGapAndNoDuplicate() async throws {
        try await withHub { hub, broker in
            var published = try await publish(broker, 0..<100)
            let resumeFrom = published[49]
            let publisher = Task { try await publish(broker, 100..<600) }
            let sink = RecordingSink()
            let announced = Mutex<SubscribeOutcome?>(nil)
            _ = try await hub.subscribe(ch, sink: sink, since: resumeFrom) { o in announced.withLock { $0 = o } }
            published += try await publisher.value
            let expected = published.drop { $0 <= resumeFrom }.map(\.description)
            try await waitUntil("every message") { sink.messageIDs.count >= expected.count }
            #expect(sink.messageIDs == expected)
            #expect(announced.withLock { $0 }?.resumed == true)
        }
    }

    /// A resume's replay reaches the subscriber as one run (one write to its socket), in order.
    @Test func aReplayGoesOutAsOneRun() async throws {
        try await withOneLoop { loop in try await withHub { hub, broker in
            let published = try await publish(broker, 0..<6)
            let sink = LoopSink(loop: loop)
            _ = try await hub.subscribe(ch, sink: sink, since: published[0]) { _ in }
            try await waitUntil("the replay") { sink.ids.count == 5 }
            #expect(sink.ids == published.dropFirst().map(\.description))
            #expect(sink.runSizes == [5] && sink.malformedRuns.load(ordering: .relaxed) == 0)
        } }
    }

    @Test func encodesOnceAndDeliversTheSameBytesToEverySubscriber() async throws {
        try await withHub { hub, broker in
            let sinks = (0..<3).map { _ in RecordingSink() }
            for sink in sinks { _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in } }
            #expect(hub.localCount(ch) == 3)
            _ = try await publish(broker, 0..<1)
            try await waitUntil("delivery") { sinks.allSatisfy { $0.all.count == 1 } }
            let frames = sinks.map(\.all)
            #expect(frames.allSatisfy { $0 == frames[0] })
            try await waitUntil("the count report") { try await broker.memory.stats(ch).subscribers == 3 }
        }
    }

    @Test func concurrentFirstSubscribersShareOneAttachAndMissNothing() async throws {
        try await withHub { hub, broker in
            broker.state.withLock { $0.holdSubscribes = true }
            let sinks = (0..<5).map { _ in RecordingSink() }
            let subscribing = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for sink in sinks { group.addTask { _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in } } }
                    try await group.waitForAll()
                }
            }
            try await waitUntil("the first attach to reach the broker") { broker.heldSubscribes == 1 }
            // Published while attaching: nobody had subscribed live yet, so nobody gets it.
            _ = try await publish(broker, 0..<3)
            broker.release()
            try await subscribing.value
            let live = try await publish(broker, 3..<10).map(\.description)
            try await waitUntil("live messages") { sinks.allSatisfy { $0.messageIDs.count >= live.count } }
            for sink in sinks { #expect(sink.messageIDs == live) }
            #expect(broker.state.withLock { $0.subscribes } == [ch])
        }
    }

    @Test func aFailedAttachFailsEveryWaiterAndLeavesNoSubscription() async throws {
        try await withHub { hub, broker in
            broker.state.withLock {
                $0.holdSubscribes = true
                $0.failSubscribes = true
            }
            let results = Task {
                await withTaskGroup(of: Bool.self) { group in
                    for _ in 0..<3 {
                        group.addTask { (try? await hub.subscribe(ch, sink: RecordingSink(), since: nil) { _ in }) != nil }
                    }
                    return await group.reduce(into: [Bool]()) { $0.append($1) }
                }
            }
            try await waitUntil("the attach") { broker.heldSubscribes == 1 }
            try await Task.sleep(for: .milliseconds(50), clock: .suspending)
            broker.release()
            #expect(await results.value == [false, false, false])
            #expect(hub.localCount(ch) == 0)
            // The next subscriber attaches afresh and works.
            broker.state.withLock { $0.failSubscribes = false }
            let sink = RecordingSink()
            _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in }
            let ids = try await publish(broker, 0..<2).map(\.description)
            try await waitUntil("delivery") { sink.messageIDs == ids }
            #expect(broker.state.withLock { $0.subscribes.count } == 2)
        }
    }

    @Test func lastUnsubscribeDetachesAndDeleteDetaches() async throws {
        try await withHub { hub, broker in
            let a = try #require(try await hub.subscribe(ch, sink: RecordingSink(), since: nil) { _ in })
            let b = try #require(try await hub.subscribe(ch, sink: RecordingSink(), since: nil) { _ in })
            await hub.unsubscribe(a)
            #expect(broker.state.withLock { $0.unsubscribes }.isEmpty)
            await hub.unsubscribe(b)
            #expect(broker.state.withLock { $0.unsubscribes } == [ch])
            let sink = RecordingSink()
            _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in }
            _ = try await publish(broker, 0..<1)
            #expect(try await broker.memory.delete(ch))
            try await waitUntil("the deleted channel to detach") { broker.state.withLock { $0.unsubscribes.count } == 2 }
            #expect(sink.all.last == "ended:race" && hub.localCount(ch) == 0)
        }
    }

    @Test func afterAnInterruptionTheHubReadsWhatWasMissedInPagesThenGoesLive() async throws {
        try await withHub(pageSize: 4) { hub, broker in
            let sink = RecordingSink()
            _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in }
            var expected = try await publish(broker, 0..<5)
            try await waitUntil("live") { sink.messageIDs.count == 5 }
            broker.interrupt()
            expected += try await publish(broker, 5..<23)  // lost on the link
            broker.state.withLock { $0.failReplays = 2 }  // and the first reads fail
            broker.restore()
            expected += try await publish(broker, 23..<30)
            try await waitUntil("catch-up") { sink.messageIDs.count >= 30 }
            expected += try await publish(broker, 30..<32)
            try await waitUntil("live again") { sink.messageIDs.count >= 32 }
            #expect(sink.messageIDs == expected.map(\.description))
        }
    }

    /// The link drops and comes back hundreds of times while messages are published: every
    /// interruption and every recovery overlap somewhere, and still the subscriber gets every
    /// message once, in order, and the channel ends live (not stuck recovering).
    @Test func aFlappingLinkLosesNothingAndEndsLive() async throws {
        try await withHub(pageSize: 5) { hub, broker in
            let sink = RecordingSink()
            _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in }
            let publisher = Task {
                var ids: [MessageID] = []
                for i in 0..<900 {  // under the default history size: nothing is trimmed
                    ids += try await publish(broker, i..<(i + 1))
                    try await Task.sleep(for: .microseconds(200), clock: .suspending)
                }
                return ids
            }
            let flapper = Task {
                while !Task.isCancelled {
                    broker.interrupt()
                    try? await Task.sleep(for: .microseconds(Int.random(in: 0...300)), clock: .suspending)
                    broker.restore()
                    try? await Task.sleep(for: .microseconds(Int.random(in: 0...600)), clock: .suspending)
                }
            }
            var expected = try await publisher.value
            flapper.cancel()
            await flapper.value
            broker.restore()
            expected += try await publish(broker, 900..<910)
            let done = try? await waitUntil("every message", timeout: .seconds(60)) { sink.messageIDs.count >= expected.count }
            let got = sink.messageIDs
            #expect(got == expected.map(\.description), "\(got.count) of \(expected.count); other frames: \(sink.all.filter { !$0.hasPrefix("{\"type\":\"message\"") }.prefix(3))")
            #expect(done != nil)
        }
    }

    @Test func historyTrimmedDuringAnInterruptionIsReportedNotSkippedSilently() async throws {
        try await withHub { hub, broker in
            _ = try await broker.memory.create(ChannelSettings(name: ch, type: .public, historySize: 3, historyTTLSeconds: 3600, createdAt: 0, explicit: true))
            let sink = RecordingSink()
            _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in }
            broker.interrupt()
            let ids = try await publish(broker, 0..<10)
            broker.restore()
            try await waitUntil("the retained messages") { sink.messageIDs.count == 3 }
            #expect(sink.messageIDs == ids.suffix(3).map(\.description))
            #expect(sink.all.first?.contains("\"resumed\":false") == true)
        }
    }

    @Test func entriesLostInAFailoverChangeTheEpochAndSubscribersAreToldNotLeftWithAGap() async throws {
        try await withHub { hub, broker in
            let sink = RecordingSink()
            let epoch = Mutex("")
            _ = try await hub.subscribe(ch, sink: sink, since: nil) { outcome in epoch.withLock { $0 = outcome.epoch } }
            let before = try await publish(broker, 0..<6)
            try await waitUntil("live") { sink.messageIDs.count == 6 }
            // The link drops; the new primary lacks the last three ids this node delivered.
            broker.interrupt()
            broker.state.withLock { $0.lost = (before[2], before[5]) }
            broker.restore()
            try await waitUntil("the resync notice") { sink.all.contains { $0.contains("\"resumed\":false") } }
            let notice = try #require(sink.all.last { $0.contains("\"resumed\":false") })
            let newEpoch = try await broker.epoch(ch)
            #expect(newEpoch != epoch.withLock { $0 } && notice.contains("\"epoch\":\"\(newEpoch)\""))
            #expect(broker.state.withLock { $0.changedEpochs } == 1)
            // Later messages arrive as usual.
            let after = try await publish(broker, 6..<8)
            try await waitUntil("live again") { sink.messageIDs.count >= 8 }
            #expect(sink.messageIDs == (before + after).map(\.description))
            // A client resuming with a position of the old epoch is told, and gets no replay.
            let late = RecordingSink()
            let outcome = Mutex<SubscribeOutcome?>(nil)
            _ = try await hub.subscribe(ch, sink: late, since: before[1], sinceEpoch: epoch.withLock { $0 }) { o in outcome.withLock { $0 = o } }
            #expect(outcome.withLock { $0 } == SubscribeOutcome(resumed: false, replayed: 0, epoch: newEpoch))
            // With the current epoch, the same position resumes.
            _ = try await hub.subscribe(ch, sink: RecordingSink(), since: after[0], sinceEpoch: newEpoch) { o in outcome.withLock { $0 = o } }
            #expect(outcome.withLock { $0 } == SubscribeOutcome(resumed: true, replayed: 1, epoch: newEpoch))
        }
    }

    @Test func aLossFollowedByNewWritesChangesTheEpochOnceAndDeliversTheNewWrites() async throws {
        try await withHub { hub, broker in
            let sink = RecordingSink()
            _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in }
            let before = try await publish(broker, 0..<4)
            try await waitUntil("live") { sink.messageIDs.count == 4 }
            // The new primary lacks the last two delivered ids, and takes writes (with higher
            // ids) before this node reads back.
            broker.interrupt()
            broker.state.withLock { $0.lost = (before[1], before[3]) }
            let after = try await publish(broker, 4..<6)
            broker.restore()
            try await waitUntil("the new writes") { sink.messageIDs.count == 6 }
            #expect(sink.messageIDs == (before + after).map(\.description))
            #expect(sink.all.filter { $0.contains("\"resumed\":false") }.count == 1)
            try await Task.sleep(for: .milliseconds(200), clock: .suspending)
            #expect(broker.state.withLock { $0.changedEpochs } == 1)
        }
    }

    @Test func aPositionThatTheStreamNeverHeldDoesNotResume() async throws {
        try await withHub { hub, broker in
            let ids = try await publish(broker, 0..<2)
            let outcome = Mutex<SubscribeOutcome?>(nil)
            // A restarted memory node: the client's since_id is past anything this stream held.
            let future = MessageID(milliseconds: ids[1].milliseconds + 60_000, sequence: 0)
            _ = try await hub.subscribe(ch, sink: RecordingSink(), since: future) { o in outcome.withLock { $0 = o } }
            #expect(outcome.withLock { $0?.resumed } == false)
        }
    }

    @Test func presenceMissedDuringAnInterruptionIsReconciled() async throws {
        try await withHub { hub, broker in
            let memory = broker.memory
            func member(_ id: String) -> PresenceMember {
                PresenceMember(clientID: id, userID: nil, connectionID: id, data: nil, enteredAt: 1, updatedAt: 1)
            }
            try await memory.enter(ch, member: member("stays"))
            try await memory.enter(ch, member: member("leaves"))
            let sink = RecordingSink()
            _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in }
            broker.interrupt()
            try await memory.leave(ch, connectionID: "leaves")
            try await memory.enter(ch, member: member("arrives"))
            broker.restore()
            try await waitUntil("reconciled presence") { sink.all.count >= 2 }
            try await Task.sleep(for: .milliseconds(100), clock: .suspending)
            let events = sink.all
            #expect(events.count == 2)
            #expect(events.contains { $0.contains("\"action\":\"leave\"") && $0.contains("\"connection_id\":\"leaves\"") })
            #expect(events.contains { $0.contains("\"action\":\"enter\"") && $0.contains("\"connection_id\":\"arrives\"") })
        }
    }
}

/// A sink on an event loop: records message ids and whether every write and flush ran on its
/// own loop, as the hub promises.
final class LoopSink: SubscriberSink {
    let loop: any EventLoop
    let offLoop = Atomic<Int>(0)
    init(loop: any EventLoop) { self.loop = loop }
    var eventLoop: (any EventLoop)? { loop }
    /// Flush calls, and frames written since the last flush.
    let flushes = Atomic<Int>(0)
    let unflushed = Atomic<Int>(0)
    /// Every frame in order: a message's id, or "presence".
    let sequence = Mutex<[String]>([])
    func write(_ frame: WireFrame) -> Bool {
        if !loop.inEventLoop { offLoop.add(1, ordering: .relaxed) }
        let text = String(buffer: frame.text)
        if let r = text.range(of: "\"id\":\"") {
            sequence.withLock { $0.append(String(text[r.upperBound...].prefix { $0 != "\"" })) }
        } else if text.hasPrefix("{\"type\":\"presence_event\"") {
            sequence.withLock { $0.append("presence") }
        }
        // As the protocol asks: true only for the first write since the last flush.
        return unflushed.wrappingAdd(1, ordering: .relaxed).oldValue == 0
    }
    func flush() {
        if !loop.inEventLoop { offLoop.add(1, ordering: .relaxed) }
        flushes.add(1, ordering: .relaxed)
        unflushed.store(0, ordering: .relaxed)
    }
    func slowConsumer() {}
    func channelEnded(_ channel: ChannelName) {}
    /// The message ids among `sequence`.
    var ids: [String] { sequence.withLock { $0 }.filter { $0 != "presence" } }

    /// How many frames each run written here held, and whether a run's bytes were not its
    /// frames back to back.
    let runs = Mutex<[Int]>([])
    let malformedRuns = Atomic<Int>(0)
    /// Where each run's bytes lie in memory.
    let runStorage = Mutex<[UInt]>([])
    func write(_ run: WireFrameRun) -> Bool {
        runs.withLock { $0.append(run.frames.count) }
        runStorage.withLock { $0.append(run.bytes.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }) }
        var joined = ByteBuffer()
        for f in run.frames { joined.writeImmutableBuffer(f.bytes) }
        if joined != run.bytes { malformedRuns.add(1, ordering: .relaxed) }
        var first = false
        for f in run.frames {
            if write(f) { first = true }
        }
        return first
    }
    var runSizes: [Int] { runs.withLock { $0 } }
}

@Suite struct LiveSubscribersTests {
    /// Subscribers are kept grouped by loop as they join; leaving removes exactly one, and a
    /// loop whose last subscriber left has no group left.
    @Test func groupsByLoopAndRemovesExactlyOne() {
        let loops = [EmbeddedEventLoop(), EmbeddedEventLoop()]
        var live = LiveSubscribers()
        var sinks: [UInt64: LoopSink] = [:]
        for id in UInt64(0)..<10 {
            let sink = LoopSink(loop: loops[Int(id) % 2])
            sinks[id] = sink
            live.insert(id: id, sink: sink, loop: sink.loop, batch: nil, floor: nil)
        }
        #expect(live.count == 10 && live.groups.count == 2)
        #expect(live.groups.allSatisfy { g in g.sinks.allSatisfy { ($0 as! LoopSink).loop === g.loop } && g.ids.count == g.sinks.count })
        let removed = live.remove(id: 3)
        let again = live.remove(id: 3)
        #expect(removed && !again && live.count == 9)
        #expect(!live.sinks.contains { $0 === sinks[3]! })
        #expect([1, 5, 7, 9].allSatisfy { live.remove(id: $0) })
        #expect(live.groups.count == 1 && live.count == 5 && live.single == nil)
        #expect([0, 2, 4, 6].allSatisfy { live.remove(id: $0) })
        #expect(live.single === sinks[8]!)
    }

    /// Sinks that resumed ahead of the channel (a floor) are left out of messages they have.
    @Test func behindLeavesOutTheSinksThatHaveTheMessage() {
        let loop = EmbeddedEventLoop()
        var live = LiveSubscribers()
        live.insert(id: 1, sink: LoopSink(loop: loop), loop: loop, batch: nil, floor: nil)
        live.insert(id: 2, sink: LoopSink(loop: loop), loop: loop, batch: nil, floor: MessageID(milliseconds: 10, sequence: 0))
        #expect(live.behind(MessageID(milliseconds: 10, sequence: 0)).flatMap(\.ids) == [1])
        #expect(live.behind(MessageID(milliseconds: 11, sequence: 0)).flatMap(\.ids) == [1, 2])
        _ = live.remove(id: 1)
        #expect(live.behind(MessageID(milliseconds: 9, sequence: 0)).isEmpty)
    }
}

extension ChannelHubTests {
    /// Subscribers on several event loops, some leaving while messages flow: everyone still
    /// subscribed gets every message once, in order, written and flushed on its own loop;
    /// those who left get a prefix.
    @Test func subscribersOnManyLoopsGetEveryMessageInOrderOnTheirLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let loops = Array(group.makeIterator())
        try await withHub { hub, broker in
            let sinks = (0..<30).map { LoopSink(loop: loops[$0 % loops.count]) }
            var subscriptions: [HubSubscription] = []
            for sink in sinks { subscriptions.append(try #require(try await hub.subscribe(ch, sink: sink, since: nil) { _ in })) }
            var ids = try await publish(broker, 0..<50).map(\.description)
            for s in subscriptions.prefix(10) { await hub.unsubscribe(s) }
            ids += try await publish(broker, 50..<100).map(\.description)
            try await waitUntil("every message") { sinks.dropFirst(10).allSatisfy { $0.ids.count == ids.count } }
            #expect(sinks.dropFirst(10).allSatisfy { $0.ids == ids })
            #expect(sinks.prefix(10).allSatisfy { ids.starts(with: $0.ids) })
            #expect(sinks.allSatisfy { $0.offLoop.load(ordering: .relaxed) == 0 })
        }
        try await group.shutdownGracefully()
    }
}

extension ChannelHubTests {
    /// Flush passes on a loop keep the configured gap: the first message is flushed at once,
    /// those arriving within the gap share the next pass, and nothing is left unflushed.
    @Test func flushPassesKeepTheirGapAndLeaveNothingUnflushed() async throws {
        try await withOneLoop { loop in try await withHub(flushGap: .seconds(2)) { hub, broker in
            let sinks = (0..<3).map { _ in LoopSink(loop: loop) }
            for sink in sinks { _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in } }
            var ids = try await publish(broker, 0..<1).map(\.description)
            try await waitUntil("the first message flushed at once") { sinks.allSatisfy { $0.flushes.load(ordering: .relaxed) == 1 } }
            ids += try await publish(broker, 1..<21).map(\.description)
            try await waitUntil("every message flushed") {
                sinks.allSatisfy { $0.ids.count == ids.count && $0.unflushed.load(ordering: .relaxed) == 0 }
            }
            #expect(sinks.allSatisfy { $0.ids == ids })
            // Twenty messages within the gap: far fewer passes than messages.
            #expect(sinks.allSatisfy { $0.flushes.load(ordering: .relaxed) < 10 })
        } }
    }
}

extension ChannelHubTests {
    /// Messages that arrive while a loop is busy wait for one task there and reach each of its
    /// subscribers as one write, in order; a subscriber joining meanwhile starts a new task, so
    /// it gets exactly what follows its join and the others miss nothing.
    @Test func messagesWaitingForABusyLoopGoOutAsOneRunPerSubscriber() async throws {
        try await withOneLoop { loop in try await withHub { hub, broker in
            let sinks = (0..<3).map { _ in LoopSink(loop: loop) }
            for sink in sinks { _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in } }
            let busy = holdBusy(loop)
            var ids = try await publish(broker, 0..<20).map(\.description)
            let late = LoopSink(loop: loop)
            _ = try await hub.subscribe(ch, sink: late, since: nil) { _ in }
            let after = try await publish(broker, 20..<25).map(\.description)
            ids += after
            busy.signal()
            try await waitUntil("every message") { sinks.allSatisfy { $0.ids.count == ids.count } && late.ids.count == after.count }
            #expect(sinks.allSatisfy { $0.ids == ids && $0.runSizes == [20, 5] })
            #expect(late.ids == after && late.runSizes == [5])
            #expect((sinks + [late]).allSatisfy { $0.malformedRuns.load(ordering: .relaxed) == 0 && $0.offLoop.load(ordering: .relaxed) == 0 })
        } }
    }
}

extension ChannelHubTests {
    /// A message for subscribers on several loops is written from one buffer per loop, so no
    /// buffer's reference count is changed by writes on different cores; the subscribers of one
    /// loop share their loop's buffer.
    @Test func eachLoopWritesAMessageFromABufferOfItsOwn() async throws {
        try await withLoops(2) { loops in try await withHub { hub, broker in
            let a = (0..<2).map { _ in LoopSink(loop: loops[0]) }
            let b = (0..<2).map { _ in LoopSink(loop: loops[1]) }
            for sink in a + b { _ = try await hub.subscribe(ch, sink: sink, since: nil) { _ in } }
            // One message, so each loop's run is that one frame (several would be copied anyway).
            _ = try await publish(broker, 0..<1)
            try await waitUntil("the message") { (a + b).allSatisfy { $0.ids.count == 1 } }
            let storage = (a + b).map { $0.runStorage.withLock { $0 } }
            #expect((a + b).allSatisfy { $0.runSizes == [1] })
            #expect(storage[0] == storage[1] && storage[2] == storage[3])
            #expect(storage[0] != storage[2])
            #expect((a + b).allSatisfy { $0.malformedRuns.load(ordering: .relaxed) == 0 })
        } }
    }

    /// Subscribers that resumed ahead of the node's live stream are left out of the messages
    /// they have; with the loop busy, an event queued for everyone before those messages, and a
    /// message after them, still reach every subscriber in channel order.
    @Test func messagesBehindASubscriberThatResumedAheadKeepTheirOrderOnABusyLoop() async throws {
        try await withOneLoop { loop in try await withHub { hub, broker in
            let early = (0..<2).map { _ in LoopSink(loop: loop) }
            for s in early { _ = try await hub.subscribe(ch, sink: s, since: nil) { _ in } }
            let first = try await publish(broker, 0..<1)
            try await waitUntil("the first message") { early.allSatisfy { $0.ids.count == 1 } }
            // The hub does not see the next three yet (still on their way from the broker)...
            broker.state.withLock { $0.down = true }
            let late = try await publish(broker, 1..<4)
            broker.state.withLock { $0.down = false }
            // ...but a subscriber resuming from the first reads them from history: it is ahead.
            let ahead = LoopSink(loop: loop)
            let outcome = Mutex<SubscribeOutcome?>(nil)
            _ = try await hub.subscribe(ch, sink: ahead, since: first[0]) { o in outcome.withLock { $0 = o } }
            #expect(outcome.withLock { $0 }?.resumed == true)
            try await waitUntil("the replay") { ahead.ids.count == 3 }
            let messages = try await broker.memory.replay(ch, after: first[0], limit: 10).messages
            #expect(messages.map(\.id) == late)

            let busy = holdBusy(loop)
            let member = PresenceMember(clientID: "p", userID: nil, connectionID: "p", data: nil, enteredAt: 1, updatedAt: 1)
            hub.handle(.presence(PresenceEvent(channel: ch, action: .enter, member: member)))
            for m in messages { hub.handle(.message(m)) }
            let after = try await publish(broker, 4..<5)
            busy.signal()

            let all = (first + late + after).map(\.description)
            try await waitUntil("every message") { early.allSatisfy { $0.ids.count == all.count } && ahead.ids.count == 4 }
            let expected = [all[0], "presence"] + all.dropFirst()
            #expect(early.allSatisfy { $0.sequence.withLock { $0 } == expected })
            #expect(ahead.sequence.withLock { $0 } == late.map(\.description) + ["presence"] + after.map(\.description))
        } }
    }
}
