import NIOCore

extension ChannelHub {
    enum Role { case drive, wait, ready }

    /// Subscribes `sink`; `announce` runs once the outcome is known and before any message is
    /// sent, so the client sees its `subscribed` reply first. Returns nil when the channel was
    /// deleted while subscribing.
    ///
    /// The sink is registered first (buffering), then the channel is attached (or the attach in
    /// progress awaited), then history after `since` is read in pages; replay and buffer are
    /// merged by id and the sink goes live.
    public func subscribe(
        _ channel: ChannelName,
        sink: any SubscriberSink,
        since: MessageID?,
        sinceEpoch: String? = nil,
        announce: @Sendable (SubscribeOutcome) -> Void
    ) async throws -> HubSubscription? {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let role = shard(channel).withLock { s -> Role in
            guard s.channels[channel] != nil else {
                var ch = Channel()
                ch.pending[id] = Pending(sink: sink)
                s.channels[channel] = ch
                return .drive
            }
            s.channels[channel]!.pending[id] = Pending(sink: sink)
            // A recovering channel is re-reading what its live subscribers missed, below any
            // position a new subscriber resumes from: join once it is live again.
            return s.channels[channel]!.link == .attached ? .ready : .wait
        }
        do {
            switch role {
            case .drive:
                try await drive(channel)
                // The link may have come up interrupted and be recovering.
                try await waitForLink(channel, id)
            case .wait: try await waitForLink(channel, id)
            case .ready: break
            }
        } catch {
            await remove(channel, id)
            throw error
        }
        guard isPending(channel, id) else { return nil }
        var epoch = shard(channel).withLock { $0.channels[channel]?.epoch ?? "" }
        if epoch.isEmpty, let stored = try? await broker.epoch(channel), !stored.isEmpty {
            // Published since the attach (the first publish makes the epoch).
            epoch = stored
            shard(channel).withLock { s in if s.channels[channel]?.epoch.isEmpty == true { s.channels[channel]!.epoch = stored } }
        }
        var replayed: [Message] = []
        var complete = false
        // A position from another epoch means nothing here: no replay, `resumed: false`.
        if let since, sinceEpoch == nil || sinceEpoch == epoch, !(sinceEpoch != nil && epoch.isEmpty) {
            do {
                (replayed, complete) = try await readReplay(channel, after: since, epoch: epoch)
            } catch {
                await remove(channel, id)
                throw error
            }
        }
        markCountDirty(channel)
        announce(SubscribeOutcome(resumed: since != nil && complete, replayed: replayed.count, epoch: epoch))
        var last = replayed.last?.id ?? since
        Self.deliver(replayed.map { WireFrame(text: $0.json(asPush: true)) }, to: sink)
        let overflowed = shard(channel).withLock { s -> Bool in
            guard let pending = s.channels[channel]?.pending[id] else { return false }
            if pending.overflowed { return true }
            s.channels[channel]!.pending[id] = nil
            var frames: [WireFrame] = []
            for item in pending.items {
                switch item {
                case .message(let messageID, let frame):
                    if let l = last, messageID <= l { continue }
                    last = messageID
                    frames.append(frame)
                case .frame(let frame):
                    frames.append(frame)
                }
            }
            // Queued on the sink's loop under the lock, so ahead of any live frame.
            Self.deliver(frames, to: sink)
            var floor: MessageID?
            if let last, last > s.channels[channel]!.lastDelivered {
                floor = last
                s.channels[channel]!.maxFloor = max(s.channels[channel]!.maxFloor ?? last, last)
            }
            s.channels[channel]!.live.insert(id: id, sink: sink, loop: sink.eventLoop, batch: sink.eventLoop.map(flushBatch(for:)), floor: floor)
            return false
        }
        if overflowed { sink.slowConsumer() }
        return HubSubscription(channel: channel, id: id)
    }

    /// Every retained message after `position`, read in bounded pages. Not complete when a page
    /// was trimmed past the position, when the stream does not hold the position (lost entries,
    /// or never its own) or when the epoch is not `epoch` any more.
    func readReplay(_ channel: ChannelName, after position: MessageID, epoch: String) async throws -> (messages: [Message], complete: Bool) {
        var messages: [Message] = []
        var from = position
        var complete = true
        while true {
            let page = try await broker.replay(channel, after: from, limit: engine.configuration.replayPageSize)
            if from == position { complete = page.complete && !page.positionLost }
            if !epoch.isEmpty, page.epoch != epoch { complete = false }
            messages += page.messages
            guard page.hasMore, let last = page.messages.last else { return (messages, complete) }
            from = last.id
        }
    }

    /// Ends a subscription; the broker is unsubscribed when this was the node's last use of it.
    public func unsubscribe(_ subscription: HubSubscription) async {
        await remove(subscription.channel, subscription.id)
    }

    func isPending(_ channel: ChannelName, _ id: UInt64) -> Bool {
        shard(channel).withLock { $0.channels[channel]?.pending[id] != nil }
    }

    /// Drops one subscriber (pending or live) and detaches the channel after its last.
    func remove(_ channel: ChannelName, _ id: UInt64) async {
        let (removed, detach) = shard(channel).withLock { s -> (Bool, Bool) in
            guard var ch = s.channels.removeValue(forKey: channel) else { return (false, false) }
            var removed = ch.pending.removeValue(forKey: id) != nil
            if !removed { removed = ch.live.remove(id: id) }
            var detach = false
            if ch.count == 0, ch.link == .attached || ch.link == .recovering {
                ch.link = .detaching
                ch.held = []
                detach = true
            }
            s.channels[channel] = ch
            return (removed, detach)
        }
        if detach { try? await drive(channel) }
        if removed { markCountDirty(channel) }
    }

    /// Waits until the channel's link is attached, sharing an attach's failure. An attach is
    /// bounded by the broker's own timeouts; a wait for a recovering channel is bounded by
    /// `linkWait`, enforced by the recovery loop (no timer per waiter).
    func waitForLink(_ channel: ChannelName, _ id: UInt64) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let ready = shard(channel).withLock { s -> Bool in
                guard let link = s.channels[channel]?.link, link != .attached else { return true }
                s.channels[channel]!.waiters[id] = c
                s.channels[channel]!.waitingSince[id] = ContinuousClock.now
                return false
            }
            if ready { c.resume() }
        }
    }

    /// Moves the channel's link until it is stable: attached while it has subscribers, gone once
    /// it has none. Only one task drives a channel at a time: the one that moved it into
    /// `attaching` or `detaching`. Throws the attach failure that this driver's own subscriber
    /// shares with every waiting one.
    func drive(_ channel: ChannelName) async throws {
        var failure: (any Error)?
        while true {
            switch shard(channel).withLock({ $0.channels[channel]?.link }) {
            case nil, .attached?, .recovering?:
                if let failure { throw failure }
                return
            case .attaching?:
                var subscribed = false
                do {
                    try await broker.subscribe(channel)
                    subscribed = true
                    let position = try await broker.position(channel)
                    let epoch = try await broker.epoch(channel)
                    let members = try? await engine.presence.members(channel)
                    attached(channel, position: position, epoch: epoch, members: members)
                } catch {
                    failure = error
                    failAttach(channel, error, unsubscribe: subscribed)
                }
            case .detaching?:
                await broker.unsubscribe(channel)
                shard(channel).withLock { s in
                    guard let ch = s.channels[channel], ch.link == .detaching else { return }
                    if ch.count == 0 {
                        s.channels[channel] = nil
                    } else {
                        s.channels[channel]!.link = .attaching
                    }
                }
            }
        }
    }

    /// The broker delivers the channel's events from `position` on: hold nothing more, deliver
    /// what arrived meanwhile (above the position), wake the waiting subscribers.
    func attached(_ channel: ChannelName, position: MessageID, epoch: String, members: [PresenceMember]?) {
        var slow: [any SubscriberSink] = []
        let needsRecovery = shard(channel).withLock { s -> Bool in
            guard s.channels[channel]?.link == .attaching else { return false }
            var ch = s.channels.removeValue(forKey: channel)!
            defer { s.channels[channel] = ch }
            ch.lastDelivered = max(ch.lastDelivered, position)
            ch.epoch = epoch
            ch.members = members.map { Dictionary($0.map { ($0.connectionID, $0) }, uniquingKeysWith: { $1 }) }
            let waiters = ch.waiters.values
            ch.waiters = [:]
            ch.waitingSince = [:]
            defer { for w in waiters { w.resume() } }
            if ch.count == 0 {
                ch.link = .detaching
                ch.held = []
                return false
            }
            if ch.missed || ch.heldOverflowed || !brokerUp.load(ordering: .relaxed) {
                ch.missed = false
                ch.heldOverflowed = false
                ch.link = .recovering
                return true
            }
            ch.link = .attached
            let held = ch.held
            ch.held = []
            for event in held { process(event, &ch, slow: &slow) }
            return false
        }
        for sink in slow { sink.slowConsumer() }
        if needsRecovery { schedule(.recover(channel)) }
    }

    /// The attach failed: every subscriber waiting for it fails too.
    func failAttach(_ channel: ChannelName, _ error: any Error, unsubscribe: Bool) {
        shard(channel).withLock { s in
            guard s.channels[channel]?.link == .attaching else { return }
            var ch = s.channels.removeValue(forKey: channel)!
            let waiters = ch.waiters.values
            ch.waiters = [:]
            ch.waitingSince = [:]
            ch.pending = [:]
            ch.held = []
            for w in waiters { w.resume(throwing: error) }
            // Subscribed but not attached: unsubscribe before anyone attaches again.
            if unsubscribe {
                ch.link = .detaching
                s.channels[channel] = ch
            }
        }
    }
}
