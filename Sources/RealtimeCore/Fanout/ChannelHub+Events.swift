import NIOCore

extension ChannelHub {
    /// The engine's event handler. The broker calls it serially per channel.
    public func handle(_ event: EngineEvent) {
        switch event {
        case .message(let message):
            route(message.channel, event)
        case .presence(let presence):
            route(presence.channel, event)
        case .channelDeleted(let channel):
            channelDeleted(channel)
        case .keyRevoked:
            controlHandler.withLock { $0 }?.deliver(event)
        case .interrupted:
            brokerUp.store(false, ordering: .relaxed)
            interruptions.add(1, ordering: .relaxed)
            for shard in shards {
                let toRecover = shard.withLock { s -> [ChannelName] in
                    var recover: [ChannelName] = []
                    for name in Array(s.channels.keys) {
                        switch s.channels[name]!.link {
                        case .attached:
                            s.channels[name]!.link = .recovering
                            recover.append(name)
                        case .attaching:
                            s.channels[name]!.missed = true
                        case .recovering, .detaching:
                            break
                        }
                    }
                    return recover
                }
                for name in toRecover { schedule(.recover(name)) }
            }
        case .restored:
            brokerUp.store(true, ordering: .relaxed)
        case .epochChanged(let channel, let epoch):
            epochChanged(channel, to: epoch)
        }
    }

    /// Another node found the channel's stream behind what it delivered and changed the epoch:
    /// subscribers are told (`resumed: false` with the new epoch), and the channel re-reads its
    /// position from the stream as it now is.
    func epochChanged(_ channel: ChannelName, to epoch: String) {
        let recover = shard(channel).withLock { s -> Bool in
            guard var ch = s.channels[channel], ch.epoch != epoch else { return false }
            defer { s.channels[channel] = ch }
            ch.epoch = epoch
            notifyResync(channel, &ch)
            switch ch.link {
            case .attached:
                ch.link = .recovering
                ch.positionVoid = true
                return true
            case .recovering:
                ch.positionVoid = true
                return false
            case .attaching, .detaching:
                return false
            }
        }
        if recover { schedule(.recover(channel)) }
    }

    /// Tells every subscriber of the channel, live or joining, that messages may be missing.
    func notifyResync(_ channel: ChannelName, _ ch: inout Channel) {
        let notice = WireFrame(text: Self.resyncNotice(channel, epoch: ch.epoch))
        if !ch.live.isEmpty { fanOut(notice, to: ch.live) }
        for id in Array(ch.pending.keys) { ch.pending[id]!.items.append(.frame(notice)) }
    }

    /// Holds the event while the channel's link is not attached; delivers it otherwise.
    func route(_ channel: ChannelName, _ event: EngineEvent) {
        var slow: [any SubscriberSink] = []
        shard(channel).withLock { s in
            guard s.channels[channel] != nil else { return }
            // Moved out and back so buffers are mutated in place, not copied.
            var ch = s.channels.removeValue(forKey: channel)!
            defer { s.channels[channel] = ch }
            switch ch.link {
            case .attached:
                process(event, &ch, slow: &slow)
            case .attaching, .recovering:
                guard !ch.heldOverflowed else { return }
                if ch.held.count >= resumeBufferLimit {
                    // Everything held is in history too: drop it and read it from there.
                    ch.heldOverflowed = true
                    ch.held = []
                } else {
                    ch.held.append(event)
                }
            case .detaching:
                break
            }
        }
        for sink in slow { sink.slowConsumer() }
    }

    /// Passes one event to the channel's subscribers (under its shard lock): messages at or
    /// below the last delivered id are dropped; live sinks get the frame queued on their loops,
    /// pending ones buffer it.
    func process(_ event: EngineEvent, _ ch: inout Channel, slow: inout [any SubscriberSink]) {
        let frame: WireFrame
        let item: Buffered
        switch event {
        case .message(let m):
            guard m.id > ch.lastDelivered else { return }
            ch.lastDelivered = m.id
            frame = WireFrame(text: m.json(asPush: true))
            item = .message(m.id, frame)
        case .presence(let p):
            if ch.members != nil {
                ch.members![p.member.connectionID] = p.action == .leave ? nil : p.member
            }
            frame = WireFrame(text: p.pushJSON)
            item = .frame(frame)
        default:
            return
        }
        if !ch.pending.isEmpty {
            for id in Array(ch.pending.keys) where !ch.pending[id]!.overflowed {
                if ch.pending[id]!.items.count >= resumeBufferLimit {
                    ch.pending[id]!.overflowed = true
                    ch.pending[id]!.items.removeAll()
                    slow.append(ch.pending[id]!.sink)
                } else {
                    ch.pending[id]!.items.append(item)
                }
            }
        }
        guard !ch.live.isEmpty else { return }
        if case .message(let m) = event, let floor = ch.maxFloor {
            guard m.id <= floor else {
                // Past every floor: no sink has this message yet, nor any after it.
                ch.maxFloor = nil
                ch.live.floors = [:]
                fanOut(frame, to: ch.live)
                return
            }
            // Some sinks already have this message (they resumed ahead of this node).
            // Each filtered group has an outbox of its own; later frames must not join the
            // tasks already waiting, which would put them ahead of this one.
            let behind = ch.live.behind(m.id)
            for group in behind { fanOut(frame, to: group, acrossLoops: behind.count > 1) }
            ch.live.renewOutboxes()
            return
        }
        fanOut(frame, to: ch.live)
    }

    func channelDeleted(_ channel: ChannelName) {
        var sinks: [any SubscriberSink] = []
        let detach = shard(channel).withLock { s -> Bool in
            guard var ch = s.channels.removeValue(forKey: channel) else { return false }
            sinks = ch.live.sinks + ch.pending.values.map(\.sink)
            ch.live.removeAll()
            ch.pending = [:]
            ch.held = []
            let waiters = ch.waiters.values
            ch.waiters = [:]
            ch.waitingSince = [:]
            for w in waiters { w.resume() }
            var detach = false
            if ch.link == .attached || ch.link == .recovering {
                ch.link = .detaching
                detach = true
            }
            s.channels[channel] = ch
            return detach
        }
        for sink in sinks { sink.channelEnded(channel) }
        if detach { schedule(.detach(channel)) }
        markCountDirty(channel)
    }

    /// Writes frames to one sink on its loop, as one run (a resume's replay reaches the socket
    /// as one write, not one per message), then flushes.
    static func deliver(_ frames: [WireFrame], to sink: any SubscriberSink) {
        guard !frames.isEmpty else { return }
        let run = WireFrameRun(frames)
        guard let loop = sink.eventLoop else {
            _ = sink.write(run)
            sink.flush()
            return
        }
        loop.execute {
            _ = sink.write(run)
            sink.flush()
        }
    }

    /// Writes one frame to every live sink: at most one task per event loop (the sinks are
    /// kept grouped by loop as they join) writes it to each of that loop's sinks, so a message
    /// costs a hop per loop rather than per subscriber, and no pass over the subscribers under
    /// the shard lock; a frame that finds the loop's task still waiting joins it (``Outbox``).
    /// Flushes are coalesced by the loop's ``FlushBatch``: when messages arrive faster than the
    /// loop writes them, each socket gets one system call for several frames instead of one per
    /// frame.
    func fanOut(_ frame: WireFrame, to live: LiveSubscribers) {
        if let only = live.single {
            Self.deliver([frame], to: only)
            return
        }
        for group in live.groups { fanOut(frame, to: group, acrossLoops: live.groups.count > 1) }
    }

    /// Writes one frame to the sinks of one loop, in a task on that loop: the group's waiting
    /// task when it has one (``Outbox``), else a new one. `acrossLoops`: other loops write the
    /// same frame, so this loop writes a copy of its own (``WireFrameRun``).
    func fanOut(_ frame: WireFrame, to group: LiveSubscribers.Group, acrossLoops: Bool) {
        guard let loop = group.loop, let batch = group.batch else {
            for s in group.sinks { _ = s.write(frame) }
            for s in group.sinks { s.flush() }
            return
        }
        group.outbox.post(frame, to: group.sinks, on: loop, batch: batch, acrossLoops: acrossLoops)
    }

    func flushBatch(for loop: any EventLoop) -> FlushBatch {
        batches.withLock { b in
            let key = ObjectIdentifier(loop)
            if let batch = b[key] { return batch }
            let batch = FlushBatch(gap: flushGap)
            b[key] = batch
            return batch
        }
    }
}

/// Sinks of one event loop written to but not yet flushed. Touched only on that loop.
///
/// A flush pass writes every dirty sink's socket (one system call each). Passes on one loop
/// keep at least `gap` between the end of one and the start of the next: a message arriving
/// right after a pass waits at most `gap`, and its frames then share the system call of every
/// frame that arrived meanwhile. A loop that flushed longer ago than `gap` flushes at once, so
/// the gap costs nothing at low rates; at high rates it turns one system call per frame per
/// socket into one per several (docs/benchmarks.md: about 1.5-2× the deliveries per core).
final class FlushBatch: @unchecked Sendable {
    var dirty: [any SubscriberSink] = []
    private var scheduled = false
    private let gap: TimeAmount
    /// When the last pass ended.
    private var lastPass = NIODeadline.uptimeNanoseconds(0)

    init(gap: TimeAmount) {
        self.gap = gap
    }

    /// Queues one flush pass: behind the tasks already queued on the loop (further fan-outs),
    /// and no sooner than `gap` after the previous pass ended.
    func schedule(on loop: any EventLoop) {
        guard !scheduled, !dirty.isEmpty else { return }
        scheduled = true
        let due = lastPass + gap
        if gap > .zero, due > .now() {
            loop.scheduleTask(deadline: due) { self.pass() }
        } else {
            loop.execute { self.pass() }
        }
    }

    private func pass() {
        let sinks = dirty
        dirty = []
        scheduled = false
        for s in sinks { s.flush() }
        lastPass = .now()
    }
}
