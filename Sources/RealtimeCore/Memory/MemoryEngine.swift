import DequeModule
import Synchronization

/// The embedded single-node engine: everything in process, mirroring the Redis engine's semantics
/// (stream ids, `MAXLEN` trimming, history and idempotency expiry, presence TTL) so both pass the
/// same conformance suite. One object implements the four parts of ``Engine``; ``engine`` hands
/// them out.
///
/// State is sharded by channel: each shard has its own lock and an outbox of events. A change
/// appends its events to the shard's outbox under the lock; whoever finds the outbox idle then
/// hands the events to the node outside the lock, in order. That keeps per-channel total order
/// without running fan-out inside any lock.
public final class MemoryEngine: Sendable {
    public let configuration: EngineConfiguration
    let clock: any RealtimeClock
    let shards: [Locked<Shard>]
    let keyRecords = Mutex<[String: APIKeyRecord]>([:])
    let handler = Mutex<EventHandler?>(nil)
    /// Every channel's epoch until one changes: new at each start, since a restarted node has
    /// lost its history and a position from before means nothing.
    let startEpoch = RandomID.hex(bytes: 6)

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
        /// Saturating: a TTL of any size cannot overflow.
        mutating func expire(now: Int64) {
            let (ttlMs, overflow) = Int64(ttlSeconds).multipliedReportingOverflow(by: 1000)
            guard ttlSeconds > 0, !overflow, now.subtractingReportingOverflow(lastPublishAt).partialValue >= ttlMs, !entries.isEmpty else { return }
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

    /// Everything about the channels that hash to one shard.
    struct Shard {
        var streams: [ChannelName: Stream] = [:]
        var idempotency: [ChannelName: [String: IdempotencyRecord]] = [:]
        var presence: [ChannelName: [String: PresenceEntry]] = [:]
        var settings: [ChannelName: ChannelSettings] = [:]
        /// Channels created or used, with the time of first use.
        var known: [ChannelName: Int64] = [:]
        var localSubscribers: [ChannelName: Int] = [:]
        /// Epochs changed since start (every other channel is in the engine's `epoch`).
        var epochs: [ChannelName: String] = [:]
        /// Events waiting to be handed out, in the order they happened.
        var outbox = Deque<EngineEvent>()
        var draining = false
    }

    public init(configuration: EngineConfiguration = .init(), clock: any RealtimeClock = SystemClock(), shardCount: Int = 16) {
        self.configuration = configuration
        self.clock = clock
        self.shards = (0..<max(1, shardCount)).map { _ in Locked(Shard(), counting: LockStatistics.memoryEngineShards) }
    }

    /// The four parts of the engine, all served by this object.
    public var engine: Engine {
        Engine(configuration: configuration, broker: self, presence: self, channels: self, keys: self)
    }

    func shardIndex(_ channel: ChannelName) -> Int {
        var hasher = Hasher()
        hasher.combine(channel)
        return Int(UInt(bitPattern: hasher.finalize()) % UInt(shards.count))
    }

    /// Runs `body` on the channel's shard, then hands out the events it queued (outside the lock).
    @discardableResult
    func withShard<T, E: Error>(_ channel: ChannelName, _ body: (inout Shard) throws(E) -> T) throws(E) -> T {
        try withShard(at: shardIndex(channel), body)
    }

    /// The same for a shard by index (the sweeps visit every shard).
    func withShard<T, E: Error>(at index: Int, _ body: (inout Shard) throws(E) -> T) throws(E) -> T {
        let (result, drain) = try shards[index].withLock { s throws(E) -> (T, Bool) in
            let result = try body(&s)
            guard !s.outbox.isEmpty, !s.draining else { return (result, false) }
            s.draining = true
            return (result, true)
        }
        if drain { drainOutbox(index) }
        return result
    }

    /// Hands out a shard's queued events in order until none is left. Only one caller drains a
    /// shard at a time, so order holds across concurrent publishers.
    func drainOutbox(_ index: Int) {
        let deliver = handler.withLock { $0 }?.deliver
        while true {
            let batch = shards[index].withLock { s -> Deque<EngineEvent> in
                let batch = s.outbox
                s.outbox.removeAll()
                if batch.isEmpty { s.draining = false }
                return batch
            }
            if batch.isEmpty { return }
            if let deliver { for event in batch { deliver(event) } }
        }
    }

    /// Key revocations concern no channel; they go straight to the node.
    func emitControl(_ event: EngineEvent) {
        handler.withLock { $0 }?.deliver(event)
    }

    /// Presence expiry, idempotency expiry and history expiry; the Redis engine gets the last two
    /// from key TTLs.
    func sweepStorage() {
        let now = clock.nowMilliseconds()
        for shard in shards {
            shard.withLock { s in
                for (channel, records) in s.idempotency {
                    let kept = records.filter { $0.value.expiresAt > now }
                    s.idempotency[channel] = kept.isEmpty ? nil : kept
                }
                for channel in Array(s.streams.keys) { s.streams[channel]?.expire(now: now) }
            }
        }
    }

    /// Adds milliseconds without overflow.
    static func later(_ now: Int64, seconds: Int) -> Int64 {
        let (ms, o1) = Int64(seconds).multipliedReportingOverflow(by: 1000)
        let (sum, o2) = now.addingReportingOverflow(ms)
        return o1 || o2 ? .max : sum
    }
}
