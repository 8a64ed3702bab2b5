import NIOCore

extension ChannelHub {
    /// Brings a channel whose broker link was interrupted back to live delivery: reads what it
    /// missed from history in bounded pages after the last delivered id, then what was held
    /// meanwhile, and reconciles presence. Retries (with backoff) until it succeeds or the
    /// channel has no subscribers left; never goes live over a gap it could still read.
    func recover(_ channel: ChannelName) async {
        let claimed = shard(channel).withLock { s -> Bool in
            guard let ch = s.channels[channel], ch.link == .recovering, !ch.recovering else { return false }
            s.channels[channel]!.recovering = true
            return true
        }
        guard claimed else { return }
        defer {
            let again = shard(channel).withLock { s -> Bool in
                guard s.channels[channel] != nil else { return false }
                s.channels[channel]!.recovering = false
                return s.channels[channel]!.link == .recovering
            }
            // Interrupted again after this task went live but before it let go: that
            // interruption found the channel claimed and scheduled no recovery of its own.
            if again, !Task.isCancelled { schedule(.recover(channel)) }
        }
        var backoff = Duration.milliseconds(50)
        while !Task.isCancelled {
            expireWaiters(channel)
            // Counted before the link is looked at: an interruption after this point, even one
            // already healed when the read returns, makes `caughtUp` read again.
            let epoch = interruptions.load(ordering: .relaxed)
            guard brokerUp.load(ordering: .relaxed) else {
                try? await Task.sleep(for: .milliseconds(50), clock: .suspending)
                continue
            }
            guard let from = shard(channel).withLock({ s -> MessageID? in
                guard let ch = s.channels[channel], ch.link == .recovering else { return nil }
                return ch.lastDelivered
            }) else { return }
            do {
                let page = try await broker.replay(channel, after: from, limit: engine.configuration.replayPageSize)
                if try await epochMoved(channel, from: from, page: page) { continue }
                let members = page.hasMore ? nil : try await engine.presence.members(channel)
                if caughtUp(channel, from: from, page: page, members: members, epoch: epoch) { return }
                backoff = .milliseconds(50)
            } catch {
                try? await Task.sleep(for: backoff, clock: .suspending)
                backoff = min(backoff * 2, .seconds(2))
            }
        }
    }

    /// Checks a recovery read against what this node delivered. When the stream does not hold
    /// the last delivered id (a failover lost entries its subscribers saw), the epoch changes
    /// (once, whichever node notices first); when the epoch differs from the one subscribers
    /// hold, they are told (`resumed: false`). Either way the channel goes on from what the
    /// stream holds now, and the caller reads again. Returns true when it did so.
    func epochMoved(_ channel: ChannelName, from: MessageID, page: Replay) async throws -> Bool {
        guard let (known, void, handled) = shard(channel).withLock({ s -> (String, Bool, MessageID?)? in
            s.channels[channel].map { ($0.epoch, $0.positionVoid, $0.lossHandledAt) }
        }) else { return false }
        let behind = page.positionLost && handled != from
        guard behind || (page.epoch != known && !known.isEmpty) || void else { return false }
        var epoch = page.epoch
        // Changed here unless another node already did (its epoch is not the one we knew).
        if behind, !void, page.epoch == known || known.isEmpty { epoch = try await broker.changeEpoch(channel, from: page.epoch) }
        shard(channel).withLock { s in
            guard var ch = s.channels[channel], ch.link == .recovering, ch.lastDelivered == from else { return }
            defer { s.channels[channel] = ch }
            if ch.epoch != epoch {
                // From none to the first publish's epoch is no loss.
                let lost = !ch.epoch.isEmpty || behind
                ch.epoch = epoch
                if lost { notifyResync(channel, &ch) }
            }
            ch.positionVoid = false
            if behind {
                // The stream's own entries after its newest are new writes: deliver from there
                // (new ids may sort below what was delivered before, by another server's clock).
                ch.lastDelivered = min(from, page.newest)
                ch.lossHandledAt = ch.lastDelivered
                ch.maxFloor = nil
                ch.live.floors = [:]
            }
        }
        return true
    }

    /// Fails the subscribers that have waited longer than `linkWait` for this recovering channel.
    func expireWaiters(_ channel: ChannelName) {
        let cutoff = ContinuousClock.now - linkWait
        let expired = shard(channel).withLock { s -> [CheckedContinuation<Void, any Error>] in
            guard let ch = s.channels[channel] else { return [] }
            let old = ch.waitingSince.filter { $0.value < cutoff }.map(\.key)
            return old.compactMap { id in
                s.channels[channel]!.waitingSince[id] = nil
                return s.channels[channel]!.waiters.removeValue(forKey: id)
            }
        }
        for waiter in expired {
            waiter.resume(throwing: RealtimeError.engineUnavailable("the channel is recovering from an engine outage; retry later"))
        }
    }

    /// Delivers one page of missed messages; after the last page, reconciles presence, delivers
    /// what was held and goes live. Returns true when recovery is over (or no longer needed).
    func caughtUp(_ channel: ChannelName, from: MessageID, page: Replay, members: [PresenceMember]?, epoch: Int) -> Bool {
        var slow: [any SubscriberSink] = []
        let done = shard(channel).withLock { s -> Bool in
            guard var ch = s.channels.removeValue(forKey: channel) else { return true }
            defer { s.channels[channel] = ch }
            guard ch.link == .recovering, ch.lastDelivered == from else { return ch.link != .recovering }
            if !page.complete {
                // Trimmed before this node could read it: the subscribers lost messages. Tell
                // them as a resume would (`resumed: false`), then go on with what is retained.
                notifyResync(channel, &ch)
            }
            for m in page.messages { process(.message(m), &ch, slow: &slow) }
            if page.hasMore { return false }
            if ch.heldOverflowed {
                ch.heldOverflowed = false
                ch.held = []
                return false
            }
            // A new interruption since this read began: read again once the link is back.
            guard epoch == interruptions.load(ordering: .relaxed), brokerUp.load(ordering: .relaxed) else { return false }
            if let members { reconcilePresence(channel, members, &ch, slow: &slow) }
            let held = ch.held
            ch.held = []
            for event in held {
                if case .presence(let p) = event, let known = ch.members {
                    // Already reflected by the reconciliation above.
                    let current = known[p.member.connectionID]
                    if p.action == .leave ? current == nil : current == p.member { continue }
                }
                process(event, &ch, slow: &slow)
            }
            ch.link = .attached
            let waiters = ch.waiters.values
            ch.waiters = [:]
            ch.waitingSince = [:]
            for w in waiters { w.resume() }
            return true
        }
        for sink in slow { sink.slowConsumer() }
        return done
    }

    /// Sends the subscribers the presence changes they missed: `enter` for members they have
    /// not seen, `update` for changed ones, `leave` for members gone.
    func reconcilePresence(_ channel: ChannelName, _ members: [PresenceMember], _ ch: inout Channel, slow: inout [any SubscriberSink]) {
        guard let known = ch.members else {
            ch.members = Dictionary(members.map { ($0.connectionID, $0) }, uniquingKeysWith: { $1 })
            return
        }
        var events: [PresenceEvent] = []
        var current: [String: PresenceMember] = [:]
        for m in members {
            current[m.connectionID] = m
            if let old = known[m.connectionID] {
                if old != m { events.append(PresenceEvent(channel: channel, action: .update, member: m)) }
            } else {
                events.append(PresenceEvent(channel: channel, action: .enter, member: m))
            }
        }
        for (id, old) in known.sorted(by: { $0.key < $1.key }) where current[id] == nil {
            events.append(PresenceEvent(channel: channel, action: .leave, member: old))
        }
        for e in events { process(.presence(e), &ch, slow: &slow) }
        ch.members = current
    }

    /// `{"type":"subscribed","channel","resumed":false,"replayed":0,"epoch"}` without a `ref`:
    /// the channel's live stream lost messages this node could not read back.
    static func resyncNotice(_ channel: ChannelName, epoch: String) -> String {
        var w = JSONWriter()
        w.raw("{\"type\":\"subscribed\"")
        w.key("channel")
        w.string(channel.rawValue)
        w.raw(",\"resumed\":false,\"replayed\":0")
        w.key("epoch")
        w.string(epoch)
        w.raw("}")
        return w.text
    }

    // MARK: Subscriber counts

    /// Notes that the channel's local count changed; one task at a time reports counts, so a
    /// stale count never overwrites a newer one.
    func markCountDirty(_ channel: ChannelName) {
        let start = background.withLock { b -> Bool in
            b.dirtyCounts.insert(channel)
            guard !b.reporting, b.jobs != nil else { return false }
            b.reporting = true
            return true
        }
        if start { schedule(.reportCounts) }
    }

    func reportCounts() async {
        while !Task.isCancelled {
            let dirty = background.withLock { b -> Set<ChannelName> in
                let d = b.dirtyCounts
                b.dirtyCounts = []
                if d.isEmpty { b.reporting = false }
                return d
            }
            if dirty.isEmpty { return }
            for channel in dirty {
                do {
                    try await engine.channels.reportLocalSubscribers(channel, count: localCount(channel))
                } catch {
                    // Reported again on the next change; a node's count also ages out with its heartbeat.
                    background.withLock { _ = $0.dirtyCounts.insert(channel) }
                    try? await Task.sleep(for: .milliseconds(500), clock: .suspending)
                }
            }
        }
    }
}
