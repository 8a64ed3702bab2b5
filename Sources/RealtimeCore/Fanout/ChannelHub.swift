import NIOCore
import Synchronization

/// Where a node's hub delivers a subscription's frames: in practice a WebSocket connection.
public protocol SubscriberSink: AnyObject, Sendable {
    /// The event loop `write` and `flush` must be called on; the hub hops there once per loop
    /// and message, not once per subscriber. Nil: they may be called on any thread.
    var eventLoop: (any EventLoop)? { get }
    /// Writes a frame without blocking and without flushing; the same bytes go to every
    /// subscriber. Returns true when the sink now holds unflushed bytes and no flush has been
    /// asked for since, so the caller must make sure `flush` runs.
    func write(_ frame: WireFrame) -> Bool
    /// Writes several frames in order, as `write(_:)` does one; a sink may take the run's
    /// `bytes` as one write (the default writes each frame).
    func write(_ run: WireFrameRun) -> Bool
    /// Flushes what `write` wrote.
    func flush()
    /// The sink fell too far behind (its queue or resume buffer overflowed); it must close (4008).
    func slowConsumer()
    /// The channel was deleted; the hub has already dropped this subscription.
    func channelEnded(_ channel: ChannelName)
}

extension SubscriberSink {
    public func write(_ run: WireFrameRun) -> Bool {
        var first = false
        for frame in run.frames {
            if write(frame) { first = true }
        }
        return first
    }
}

/// The outcome of a subscribe, reported to the client before any replayed message.
public struct SubscribeOutcome: Sendable, Equatable {
    /// True when `since_id` was given and every message after it was still retained (and the
    /// epoch, when given, is still the channel's).
    public var resumed: Bool
    public var replayed: Int
    /// The channel's epoch, for the client to send back with `since_id` when it resumes.
    public var epoch: String
}

/// A live subscription of one sink to one channel on this node.
public struct HubSubscription: Sendable, Hashable {
    public let channel: ChannelName
    let id: UInt64
}

/// Node-local fan-out, and the one owner of what the delivery guarantees rest on:
/// - the per-channel attach count: the first local subscriber subscribes the broker, later ones
///   wait for that attach and share its failure, the last one unsubscribes it (attach and detach
///   of one channel never overlap);
/// - the live-first / buffer / replay / merge-by-id procedure, for resuming subscribers and for
///   the whole channel after the broker's link was interrupted;
/// - the last message id delivered per channel: no id at or below it is ever delivered again.
///
/// Each message is encoded once and the same bytes are queued to every local subscriber, one
/// hop per event loop. State is sharded by channel; frames are queued to the sinks' loops under
/// the channel's shard lock, which is what keeps every sink's frames in channel order.
public final class ChannelHub: Sendable {
    let engine: Engine
    /// Bound on events buffered for one subscriber (or one recovering channel) meanwhile.
    let resumeBufferLimit: Int
    let shards: [Locked<Shard>]
    let nextID = Atomic<UInt64>(1)
    /// False between the broker's `interrupted` and `restored`.
    let brokerUp = Atomic<Bool>(true)
    /// Counts `interrupted` events, so a recovery that raced a new interruption starts over.
    let interruptions = Atomic<Int>(0)
    let controlHandler = Mutex<EventHandler?>(nil)
    let batches = Mutex<[ObjectIdentifier: FlushBatch]>([:])
    let background = Mutex<Background>(Background())

    /// Work the hub starts from event callbacks (recoveries, detaches, count reports); `run`
    /// carries it out in its task group.
    struct Background {
        var jobs: AsyncStream<Job>.Continuation?
        var dirtyCounts: Set<ChannelName> = []
        var reporting = false
    }

    enum Job: Sendable {
        case recover(ChannelName)
        case detach(ChannelName)
        case reportCounts
    }

    enum Link {
        /// The broker is being subscribed and the position read; events are held.
        case attaching
        case attached
        /// Reading what the channel missed while the broker's link was down; events are held.
        case recovering
        /// The broker is being unsubscribed; new subscribers wait for the next attach.
        case detaching
    }

    enum Buffered {
        case message(MessageID, WireFrame)
        case frame(WireFrame)
    }

    struct Pending {
        var sink: any SubscriberSink
        var items: [Buffered] = []
        var overflowed = false
    }

    struct Channel {
        var link = Link.attaching
        var live = LiveSubscribers()
        var pending: [UInt64: Pending] = [:]
        /// Subscribers waiting for the link to be attached, by subscription id.
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        /// When each waiter began waiting (monotonic ns), for the recovery loop to bound it.
        var waitingSince: [UInt64: ContinuousClock.Instant] = [:]
        /// The last message id passed to this channel's subscribers.
        var lastDelivered = MessageID.zero
        /// The greatest `floor` of a live sink above `lastDelivered` (nil: none is).
        var maxFloor: MessageID?
        /// Events held while attaching or recovering.
        var held: [EngineEvent] = []
        var heldOverflowed = false
        /// The broker's link was interrupted while attaching: recover before going live.
        var missed = false
        var recovering = false
        /// Members as this node's subscribers saw them (nil: unknown), to reconcile presence
        /// after an interruption.
        var members: [String: PresenceMember]?
        /// The channel's epoch as of the attach or the last `epochChanged`.
        var epoch = ""
        /// Another node changed the epoch: the stream may now be behind `lastDelivered`, and
        /// recovery takes its newest id as the position instead of changing the epoch again.
        var positionVoid = false
        /// The delivered id found lost and dealt with (epoch changed, subscribers told): the
        /// stream keeps not holding it, which is no new loss.
        var lossHandledAt: MessageID?
        var count: Int { live.count + pending.count }
    }

    struct Shard {
        var channels: [ChannelName: Channel] = [:]
    }

    /// How long a subscriber waits for a channel that is attaching or recovering.
    let linkWait: Duration

    /// The least time between two flush passes of one event loop (see ``FlushBatch``).
    let flushGap: TimeAmount

    public init(
        engine: Engine, resumeBufferLimit: Int = 10_000, shardCount: Int = 16, linkWait: Duration = .seconds(10),
        flushGap: TimeAmount = .milliseconds(1)
    ) {
        self.engine = engine
        self.linkWait = linkWait
        self.flushGap = flushGap
        self.resumeBufferLimit = resumeBufferLimit
        self.shards = (0..<max(1, shardCount)).map { _ in Locked(Shard(), counting: LockStatistics.hubShards) }
    }

    var broker: any Broker { engine.broker }

    func shard(_ channel: ChannelName) -> Locked<Shard> {
        var hasher = Hasher()
        hasher.combine(channel)
        return shards[Int(UInt(bitPattern: hasher.finalize()) % UInt(shards.count))]
    }

    /// Receives node-wide control events (key revocations) that concern no channel's subscribers.
    public func onControl(_ handler: @escaping @Sendable (EngineEvent) -> Void) {
        controlHandler.withLock { $0 = EventHandler(handler) }
    }

    /// Subscribers on this node for a channel.
    public func localCount(_ channel: ChannelName) -> Int {
        shard(channel).withLock { $0.channels[channel]?.count ?? 0 }
    }

    /// Runs the engine, feeding its events to the hub, and the hub's own background work, until
    /// the calling task is cancelled.
    public func run() async throws {
        let (jobs, continuation) = AsyncStream<Job>.makeStream()
        background.withLock { $0.jobs = continuation }
        defer { background.withLock { $0.jobs = nil } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.engine.run(delivering: { self.handle($0) }) }
            group.addTask {
                await withDiscardingTaskGroup { jobGroup in
                    for await job in jobs {
                        jobGroup.addTask { await self.perform(job) }
                    }
                }
            }
            try await group.next()
            continuation.finish()
            group.cancelAll()
        }
    }

    func schedule(_ job: Job) {
        _ = background.withLock { $0.jobs }?.yield(job)
    }

    func perform(_ job: Job) async {
        switch job {
        case .recover(let channel): await recover(channel)
        case .detach(let channel): try? await drive(channel)
        case .reportCounts: await reportCounts()
        }
    }
}
