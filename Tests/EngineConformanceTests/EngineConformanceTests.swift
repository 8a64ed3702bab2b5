import Logging
import RealtimeCore
@testable import RealtimeRedis
import RealtimeTestSupport
import Testing

/// The contracts of `Broker`, `PresenceStore`, `ChannelStore` and `KeyStore`, checked against
/// both implementations of each.
@Suite struct EngineConformanceTests {
    @Test(arguments: EngineKind.allCases)
    func idsStrictlyIncreaseAndHistoryKeepsPublishOrder(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let s = settings("orders:eu")
            var ids: [MessageID] = []
            for i in 0..<50 {
                ids.append(try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "\(i)")).id)
            }
            #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 })
            let forwards = try await t.engine.broker.history(s.name, HistoryQuery(limit: 100, direction: .forwards))
            #expect(forwards.messages.map(\.id) == ids && !forwards.hasMore)
            #expect(forwards.messages.map(\.data) == (0..<50).map { "\($0)" })
            let backwards = try await t.engine.broker.history(s.name, HistoryQuery(limit: 10, direction: .backwards))
            #expect(backwards.messages.map(\.id) == Array(ids.suffix(10).reversed()) && backwards.hasMore)
        }
    }

    @Test(arguments: EngineKind.allCases)
    func theEpochIsStableChangesOnceOnRequestAndReplaysReportItWithTheNewestID(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let s = settings("epochs")
            let broker = t.engine.broker
            // None before the first publish (nothing is stored for a channel only read).
            #expect(try await broker.epoch(s.name) == "")
            try await broker.subscribe(s.name)
            let ids = [try await broker.publish(PublishRequest(channel: s.name, event: "e", data: "1")).id]
            let first = try await broker.epoch(s.name)
            #expect(!first.isEmpty)
            #expect(try await broker.epoch(s.name) == first)
            let page = try await broker.replay(s.name, after: .zero, limit: 10)
            #expect(page.epoch == first && page.newest == ids[0] && !page.positionLost)
            #expect(try await broker.replay(s.name, after: ids[0], limit: 10).positionLost == false)
            // A position the stream never held (another stream's, or lost in a failover).
            let foreign = MessageID(milliseconds: ids[0].milliseconds + 1, sequence: 0)
            #expect(try await broker.replay(s.name, after: foreign, limit: 10).positionLost)
            let between = MessageID(milliseconds: ids[0].milliseconds - 1, sequence: 7)
            #expect(try await broker.replay(s.name, after: between, limit: 10).positionLost)
            // Two nodes noticing the same loss change it once: the second sees the new epoch.
            let changed = try await broker.changeEpoch(s.name, from: first)
            #expect(changed != first)
            #expect(try await broker.changeEpoch(s.name, from: first) == changed)
            #expect(try await broker.epoch(s.name) == changed)
            try await t.events.wait("the epoch event") { r in
                r.all.contains { if case .epochChanged(s.name, changed) = $0 { return true } else { return false } }
            }
            // A channel never used has no epoch and no newest id.
            let fresh = try await broker.replay(settings("never-used").name, after: .zero, limit: 10)
            #expect(fresh.epoch.isEmpty && fresh.newest == .zero && !fresh.positionLost)
            await broker.unsubscribe(s.name)
        }
    }

    @Test(arguments: EngineKind.allCases)
    func durabilityIsStoredWithTheChannelAndPartOfItsIdentity(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            var s = settings("durable")
            s.durability = .replicated
            let created = try await t.engine.channels.create(s)
            #expect(created.settings.durability == .replicated)
            #expect(try await t.engine.channels.settings(s.name).durability == .replicated)
            #expect(try await t.engine.channels.settings(settings("other").name).durability == .primary)
            var different = s
            different.durability = .primary
            await #expect(throws: RealtimeError.self) {
                _ = try await t.engine.channels.create(different)
            }
        }
    }

    @Test(arguments: EngineKind.allCases)
    func attachedNodeReceivesEveryMessageInOrderOnce(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let s = settings("live")
            try await t.engine.broker.subscribe(s.name)
            var ids: [MessageID] = []
            for i in 0..<20 { ids.append(try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "\(i)")).id) }
            try await t.events.wait("20 messages") { $0.messages.count >= 20 }
            #expect(t.events.messages.map(\.id) == ids)
            await t.engine.broker.unsubscribe(s.name)
        }
    }

    @Test(arguments: EngineKind.allCases)
    func repeatedIdempotencyKeyReturnsTheOriginalAndPublishesNothing(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let s = settings("pay")
            try await t.engine.broker.subscribe(s.name)
            let first = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "1", idempotencyKey: "k"))
            let again = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "2", idempotencyKey: "k"))
            #expect(first.status == .published && again.status == .duplicate && again.id == first.id && again.timestamp == first.timestamp)
            // The key is per channel.
            let elsewhere = try await t.engine.broker.publish(PublishRequest(channel: channel("pay2"), event: "e", data: "3", idempotencyKey: "k"))
            #expect(elsewhere.status == .published)
            try await Task.sleep(for: .milliseconds(50), clock: .suspending)
            #expect(t.events.messages.filter { $0.channel == s.name }.count == 1)
            #expect(try await t.engine.broker.history(s.name, HistoryQuery(limit: 10, direction: .forwards)).messages.map(\.data) == ["1"])
        }
    }

    @Test(arguments: EngineKind.allCases)
    func historyIsTrimmedToHistorySizeAndReplayReportsTheGap(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            // Publish reads the stored history size itself (in the same atomic step).
            let s = try await t.engine.channels.create(settings("trim", historySize: 3)).settings
            var ids: [MessageID] = []
            for i in 0..<6 { ids.append(try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "\(i)")).id) }
            let kept = try await t.engine.broker.history(s.name, HistoryQuery(limit: 100, direction: .forwards)).messages.map(\.id)
            #expect(kept == Array(ids.suffix(3)))
            let lost = try await t.engine.broker.replay(s.name, after: ids[0], limit: 1000)
            #expect(!lost.complete && lost.messages.map(\.id) == Array(ids.suffix(3)))
            let exact = try await t.engine.broker.replay(s.name, after: ids[3], limit: 1000)
            #expect(exact.complete && exact.messages.map(\.id) == Array(ids.suffix(2)))
            let none = try await t.engine.broker.replay(s.name, after: ids[5], limit: 1000)
            #expect(none.complete && none.messages.isEmpty)
        }
    }

    /// `history_size: 0` keeps nothing: a resume from any earlier message is a gap, from the
    /// newest one it is whole.
    @Test(arguments: EngineKind.allCases)
    func aChannelWithoutHistoryResumesOnlyFromItsNewestMessage(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let s = try await t.engine.channels.create(settings("no-history", historySize: 0)).settings
            var ids: [MessageID] = []
            for i in 0..<3 { ids.append(try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "\(i)")).id) }
            #expect(try await t.engine.broker.history(s.name, HistoryQuery(limit: 10, direction: .forwards)).messages.isEmpty)
            let lost = try await t.engine.broker.replay(s.name, after: ids[1], limit: 10)
            #expect(!lost.complete && lost.messages.isEmpty && lost.newest == ids[2])
            let whole = try await t.engine.broker.replay(s.name, after: ids[2], limit: 10)
            #expect(whole.complete && whole.messages.isEmpty)
        }
    }

    /// A stream Redis dropped (its TTL ran out, or it was evicted) while the channel's record
    /// lives on: the next publish records that everything before it is gone, so a resume from
    /// an earlier message reports the gap, and one from the last message before the loss
    /// is whole (only the new message follows it).
    @Test(arguments: [EngineKind.redis, .redisCluster])
    func aLostStreamIsAGapForEveryEarlierPosition(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let engine = try #require(t.engine.broker as? RedisEngine)
            let s = settings("lost-stream")
            let first = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "0")).id
            let last = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "1")).id
            _ = try await engine.redis.send(["DEL", engine.keys.stream(s.name)])
            let next = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "2")).id
            let lost = try await t.engine.broker.replay(s.name, after: first, limit: 10)
            #expect(!lost.complete && lost.messages.map(\.id) == [next])
            let whole = try await t.engine.broker.replay(s.name, after: last, limit: 10)
            #expect(whole.complete && whole.messages.map(\.id) == [next])
        }
    }

    @Test(arguments: EngineKind.allCases)
    func historyBoundsPageThroughEverythingExactlyOnce(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let s = settings("pages")
            var ids: [MessageID] = []
            for i in 0..<25 { ids.append(try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "\(i)")).id) }
            var seen: [MessageID] = []
            var after: MessageID?
            while true {
                let page = try await t.engine.broker.history(s.name, HistoryQuery(limit: 7, direction: .forwards, after: after))
                seen += page.messages.map(\.id)
                guard page.hasMore else { break }
                after = page.messages.last!.id
            }
            #expect(seen == ids)
            var back: [MessageID] = []
            var through: MessageID?
            while true {
                let page = try await t.engine.broker.history(s.name, HistoryQuery(limit: 4, direction: .backwards, through: through))
                back += page.messages.map(\.id)
                guard page.hasMore else { break }
                through = page.messages.last!.id.predecessor
            }
            #expect(back == ids.reversed())
            let window = try await t.engine.broker.history(s.name, HistoryQuery(limit: 100, direction: .forwards, after: ids[4], through: ids[9]))
            #expect(window.messages.map(\.id) == Array(ids[5...9]))
        }
    }

    @Test(arguments: EngineKind.allCases)
    func presenceEnterUpdateLeaveAreEventsAndMembers(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let ch = channel("room")
            try await t.engine.broker.subscribe(ch)
            #expect(try await t.engine.presence.enter(ch, member: member("c1", data: "{\"a\":1}")) == .enter)
            #expect(try await t.engine.presence.enter(ch, member: member("c1", data: "{\"a\":2}")) == .update)
            #expect(try await t.engine.presence.enter(ch, member: member("c2", client: "bob", user: nil)) == .enter)
            let members = try await t.engine.presence.members(ch)
            #expect(Set(members.map(\.connectionID)) == ["c1", "c2"])
            #expect(members.first { $0.connectionID == "c1" }?.data == "{\"a\":2}")
            #expect(try await t.engine.presence.leave(ch, connectionID: "c1"))
            #expect(try await !t.engine.presence.leave(ch, connectionID: "c1"))
            try await t.events.wait("4 presence events") { $0.presence.count >= 4 }
            #expect(t.events.presence.map(\.action) == [.enter, .update, .enter, .leave])
            #expect(try await t.engine.presence.members(ch).map(\.connectionID) == ["c2"])
            #expect(try await t.engine.channels.stats(ch).presenceMembers == 1)
        }
    }

    @Test(arguments: EngineKind.allCases)
    func expiredMembersLeaveExactlyOnceAndHeartbeatsKeepThem(_ kind: EngineKind) async throws {
        try await withEngine(kind, configuration: EngineConfiguration(presenceTTLSeconds: 30)) { t in
            let ch = channel("ttl")
            try await t.engine.broker.subscribe(ch)
            try await t.engine.presence.enter(ch, member: member("gone"))
            try await t.engine.presence.enter(ch, member: member("alive"))
            t.clock.advance(byMilliseconds: 20_000)
            try await t.engine.presence.refresh([(ch, member("alive"))])
            t.clock.advance(byMilliseconds: 15_000)
            // Several sweeps at once, as several nodes would run them.
            async let a = t.engine.presence.sweep()
            async let b = t.engine.presence.sweep()
            // The engine's own periodic sweep may have taken it first: at most one removal in all.
            let removed = try await a + b
            #expect(removed <= 1)
            #expect(try await t.engine.presence.sweep() == 0)
            try await t.events.wait("leave") { $0.presence.contains { $0.action == .leave } }
            try await Task.sleep(for: .milliseconds(50), clock: .suspending)
            let leaves = t.events.presence.filter { $0.action == .leave }
            #expect(leaves.map(\.member.connectionID) == ["gone"])
            #expect(try await t.engine.presence.members(ch).map(\.connectionID) == ["alive"])
        }
    }

    @Test(arguments: EngineKind.allCases)
    func channelsCreateIdempotentlyConflictListAndDelete(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let s = settings("cfg:a", type: .presence, historySize: 10)
            #expect(try await t.engine.channels.create(s).created)
            let again = try await t.engine.channels.create(s)
            #expect(!again.created && again.settings.type == .presence)
            var different = s
            different.type = .public
            await #expect(throws: RealtimeError.self) { try await t.engine.channels.create(different) }
            #expect(try await t.engine.channels.settings(s.name).historySize == 10)
            let implicit = try await t.engine.channels.settings(channel("never:made"))
            #expect(!implicit.explicit && implicit.type == t.engine.configuration.channelDefaults.type)

            for name in ["cfg:b", "cfg:c", "cfg:d"] { _ = try await t.engine.channels.create(settings(name)) }
            var listed: [String] = []
            var cursor: ChannelName?
            while true {
                let page = try await t.engine.channels.list(limit: 3, after: cursor)
                listed += page.channels.map(\.name.rawValue)
                guard page.hasMore else { break }
                cursor = page.channels.last!.name
            }
            #expect(listed == ["cfg:a", "cfg:b", "cfg:c", "cfg:d"])

            try await t.engine.broker.subscribe(s.name)
            _ = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "1"))
            try await t.engine.presence.enter(s.name, member: member("m1"))
            #expect(try await t.engine.channels.delete(s.name))
            #expect(try await !t.engine.channels.delete(s.name))
            try await t.events.wait("deleted") { r in r.all.contains { if case .channelDeleted = $0 { return true } else { return false } } }
            let tail = t.events.all.suffix(2)
            guard case .presence(let leave) = tail.first, case .channelDeleted(let gone) = tail.last else {
                Issue.record("expected leave then channelDeleted, got \(tail)")
                return
            }
            #expect(leave.action == .leave && gone == s.name)
            #expect(try await t.engine.broker.history(s.name, HistoryQuery(limit: 10, direction: .forwards)).messages.isEmpty)
            #expect(try await t.engine.presence.members(s.name).isEmpty)
            #expect(try await !t.engine.channels.settings(s.name).explicit)
        }
    }

    @Test(arguments: EngineKind.allCases)
    func statsReportSubscribersPresenceAndLastID(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let s = settings("stats")
            #expect(try await t.engine.channels.stats(s.name) == ChannelStats(subscribers: 0, presenceMembers: 0, lastMessageID: nil))
            try await t.engine.channels.reportLocalSubscribers(s.name, count: 3)
            let id = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "1")).id
            try await t.engine.presence.enter(s.name, member: member("x"))
            #expect(try await t.engine.channels.stats(s.name) == ChannelStats(subscribers: 3, presenceMembers: 1, lastMessageID: id))
        }
    }

    @Test(arguments: EngineKind.allCases)
    func keysAreStoredListedAndRevokedWithAnEvent(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let record = APIKeyRecord(keyID: "k_1", name: "ci", scopes: [.publish], createdAt: 1, secretHash: APIKeyMaterial.hash("k_1.s"))
            try await t.engine.keys.store(record)
            #expect(try await t.engine.keys.key(id: "k_1") == record)
            #expect(try await t.engine.keys.list().map(\.keyID) == ["k_1"])
            #expect(try await t.engine.keys.revoke(id: "k_1"))
            #expect(try await !t.engine.keys.revoke(id: "k_1"))
            #expect(try await t.engine.keys.key(id: "k_1")?.revoked == true)
            #expect(try await t.engine.keys.list().isEmpty)
            try await t.events.wait("revocation") { r in r.all.contains { if case .keyRevoked("k_1") = $0 { return true } else { return false } } }
        }
    }

    @Test(arguments: EngineKind.allCases)
    func idempotencyKeysExpireWithTheWindow(_ kind: EngineKind) async throws {
        try await withEngine(kind, configuration: EngineConfiguration(idempotencyWindowSeconds: 1)) { t in
            let s = settings("window")
            let first = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "1", idempotencyKey: "k"))
            t.clock.advance(byMilliseconds: 1500)
            // Redis expires keys in its own time.
            if kind != .memory { try await Task.sleep(for: .milliseconds(1600), clock: .suspending) }
            let later = try await t.engine.broker.publish(PublishRequest(channel: s.name, event: "e", data: "2", idempotencyKey: "k"))
            #expect(later.status == .published && later.id != first.id)
        }
    }

    @Test(arguments: EngineKind.allCases)
    func replayReadsBoundedPagesAndPositionNamesTheNewest(_ kind: EngineKind) async throws {
        try await withEngine(kind) { t in
            let ch = channel("paged")
            #expect(try await t.engine.broker.position(ch) == .zero)
            var ids: [MessageID] = []
            for i in 0..<10 { ids.append(try await t.engine.broker.publish(PublishRequest(channel: ch, event: "e", data: "\(i)")).id) }
            #expect(try await t.engine.broker.position(ch) == ids.last)
            var read: [MessageID] = []
            var from = MessageID.zero
            var pages = 0
            while true {
                let page = try await t.engine.broker.replay(ch, after: from, limit: 4)
                #expect(page.messages.count <= 4 && page.complete)
                read += page.messages.map(\.id)
                pages += 1
                guard page.hasMore else { break }
                from = page.messages.last!.id
            }
            #expect(read == ids && pages == 3)
        }
    }

    @Test(arguments: EngineKind.allCases)
    func aHeartbeatEntersAgainAMemberSweptWhileItsConnectionLived(_ kind: EngineKind) async throws {
        try await withEngine(kind, configuration: EngineConfiguration(presenceTTLSeconds: 30)) { t in
            let ch = channel("outage")
            try await t.engine.broker.subscribe(ch)
            try await t.engine.presence.enter(ch, member: member("m"))
            // An outage longer than the TTL: the member is swept, with its leave.
            t.clock.advance(byMilliseconds: 31_000)
            _ = try await t.engine.presence.sweep()
            #expect(try await t.engine.presence.members(ch).isEmpty)
            let entered = try await t.engine.presence.refresh([(ch, member("m"))])
            #expect(entered.map(\.member.connectionID) == ["m"] && entered.map(\.action) == [.enter])
            #expect(try await t.engine.presence.members(ch).map(\.connectionID) == ["m"])
            #expect(try await t.engine.presence.refresh([(ch, member("m"))]).isEmpty)
            try await t.events.wait("enter, leave, enter") { $0.presence.count >= 3 }
            #expect(t.events.presence.map(\.action) == [.enter, .leave, .enter])
        }
    }

    @Test(arguments: EngineKind.allCases)
    func concurrentSubscribersThroughTheHubShareOneAttachAndGetOneOrderedStream(_ kind: EngineKind) async throws {
        try await withEngine(kind, hub: true) { t in
            let hub = try #require(t.hub)
            let ch = channel("crowd")
            let publisher = Task {
                var ids: [MessageID] = []
                for i in 0..<200 { ids.append(try await t.engine.broker.publish(PublishRequest(channel: ch, event: "e", data: "\(i)")).id) }
                return ids
            }
            let sinks = (0..<8).map { _ in IDSink() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for sink in sinks {
                    group.addTask { _ = try await hub.subscribe(ch, sink: sink, since: MessageID.zero) { _ in } }
                }
                try await group.waitForAll()
            }
            let ids = try await publisher.value
            for sink in sinks {
                try await t.events.waitFor("every message on one subscriber") { sink.ids.count >= ids.count }
                // Resumed from the start: the whole stream, in order, once.
                #expect(sink.ids == ids)
            }
            #expect(hub.localCount(ch) == 8)
        }
    }
}

/// Redis mechanics the contract does not show but operators rely on.
@Suite struct RedisEngineMechanicsTests {
    /// Load balancers probe `/readyz` on every node all the time: a probe's nonce must leave
    /// nothing behind, neither on the node that sent it nor on the others that saw it.
    @Test func readinessProbesLeaveNothingBehindOnAnyNode() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        defer { server.stop() }
        var logger = Logger(label: "test-redis")
        logger.logLevel = .critical
        let a = try RedisEngine(url: server.url, configuration: .init(), nodeID: "a", logger: logger)
        let b = try RedisEngine(url: server.url, configuration: .init(), nodeID: "b", logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await a.run(delivering: { _ in }) }
            group.addTask { try await b.run(delivering: { _ in }) }
            let ready = ContinuousClock.now + .seconds(10)
            while (try? await a.checkReady()) == nil, ContinuousClock.now < ready { try await Task.sleep(for: .milliseconds(20), clock: .suspending) }
            while (try? await b.checkReady()) == nil, ContinuousClock.now < ready { try await Task.sleep(for: .milliseconds(20), clock: .suspending) }
            for _ in 0..<50 { try await a.checkReady() }
            try await Task.sleep(for: .milliseconds(200), clock: .suspending)
            #expect(a.probes.withLock { $0.count } == 0)
            #expect(b.probes.withLock { $0.count } == 0)
            group.cancelAll()
        }
    }
}
