extension MemoryEngine: ChannelStore {
    public func create(_ settings: ChannelSettings) async throws -> (settings: ChannelSettings, created: Bool) {
        try withShard(settings.name) { s throws(RealtimeError) in
            if let existing = s.settings[settings.name] {
                guard existing.type == settings.type, existing.historySize == settings.historySize,
                    existing.historyTTLSeconds == settings.historyTTLSeconds, existing.durability == settings.durability
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

    public func settings(_ name: ChannelName) async throws -> ChannelSettings {
        let (explicit, firstUse) = withShard(name) { s in (s.settings[name], s.known[name]) }
        return explicit ?? defaultSettings(name, firstUse: firstUse ?? clock.nowMilliseconds())
    }

    func defaultSettings(_ name: ChannelName, firstUse: Int64) -> ChannelSettings {
        let d = configuration.channelDefaults
        return ChannelSettings(name: name, type: d.type, historySize: d.historySize, historyTTLSeconds: d.historyTTLSeconds, createdAt: firstUse, explicit: false)
    }

    public func list(limit: Int, after cursor: ChannelName?) async throws -> (channels: [ChannelSettings], hasMore: Bool) {
        var all: [ChannelSettings] = []
        for shard in shards {
            shard.withLock { s in
                for (name, firstUse) in s.known where cursor == nil || name > cursor! {
                    all.append(s.settings[name] ?? defaultSettings(name, firstUse: firstUse))
                }
            }
        }
        all.sort { $0.name < $1.name }
        let page = Array(all.prefix(max(limit, 0)))
        return (page, all.count > page.count)
    }

    public func delete(_ name: ChannelName) async throws -> Bool {
        let now = clock.nowMilliseconds()
        return withShard(name) { s in
            guard s.known[name] != nil || s.settings[name] != nil else { return false }
            for entry in (s.presence[name] ?? [:]).values.sorted(by: { $0.member.enteredAt < $1.member.enteredAt }) {
                var member = entry.member
                member.updatedAt = now
                s.outbox.append(.presence(PresenceEvent(channel: name, action: .leave, member: member)))
            }
            s.presence[name] = nil
            s.streams[name] = nil
            s.idempotency[name] = nil
            s.settings[name] = nil
            s.known[name] = nil
            s.outbox.append(.channelDeleted(name))
            return true
        }
    }

    public func stats(_ name: ChannelName) async throws -> ChannelStats {
        let now = clock.nowMilliseconds()
        return withShard(name) { s in
            s.streams[name]?.expire(now: now)
            return ChannelStats(
                subscribers: s.localSubscribers[name] ?? 0,
                presenceMembers: (s.presence[name] ?? [:]).values.filter { $0.expiresAt > now }.count,
                lastMessageID: s.streams[name]?.entries.last?.id
            )
        }
    }

    public func reportLocalSubscribers(_ channel: ChannelName, count: Int) async throws {
        withShard(channel) { $0.localSubscribers[channel] = count > 0 ? count : nil }
    }

    public func upkeep() async {}
}

extension MemoryEngine: KeyStore {
    public func store(_ record: APIKeyRecord) async throws {
        keyRecords.withLock { $0[record.keyID] = record }
    }

    public func key(id: String) async throws -> APIKeyRecord? {
        keyRecords.withLock { $0[id] }
    }

    public func list() async throws -> [APIKeyRecord] {
        keyRecords.withLock { k in k.values.filter { !$0.revoked }.sorted { ($0.createdAt, $0.keyID) < ($1.createdAt, $1.keyID) } }
    }

    public func revoke(id: String) async throws -> Bool {
        let revoked = keyRecords.withLock { k -> Bool in
            guard let record = k[id], !record.revoked else { return false }
            k[id]!.revoked = true
            return true
        }
        if revoked { emitControl(.keyRevoked(keyID: id)) }
        return revoked
    }
}
