import DequeModule

/// The broker of the memory engine: every publish reaches the one node, so subscribing is free.
extension MemoryEngine: Broker {
    public func run(delivering handler: @escaping @Sendable (EngineEvent) -> Void) async throws {
        self.handler.withLock { $0 = EventHandler(handler) }
        defer { self.handler.withLock { $0 = nil } }
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1), clock: .suspending)
            sweepStorage()
        }
    }

    public func subscribe(_ channel: ChannelName) async throws {}
    public func unsubscribe(_ channel: ChannelName) async {}

    public func publish(_ request: PublishRequest) async throws -> PublishOutcome {
        let now = clock.nowMilliseconds()
        let d = configuration.channelDefaults
        let window = configuration.idempotencyWindowSeconds
        return withShard(request.channel) { s in
            let channel = request.channel
            if let key = request.idempotencyKey, let record = s.idempotency[channel]?[key], record.expiresAt > now {
                return PublishOutcome(id: record.id, status: .duplicate, timestamp: record.timestamp)
            }
            s.streams[channel]?.expire(now: now)
            let stored = s.settings[channel]
            let history = (size: stored?.historySize ?? d.historySize, ttlSeconds: stored?.historyTTLSeconds ?? d.historyTTLSeconds)
            // Mutated in place through the dictionary: a copy taken out and put back would share
            // the entries' storage, and the append would then copy the whole history.
            let message = s.streams[channel, default: Stream()].append(request, at: now, keeping: history)
            if s.known[channel] == nil { s.known[channel] = now }
            if let key = request.idempotencyKey {
                s.idempotency[channel, default: [:]][key] = IdempotencyRecord(id: message.id, timestamp: now, expiresAt: Self.later(now, seconds: window))
            }
            s.outbox.append(.message(message))
            return PublishOutcome(id: message.id, status: .published, timestamp: now)
        }
    }

    public func history(_ channel: ChannelName, _ query: HistoryQuery) async throws -> HistoryPage {
        let now = clock.nowMilliseconds()
        return withShard(channel) { s in
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

    public func replay(_ channel: ChannelName, after position: MessageID, limit: Int) async throws -> Replay {
        let now = clock.nowMilliseconds()
        return withShard(channel) { s in
            s.streams[channel]?.expire(now: now)
            let epoch = Self.epoch(channel, s, start: startEpoch)
            guard let stream = s.streams[channel] else {
                return Replay(messages: [], complete: true, epoch: epoch, newest: .zero, positionLost: position != .zero)
            }
            let start = Self.firstIndex(in: stream.entries) { $0.id > position }
            let end = min(stream.entries.count, start + max(limit, 1))
            let complete = stream.maxDeletedID.map { $0 <= position } ?? true
            let held = start > 0 && stream.entries[start - 1].id == position
            let lost = position != .zero && position > (stream.maxDeletedID ?? .zero) && !held
            return Replay(
                messages: Array(stream.entries[start..<end]), complete: complete, hasMore: end < stream.entries.count, epoch: epoch,
                newest: stream.lastID, positionLost: lost)
        }
    }

    public func position(_ channel: ChannelName) async throws -> MessageID {
        withShard(channel) { $0.streams[channel]?.lastID ?? .zero }
    }

    public func epoch(_ channel: ChannelName) async throws -> String {
        withShard(channel) { Self.epoch(channel, $0, start: startEpoch) }
    }

    /// A channel has an epoch from its first publish on ('' before), as on Redis.
    static func epoch(_ channel: ChannelName, _ s: Shard, start: String) -> String {
        s.epochs[channel] ?? (s.streams[channel] == nil ? "" : start)
    }

    public func changeEpoch(_ channel: ChannelName, from: String) async throws -> String {
        withShard(channel) { s in
            let current = Self.epoch(channel, s, start: startEpoch)
            guard current == from else { return current }
            let next = RandomID.hex(bytes: 6)
            s.epochs[channel] = next
            s.outbox.append(.epochChanged(channel, epoch: next))
            return next
        }
    }

    /// Ready once `run` delivers events to the node.
    public func checkReady() async throws {
        guard handler.withLock({ $0 != nil }) else { throw RealtimeError.engineUnavailable("engine not running") }
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
}
