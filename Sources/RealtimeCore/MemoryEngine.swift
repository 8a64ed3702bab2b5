import DequeModule
import Synchronization

/// The embedded single-node engine: everything in process, mirroring the Redis engine's semantics
/// (stream ids, `MAXLEN` trimming, history and idempotency expiry, presence TTL) so both pass the
/// same conformance suite.
///
/// All state sits behind one lock; events are handed to the node inside it, which is what gives
/// per-channel total order. The node's handler only enqueues, so the lock is held briefly.
public final class MemoryEngine: Engine {
    public let configuration: EngineConfiguration
    let clock: any RealtimeClock
    let state: Mutex<State>

    struct Stream {
        var entries = Deque<Message>()
        var lastID = MessageID.zero
        /// Greatest id removed by trimming or expiry (Redis: `max-deleted-entry-id`).
        var maxDeletedID: MessageID?
        var lastPublishAt: Int64 = 0
        var ttlSeconds = 0

        /// Appends with the next id and trims to the channel's history size (`XADD MAXLEN n`).
        mutating func append(_ request: PublishRequest, at now: Int64, keeping history: (size: Int, ttlSeconds: Int)) -> Message {
            let id = lastID.next(atMilliseconds: UInt64(max(now, 0)))
            let message = Message(id: id, channel: request.channel, event: request.event, data: request.data, clientID: request.clientID, timestamp: now)
            entries.append(message)
            lastID = id
            lastPublishAt = now
            ttlSeconds = history.ttlSeconds
            while entries.count > max(history.size, 0), let removed = entries.popFirst() {
                maxDeletedID = removed.id
            }
            return message
        }

        /// Drops the entries once `ttlSeconds` passed without a publish (Redis: key expiry).
        mutating func expire(now: Int64) {
            guard ttlSeconds > 0, now - lastPublishAt >= Int64(ttlSeconds) * 1000, !entries.isEmpty else { return }
            maxDeletedID = lastID
            entries.removeAll()
        }
    }

    struct IdempotencyRecord {
        var id: MessageID
        var timestamp: Int64
        var expiresAt: Int64
    }

    struct PresenceEntry {
        var member: PresenceMember
        var expiresAt: Int64
    }

    struct State {
        var handler: (@Sendable (EngineEvent) -> Void)?
        var streams: [ChannelName: Stream] = [:]
        var idempotency: [ChannelName: [String: IdempotencyRecord]] = [:]
        var presence: [ChannelName: [String: PresenceEntry]] = [:]
        var settings: [ChannelName: ChannelSettings] = [:]
        /// Channels created or used, with the time of first use.
        var known: [ChannelName: Int64] = [:]
        var localSubscribers: [ChannelName: Int] = [:]
        var keys: [String: APIKeyRecord] = [:]

        func emit(_ event: EngineEvent) { handler?(event) }
    }

    public init(configuration: EngineConfiguration = .init(), clock: any RealtimeClock = SystemClock()) {
        self.configuration = configuration
        self.clock = clock
        self.state = Mutex(State())
    }

    public func run(delivering handler: @escaping @Sendable (EngineEvent) -> Void) async throws {
        state.withLock { $0.handler = handler }
        defer { state.withLock { $0.handler = nil } }
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            sweep()
        }
    }

    /// Presence expiry, idempotency expiry and history expiry; the Redis engine gets the last two
    /// from key TTLs.
    func sweep() {
        _ = sweepPresence()
        let now = clock.nowMilliseconds()
        state.withLock { s in
            for (channel, records) in s.idempotency {
                let kept = records.filter { $0.value.expiresAt > now }
                s.idempotency[channel] = kept.isEmpty ? nil : kept
            }
            for channel in Array(s.streams.keys) { s.streams[channel]?.expire(now: now) }
        }
    }

    public func attach(_ channel: ChannelName) async throws {}
    public func detach(_ channel: ChannelName) async {}

    // MARK: Publish and history

    public func publish(_ request: PublishRequest) async throws -> PublishOutcome {
        let now = clock.nowMilliseconds()
        return state.withLock { s in
            let channel = request.channel
            if let key = request.idempotencyKey, let record = s.idempotency[channel]?[key], record.expiresAt > now {
                return PublishOutcome(id: record.id, status: .duplicate, timestamp: record.timestamp)
            }
            s.streams[channel]?.expire(now: now)
            // Mutated in place through the dictionary: a copy taken out and put back would share
            // the entries' storage, and the append would then copy the whole history.
            let d = configuration.channelDefaults
            let stored = s.settings[channel]
            let history = (size: stored?.historySize ?? d.historySize, ttlSeconds: stored?.historyTTLSeconds ?? d.historyTTLSeconds)
            let message = s.streams[channel, default: Stream()].append(request, at: now, keeping: history)
            let id = message.id
            if s.known[channel] == nil { s.known[channel] = now }
            if let key = request.idempotencyKey {
                let window = Int64(configuration.idempotencyWindowSeconds) * 1000
                s.idempotency[channel, default: [:]][key] = IdempotencyRecord(id: id, timestamp: now, expiresAt: now + window)
            }
            s.emit(.message(message))
            return PublishOutcome(id: id, status: .published, timestamp: now)
        }
    }


    public func history(_ channel: ChannelName, _ query: HistoryQuery) async throws -> HistoryPage {
        let now = clock.nowMilliseconds()
        return state.withLock { s in
            s.streams[channel]?.expire(now: now)
            guard let entries = s.streams[channel]?.entries else { return HistoryPage(messages: [], hasMore: false) }
            let lower = query.after.map { after in Self.firstIndex(in: entries) { $0.id > after } } ?? entries.startIndex
            let upper = query.through.map { through in Self.firstIndex(in: entries) { $0.id > through } } ?? entries.endIndex
            guard lower < upper else { return HistoryPage(messages: [], hasMore: false) }
            let count = upper - lower
            let take = min(count, max(query.limit, 0))
            let slice: [Message]
            switch query.direction {
            case .forwards: slice = Array(entries[lower..<(lower + take)])
            case .backwards: slice = Array(entries[(upper - take)..<upper].reversed())
            }
            return HistoryPage(messages: slice, hasMore: count > take)
        }
    }

    public func replay(_ channel: ChannelName, after position: MessageID) async throws -> Replay {
        let now = clock.nowMilliseconds()
        return state.withLock { s in
            s.streams[channel]?.expire(now: now)
            guard let stream = s.streams[channel] else { return Replay(messages: [], complete: true) }
            let start = Self.firstIndex(in: stream.entries) { $0.id > position }
            let complete = stream.maxDeletedID.map { $0 <= position } ?? true
            return Replay(messages: Array(stream.entries[start...]), complete: complete)
        }
    }

    /// First index whose element satisfies a predicate that is false then true along the sorted deque.
    static func firstIndex(in entries: Deque<Message>, where isAfter: (Message) -> Bool) -> Int {
        var lo = 0
        var hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if isAfter(entries[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    // MARK: Presence

    public func enterPresence(_ channel: ChannelName, member: PresenceMember) async throws -> PresenceEvent.Action {
        let now = clock.nowMilliseconds()
        let ttl = Int64(configuration.presenceTTLSeconds) * 1000
        return state.withLock { s in
            var member = member
            let action: PresenceEvent.Action
            if let existing = s.presence[channel]?[member.connectionID] {
                member.enteredAt = existing.member.enteredAt
                action = .update
            } else {
                action = .enter
            }
            s.presence[channel, default: [:]][member.connectionID] = PresenceEntry(member: member, expiresAt: now + ttl)
            if s.known[channel] == nil { s.known[channel] = now }
            s.emit(.presence(PresenceEvent(channel: channel, action: action, member: member)))
            return action
        }
    }

    public func leavePresence(_ channel: ChannelName, connectionID: String) async throws -> Bool {
        let now = clock.nowMilliseconds()
        return state.withLock { s in
            guard var member = s.presence[channel]?.removeValue(forKey: connectionID)?.member else { return false }
            if s.presence[channel]?.isEmpty == true { s.presence[channel] = nil }
            member.updatedAt = now
            s.emit(.presence(PresenceEvent(channel: channel, action: .leave, member: member)))
            return true
        }
    }

    public func presenceMembers(_ channel: ChannelName) async throws -> [PresenceMember] {
        let now = clock.nowMilliseconds()
        return state.withLock { s in
            (s.presence[channel] ?? [:]).values.filter { $0.expiresAt > now }.map(\.member).sorted { $0.enteredAt < $1.enteredAt }
        }
    }

    public func refreshPresence(_ members: [(channel: ChannelName, connectionID: String)]) async throws {
        let expiresAt = clock.nowMilliseconds() + Int64(configuration.presenceTTLSeconds) * 1000
        state.withLock { s in
            for (channel, connectionID) in members where s.presence[channel]?[connectionID] != nil {
                s.presence[channel]![connectionID]!.expiresAt = expiresAt
            }
        }
    }

    public func sweepExpiredPresence() async throws -> Int { sweepPresence() }

    func sweepPresence() -> Int {
        let now = clock.nowMilliseconds()
        return state.withLock { s in
            var removed = 0
            for (channel, members) in s.presence {
                for (connectionID, entry) in members where entry.expiresAt <= now {
                    s.presence[channel]![connectionID] = nil
                    removed += 1
                    var member = entry.member
                    member.updatedAt = now
                    s.emit(.presence(PresenceEvent(channel: channel, action: .leave, member: member)))
                }
                if s.presence[channel]?.isEmpty == true { s.presence[channel] = nil }
            }
            return removed
        }
    }

    // MARK: Channels

    public func createChannel(_ settings: ChannelSettings) async throws -> (settings: ChannelSettings, created: Bool) {
        try state.withLock { s in
            if let existing = s.settings[settings.name] {
                guard existing.type == settings.type, existing.historySize == settings.historySize,
                    existing.historyTTLSeconds == settings.historyTTLSeconds
                else { throw RealtimeError.conflict("channel '\(settings.name)' exists with different settings") }
                return (existing, false)
            }
            var stored = settings
            stored.explicit = true
            s.settings[settings.name] = stored
            s.known[settings.name] = settings.createdAt
            return (stored, true)
        }
    }

    public func channelSettings(_ name: ChannelName) async throws -> ChannelSettings {
        let (explicit, firstUse) = state.withLock { s in (s.settings[name], s.known[name]) }
        return explicit ?? defaultSettings(name, firstUse: firstUse ?? clock.nowMilliseconds())
    }

    func defaultSettings(_ name: ChannelName, firstUse: Int64) -> ChannelSettings {
        let d = configuration.channelDefaults
        return ChannelSettings(name: name, type: d.type, historySize: d.historySize, historyTTLSeconds: d.historyTTLSeconds, createdAt: firstUse, explicit: false)
    }

    public func listChannels(limit: Int, after cursor: ChannelName?) async throws -> (channels: [ChannelSettings], hasMore: Bool) {
        let (names, settings) = state.withLock { s in (s.known, s.settings) }
        let sorted = names.keys.filter { cursor == nil || $0 > cursor! }.sorted()
        let page = sorted.prefix(max(limit, 0)).map { settings[$0] ?? defaultSettings($0, firstUse: names[$0]!) }
        return (Array(page), sorted.count > page.count)
    }

    public func deleteChannel(_ name: ChannelName) async throws -> Bool {
        let now = clock.nowMilliseconds()
        return state.withLock { s in
            guard s.known[name] != nil || s.settings[name] != nil else { return false }
            for entry in (s.presence[name] ?? [:]).values.sorted(by: { $0.member.enteredAt < $1.member.enteredAt }) {
                var member = entry.member
                member.updatedAt = now
                s.emit(.presence(PresenceEvent(channel: name, action: .leave, member: member)))
            }
            s.presence[name] = nil
            s.streams[name] = nil
            s.idempotency[name] = nil
            s.settings[name] = nil
            s.known[name] = nil
            s.emit(.channelDeleted(name))
            return true
        }
    }

    public func channelStats(_ name: ChannelName) async throws -> ChannelStats {
        let now = clock.nowMilliseconds()
        return state.withLock { s in
            s.streams[name]?.expire(now: now)
            let stream = s.streams[name]
            return ChannelStats(
                subscribers: s.localSubscribers[name] ?? 0,
                presenceMembers: (s.presence[name] ?? [:]).values.filter { $0.expiresAt > now }.count,
                lastMessageID: stream?.entries.last?.id
            )
        }
    }

    public func reportLocalSubscribers(_ channel: ChannelName, count: Int) async {
        state.withLock { $0.localSubscribers[channel] = count > 0 ? count : nil }
    }

    // MARK: Keys

    public func storeKey(_ record: APIKeyRecord) async throws {
        state.withLock { $0.keys[record.keyID] = record }
    }

    public func key(id: String) async throws -> APIKeyRecord? {
        state.withLock { $0.keys[id] }
    }

    public func listKeys() async throws -> [APIKeyRecord] {
        state.withLock { s in s.keys.values.filter { !$0.revoked }.sorted { ($0.createdAt, $0.keyID) < ($1.createdAt, $1.keyID) } }
    }

    public func revokeKey(id: String) async throws -> Bool {
        state.withLock { s in
            guard let record = s.keys[id], !record.revoked else { return false }
            s.keys[id]!.revoked = true
            s.emit(.keyRevoked(keyID: id))
            return true
        }
    }

    public func checkReady() async throws {}
}
