import Foundation
import NIOCore
import RealtimeCore
import RedisClient

extension RedisEngine: ChannelStore {
    public func create(_ settings: ChannelSettings) async throws -> (settings: ChannelSettings, created: Bool) {
        let c = settings.name
        let reply = try await call(write: true) {
            try await redis.evaluate(
                scripts.createChannel, keys: [keys.meta(c)],
                arguments: [settings.type.rawValue, String(settings.historySize), String(settings.historyTTLSeconds), String(settings.createdAt), settings.durability.rawValue])
        }
        guard let parts = reply.array, parts.count == 6, let type = parts[1].string.flatMap({ ChannelType(rawValue: $0) }),
            let size = parts[2].int, let ttl = parts[3].int, let created = parts[4].int
        else { throw RealtimeError.internal("unexpected channel reply") }
        let durability = parts[5].string.flatMap { Durability(rawValue: $0) } ?? .primary
        let stored = ChannelSettings(name: c, type: type, historySize: Int(size), historyTTLSeconds: Int(ttl), createdAt: created, explicit: true, durability: durability)
        _ = try? await redis.send(["ZADD", keys.channels, "NX", "0", c.rawValue])
        if parts[0].int == 0 {
            guard stored.type == settings.type, stored.historySize == settings.historySize, stored.historyTTLSeconds == settings.historyTTLSeconds,
                stored.durability == settings.durability
            else {
                throw RealtimeError.conflict("channel '\(c)' exists with different settings")
            }
            return (stored, false)
        }
        return (stored, true)
    }

    public func settings(_ name: ChannelName) async throws -> ChannelSettings {
        let reply = try await call {
            try await redis.send(["HMGET", keys.meta(name), "type", "history_size", "history_ttl_seconds", "created_at", "first_used", "durability"])
        }
        let f = reply.array ?? []
        let d = configuration.channelDefaults
        if f.count == 6, let type = f[0].string.flatMap({ ChannelType(rawValue: $0) }), let size = f[1].int, let ttl = f[2].int, let created = f[3].int {
            let durability = f[5].string.flatMap { Durability(rawValue: $0) } ?? .primary
            return ChannelSettings(name: name, type: type, historySize: Int(size), historyTTLSeconds: Int(ttl), createdAt: created, explicit: true, durability: durability)
        }
        let firstUse = f.count == 6 ? f[4].int : nil
        return ChannelSettings(
            name: name, type: d.type, historySize: d.historySize, historyTTLSeconds: d.historyTTLSeconds,
            createdAt: firstUse ?? clock.nowMilliseconds(), explicit: false)
    }

    public func list(limit: Int, after cursor: ChannelName?) async throws -> (channels: [ChannelSettings], hasMore: Bool) {
        let reply = try await call {
            try await redis.send(["ZRANGEBYLEX", keys.channels, cursor.map { "(" + $0.rawValue } ?? "-", "+", "LIMIT", "0", String(max(limit, 0) + 1)])
        }
        let names = (reply.array ?? []).compactMap(\.string).map { ChannelName(trusted: $0) }
        var page: [ChannelSettings] = []
        for name in names.prefix(limit) { page.append(try await settings(name)) }
        return (page, names.count > limit)
    }

    public func delete(_ name: ChannelName) async throws -> Bool {
        let known = try await call { try await redis.send(["ZSCORE", keys.channels, name.rawValue]) }
        let meta = try await call { try await redis.send(["EXISTS", keys.meta(name)]) }
        guard !known.isNull || meta.int == 1 else { return false }
        _ = try await call(write: true) {
            try await redis.evaluate(
                scripts.deleteChannel,
                keys: [keys.presence(name), keys.presenceExpiry(name), keys.stream(name), keys.meta(name), keys.subscriberCounts(name)],
                arguments: [keys.pubsub(name)])
        }
        _ = try? await redis.send(["ZREM", keys.channels, name.rawValue])
        _ = try? await redis.send(["SREM", keys.presenceChannels, name.rawValue])
        // Idempotency records of the deleted channel.
        var cursor = "0"
        repeat {
            guard let reply = try? await redis.send(["SCAN", cursor, "MATCH", keys.idempotencyPattern(name), "COUNT", "1000"]),
                let parts = reply.array, parts.count == 2
            else { break }
            cursor = parts[0].string ?? "0"
            let found = (parts[1].array ?? []).compactMap(\.string)
            if !found.isEmpty { _ = try? await redis.send(["DEL"] + found) }
        } while cursor != "0"
        return true
    }

    public func stats(_ name: ChannelName) async throws -> ChannelStats {
        let now = clock.nowMilliseconds()
        let counts = try await call { try await redis.send(["HGETALL", keys.subscriberCounts(name)]) }
        let live = try await call { try await redis.send(["ZRANGEBYSCORE", keys.nodes, String(now - Self.nodeStaleMilliseconds), "+inf"]) }
        let liveNodes = Set((live.array ?? []).compactMap(\.string) + [nodeID])
        var subscribers = 0
        let pairs = counts.array ?? []
        var i = 0
        while i + 1 < pairs.count {
            if let node = pairs[i].string, liveNodes.contains(node) { subscribers += Int(pairs[i + 1].int ?? 0) }
            i += 2
        }
        let present = try await call { try await redis.evaluate(scripts.members, keys: [keys.presence(name), keys.presenceExpiry(name)], arguments: [presenceNow]) }
        let newest = try await call { try await redis.send(["XREVRANGE", keys.stream(name), "+", "-", "COUNT", "1"]) }
        let last = newest.array?.first?.array?.first?.string.flatMap { MessageID($0) }
        return ChannelStats(subscribers: subscribers, presenceMembers: present.array?.count ?? 0, lastMessageID: last)
    }

    public func reportLocalSubscribers(_ channel: ChannelName, count: Int) async throws {
        try await call(write: true) {
            if count > 0 {
                _ = try await redis.send(["HSET", keys.subscriberCounts(channel), nodeID, String(count)])
            } else {
                _ = try await redis.send(["HDEL", keys.subscriberCounts(channel), nodeID])
            }
        }
    }

    /// Marks this node alive for cluster-wide live figures.
    public func upkeep() async {
        _ = try? await redis.send(["ZADD", keys.nodes, String(clock.nowMilliseconds()), nodeID])
    }
}

extension RedisEngine: KeyStore {
    public func store(_ record: APIKeyRecord) async throws {
        let json = String(decoding: try JSONEncoder().encode(record), as: UTF8.self)
        _ = try await call(write: true) { try await redis.send(["HSET", keys.keys, record.keyID, json]) }
        keyCache.withLock { _ = $0.removeValue(forKey: record.keyID) }
    }

    public func key(id: String) async throws -> APIKeyRecord? {
        let now = clock.nowMilliseconds()
        if let cached = keyCache.withLock({ $0[id] }), now - cached.fetchedAt < Self.keyCacheMilliseconds { return cached.record }
        let reply = try await call { try await redis.send(["HGET", keys.keys, id]) }
        let record = reply.string.flatMap { try? JSONDecoder().decode(APIKeyRecord.self, from: Data($0.utf8)) }
        keyCache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[id] = (record, now)
        }
        return record
    }

    public func list() async throws -> [APIKeyRecord] {
        let reply = try await call { try await redis.send(["HVALS", keys.keys]) }
        return (reply.array ?? []).compactMap { $0.string.flatMap { try? JSONDecoder().decode(APIKeyRecord.self, from: Data($0.utf8)) } }
            .filter { !$0.revoked }
            .sorted { ($0.createdAt, $0.keyID) < ($1.createdAt, $1.keyID) }
    }

    public func revoke(id: String) async throws -> Bool {
        keyCache.withLock { _ = $0.removeValue(forKey: id) }
        guard var record = try await key(id: id), !record.revoked else { return false }
        record.revoked = true
        try await store(record)
        _ = try await call(write: true) { try await redis.send([keys.publishCommand, keys.control, "k\n" + id]) }
        return true
    }
}
