import NIOCore
import Synchronization

/// Where a node's hub delivers a subscription's frames: in practice a WebSocket connection.
public protocol SubscriberSink: AnyObject, Sendable {
    /// Queues an encoded text frame without blocking. The same buffer goes to every subscriber.
    func send(_ frame: ByteBuffer)
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

    struct LiveEntry {
        var id: UInt64
        var sink: any SubscriberSink
    }

    enum Buffered {
        case message(Message)
        case frame(ByteBuffer)
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
        for message in replay?.messages ?? [] {
            sink.send(ByteBuffer(string: message.json(asPush: true)))
            last = message.id
        }
        return state.withLock { s -> HubSubscription? in
            guard let pending = s.channels[channel]?.pending.removeValue(forKey: id) else { return nil }
            if pending.overflowed {
                sink.slowConsumer()
                s.channels[channel]!.pending[id] = pending
                return HubSubscription(channel: channel, id: id)
            }
            for item in pending.items {
                switch item {
                case .message(let m):
                    if let l = last, m.id <= l { continue }
                    last = m.id
                    sink.send(ByteBuffer(string: m.json(asPush: true)))
                case .frame(let f):
                    sink.send(f)
                }
            }
            s.channels[channel]!.live.append(LiveEntry(id: id, sink: sink))
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
            guard var ch = s.channels[channel] else { return false }
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
            let frame = ByteBuffer(string: message.json(asPush: true))
            for entry in live { entry.sink.send(frame) }
        case .presence(let presence):
            let frame = ByteBuffer(string: presence.pushJSON)
            guard let live = collect(presence.channel, .frame(frame)) else { return }
            for entry in live { entry.sink.send(frame) }
        case .channelDeleted(let channel):
            let removed = state.withLock { $0.channels.removeValue(forKey: channel) }
            guard let removed else { return }
            for entry in removed.live { entry.sink.channelEnded(channel) }
            for pending in removed.pending.values { pending.sink.channelEnded(channel) }
        case .keyRevoked:
            controlHandler.withLock { $0 }?(event)
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
