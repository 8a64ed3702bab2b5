extension MemoryEngine: PresenceStore {
    public func enter(_ channel: ChannelName, member: PresenceMember) async throws -> PresenceEvent.Action {
        let now = clock.nowMilliseconds()
        let ttl = configuration.presenceTTLSeconds
        return withShard(channel) { s in
            var member = member
            let action: PresenceEvent.Action
            if let existing = s.presence[channel]?[member.connectionID] {
                member.enteredAt = existing.member.enteredAt
                action = .update
            } else {
                action = .enter
            }
            s.presence[channel, default: [:]][member.connectionID] = PresenceEntry(member: member, expiresAt: Self.later(now, seconds: ttl))
            if s.known[channel] == nil { s.known[channel] = now }
            s.outbox.append(.presence(PresenceEvent(channel: channel, action: action, member: member)))
            return action
        }
    }

    public func leave(_ channel: ChannelName, connectionID: String) async throws -> Bool {
        let now = clock.nowMilliseconds()
        return withShard(channel) { s in
            guard var member = s.presence[channel]?.removeValue(forKey: connectionID)?.member else { return false }
            if s.presence[channel]?.isEmpty == true { s.presence[channel] = nil }
            member.updatedAt = now
            s.outbox.append(.presence(PresenceEvent(channel: channel, action: .leave, member: member)))
            return true
        }
    }

    public func members(_ channel: ChannelName) async throws -> [PresenceMember] {
        let now = clock.nowMilliseconds()
        return withShard(channel) { s in
            (s.presence[channel] ?? [:]).values.filter { $0.expiresAt > now }.map(\.member)
                .sorted { ($0.enteredAt, $0.connectionID) < ($1.enteredAt, $1.connectionID) }
        }
    }

    public func refresh(_ members: [(channel: ChannelName, member: PresenceMember)]) async throws -> [PresenceEvent] {
        let now = clock.nowMilliseconds()
        let expiresAt = Self.later(now, seconds: configuration.presenceTTLSeconds)
        var entered: [PresenceEvent] = []
        for (channel, member) in members {
            withShard(channel) { s in
                if s.presence[channel]?[member.connectionID] != nil {
                    s.presence[channel]![member.connectionID]!.expiresAt = expiresAt
                } else {
                    s.presence[channel, default: [:]][member.connectionID] = PresenceEntry(member: member, expiresAt: expiresAt)
                    let event = PresenceEvent(channel: channel, action: .enter, member: member)
                    s.outbox.append(.presence(event))
                    entered.append(event)
                }
            }
        }
        return entered
    }

    public func sweep() async throws -> Int {
        let now = clock.nowMilliseconds()
        var removed = 0
        for index in shards.indices {
            withShard(at: index) { s in
                for (channel, members) in s.presence {
                    for (connectionID, entry) in members where entry.expiresAt <= now {
                        s.presence[channel]![connectionID] = nil
                        removed += 1
                        var member = entry.member
                        member.updatedAt = now
                        s.outbox.append(.presence(PresenceEvent(channel: channel, action: .leave, member: member)))
                    }
                    if s.presence[channel]?.isEmpty == true { s.presence[channel] = nil }
                }
            }
        }
        return removed
    }
}
