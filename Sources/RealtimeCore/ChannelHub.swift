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
    /// Flushes what `write` wrote.
    func flush()
    /// The sink fell too far behind (its queue or resume buffer overflowed); it must close (4008).
    func slowConsumer()
    /// The channel was deleted; the hub has already dropped this subscription.
    func channelEnded(_ channel: ChannelName)
}

/// The outcome of a subscribe, reported to the client before any replayed message.
public struct SubscribeOutcome: Sendable, Equatable {
    /// True when `since_id` was given and every message after it was still retained.
    public var resumed: Bool
    public var replayed: Int
}

/// A live subscription of one sink to one channel on this node.
public struct HubSubscription: Sendable, Hashable {
    public let channel: ChannelName
    let id: UInt64
}

/// Node-local fan-out: the node's subscribers per channel, fed by the engine's events.
///
/// Each message is encoded once and the same bytes are queued to every local subscriber.
/// Subscribe-with-resume is gap-free: the subscriber is registered (buffering) before the engine
/// attaches, history after `since_id` is read, then replay and buffer are merged by id and the
/// subscriber goes live. Events must be handed to ``handle(_:)`` serially per channel, which
/// every engine does.
public final class ChannelHub: Sendable {
    let engine: any Engine
    /// Bound on events buffered for one subscriber while its history is read.
    let resumeBufferLimit: Int
    let state = Mutex(State())
    let controlHandler = Mutex<(@Sendable (EngineEvent) -> Void)?>(nil)
    let batches = Mutex<[ObjectIdentifier: FlushBatch]>([:])

    struct LiveEntry {
        var id: UInt64
        var sink: any SubscriberSink
        /// The sink's loop and that loop's flush batch, looked up once at subscribe time so
        /// fan-out takes no lock for them.
        var loop: (any EventLoop)?
        var batch: FlushBatch?
    }

    enum Buffered {
        case message(Message)
        case frame(WireFrame)
    }

    struct Pending {
        var sink: any SubscriberSink
        var items: [Buffered] = []
        var overflowed = false
    }

    struct Channel {
        /// Replaced, never mutated in place while shared, so fan-out can iterate a copy outside the lock.
        var live: [LiveEntry] = []
        var pending: [UInt64: Pending] = [:]
        var count: Int { live.count + pending.count }
    }

    struct State {
        var channels: [ChannelName: Channel] = [:]
        var nextID: UInt64 = 1
    }

    public init(engine: any Engine, resumeBufferLimit: Int = 10_000) {
        self.engine = engine
        self.resumeBufferLimit = resumeBufferLimit
    }

    /// Receives node-wide control events (key revocations) that concern no channel's subscribers.
    public func onControl(_ handler: @escaping @Sendable (EngineEvent) -> Void) {
        controlHandler.withLock { $0 = handler }
    }

    /// Subscribers on this node for a channel.
    public func localCount(_ channel: ChannelName) -> Int {
        state.withLock { $0.channels[channel]?.count ?? 0 }
    }

    /// Subscribes `sink`; `announce` runs once the outcome is known and before any message is
    /// sent, so the client sees its `subscribed` reply first. Returns nil when the channel was
    /// deleted while subscribing.
    public func subscribe(
        _ channel: ChannelName,
        sink: any SubscriberSink,
        since: MessageID?,
        announce: (SubscribeOutcome) -> Void
    ) async throws -> HubSubscription? {
        let (id, count) = state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.channels[channel, default: Channel()].pending[id] = Pending(sink: sink)
            return (id, s.channels[channel]!.count)
        }
        let replay: Replay?
        do {
            try await engine.attach(channel)
        } catch {
            _ = removeEntry(channel, id)
            throw error
        }
        do {
            if let since { replay = try await engine.replay(channel, after: since) } else { replay = nil }
        } catch {
            if removeEntry(channel, id) { await engine.detach(channel) }
            throw error
        }
        await engine.reportLocalSubscribers(channel, count: count)
        announce(SubscribeOutcome(resumed: replay?.complete ?? false, replayed: replay?.messages.count ?? 0))
        var last = since
        let replayed = (replay?.messages ?? []).map { WireFrame(text: $0.json(asPush: true)) }
        last = replay?.messages.last?.id ?? last
        Self.deliver(replayed, to: sink)
        return state.withLock { s -> HubSubscription? in
            guard let pending = s.channels[channel]?.pending.removeValue(forKey: id) else { return nil }
            if pending.overflowed {
                sink.slowConsumer()
                s.channels[channel]!.pending[id] = pending
                return HubSubscription(channel: channel, id: id)
            }
            var frames: [WireFrame] = []
            for item in pending.items {
                switch item {
                case .message(let m):
                    if let l = last, m.id <= l { continue }
                    last = m.id
                    frames.append(WireFrame(text: m.json(asPush: true)))
                case .frame(let f):
                    frames.append(f)
                }
            }
            // Queued on the sink's loop under the lock, so ahead of any live frame.
            Self.deliver(frames, to: sink)
            s.channels[channel]!.live.append(LiveEntry(id: id, sink: sink, loop: sink.eventLoop, batch: sink.eventLoop.map(flushBatch(for:))))
            return HubSubscription(channel: channel, id: id)
        }
    }

    /// Ends a subscription; the engine is detached when this was the node's last use of it.
    public func unsubscribe(_ subscription: HubSubscription) async {
        guard removeEntry(subscription.channel, subscription.id) else { return }
        await engine.detach(subscription.channel)
        await engine.reportLocalSubscribers(subscription.channel, count: localCount(subscription.channel))
    }

    private func removeEntry(_ channel: ChannelName, _ id: UInt64) -> Bool {
        state.withLock { s in
            // Moved out and back so `live` is edited in place, not copied.
            guard var ch = s.channels.removeValue(forKey: channel) else { return false }
            var removed = ch.pending.removeValue(forKey: id) != nil
            if !removed, let index = ch.live.firstIndex(where: { $0.id == id }) {
                ch.live.remove(at: index)
                removed = true
            }
            s.channels[channel] = ch.count == 0 ? nil : ch
            return removed
        }
    }

    /// The engine's event handler.
    public func handle(_ event: EngineEvent) {
        switch event {
        case .message(let message):
            guard let live = collect(message.channel, .message(message)), !live.isEmpty else { return }
            fanOut(WireFrame(text: message.json(asPush: true)), to: live)
        case .presence(let presence):
            let frame = WireFrame(text: presence.pushJSON)
            guard let live = collect(presence.channel, .frame(frame)) else { return }
            fanOut(frame, to: live)
        case .channelDeleted(let channel):
            let removed = state.withLock { $0.channels.removeValue(forKey: channel) }
            guard let removed else { return }
            for entry in removed.live { entry.sink.channelEnded(channel) }
            for pending in removed.pending.values { pending.sink.channelEnded(channel) }
        case .keyRevoked:
            controlHandler.withLock { $0 }?(event)
        }
    }

    /// Writes frames to one sink on its loop, then flushes.
    static func deliver(_ frames: [WireFrame], to sink: any SubscriberSink) {
        guard !frames.isEmpty else { return }
        guard let loop = sink.eventLoop else {
            for f in frames { _ = sink.write(f) }
            sink.flush()
            return
        }
        loop.execute {
            for f in frames { _ = sink.write(f) }
            sink.flush()
        }
    }

    /// Writes one frame to many sinks: one task per event loop writes it to each of that loop's
    /// sinks, so a message costs a hop per loop rather than per subscriber. Flushes are
    /// coalesced by the loop's ``FlushBatch``: when messages arrive faster than the loop writes
    /// them, each socket gets one system call for several frames instead of one per frame.
    func fanOut(_ frame: WireFrame, to live: [LiveEntry]) {
        if live.count == 1 {
            Self.deliver([frame], to: live[0].sink)
            return
        }
        var groups: [(loop: (any EventLoop)?, batch: FlushBatch?, sinks: [any SubscriberSink])] = []
        for entry in live {
            if let i = groups.firstIndex(where: { $0.loop === entry.loop }) {
                groups[i].sinks.append(entry.sink)
            } else {
                groups.append((entry.loop, entry.batch, [entry.sink]))
            }
        }
        for group in groups {
            let sinks = group.sinks
            guard let loop = group.loop, let batch = group.batch else {
                for s in sinks { _ = s.write(frame) }
                for s in sinks { s.flush() }
                continue
            }
            loop.execute {
                for s in sinks where s.write(frame) { batch.dirty.append(s) }
                batch.schedule(on: loop)
            }
        }
    }

    private func flushBatch(for loop: any EventLoop) -> FlushBatch {
        batches.withLock { b in
            let key = ObjectIdentifier(loop)
            if let batch = b[key] { return batch }
            let batch = FlushBatch()
            b[key] = batch
            return batch
        }
    }

    /// Buffers the event for resuming subscribers and returns the live ones, under the lock.
    private func collect(_ channel: ChannelName, _ item: Buffered) -> [LiveEntry]? {
        let (live, overflowed) = state.withLock { s -> ([LiveEntry]?, [any SubscriberSink]) in
            guard s.channels[channel] != nil else { return (nil, []) }
            guard !s.channels[channel]!.pending.isEmpty else { return (s.channels[channel]!.live, []) }
            // Moved out and back so the buffers are mutated in place, not copied.
            var ch = s.channels.removeValue(forKey: channel)!
            var overflowed: [any SubscriberSink] = []
            do {
                for id in Array(ch.pending.keys) where !ch.pending[id]!.overflowed {
                    if ch.pending[id]!.items.count >= resumeBufferLimit {
                        ch.pending[id]!.overflowed = true
                        ch.pending[id]!.items.removeAll()
                        overflowed.append(ch.pending[id]!.sink)
                    } else {
                        ch.pending[id]!.items.append(item)
                    }
                }
                s.channels[channel] = ch
            }
            return (ch.live, overflowed)
        }
        for sink in overflowed { sink.slowConsumer() }
        return live
    }
}

/// Sinks of one event loop written to but not yet flushed. Touched only on that loop.
final class FlushBatch: @unchecked Sendable {
    var dirty: [any SubscriberSink] = []
    private var scheduled = false

    /// Queues one flush pass behind the tasks already queued on the loop (further fan-outs).
    func schedule(on loop: any EventLoop) {
        guard !scheduled, !dirty.isEmpty else { return }
        scheduled = true
        loop.execute {
            let sinks = self.dirty
            self.dirty = []
            self.scheduled = false
            for s in sinks { s.flush() }
        }
    }
}
