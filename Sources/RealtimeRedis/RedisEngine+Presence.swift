import NIOCore
import RealtimeCore
import RedisClient

extension RedisEngine {
    public func enterPresence(_ channel: ChannelName, member: PresenceMember) async throws -> PresenceEvent.Action {
        var member = member
        // An update keeps the original entry time.
        let existing = try await call { try await redis.send(["HGET", keys.presence(channel), member.connectionID]) }
        if case .bulkString(let json) = existing, let previous = RedisWire.decodeMember(json) {
            member.enteredAt = previous.enteredAt
        }
        let expiry = clock.nowMilliseconds() + Int64(configuration.presenceTTLSeconds) * 1000
        let existed = try await call {
            try await redis.evaluate(
                RedisScripts.enter, keys: [keys.presence(channel), keys.presenceExpiry(channel)],
                arguments: [member.connectionID, member.json, String(expiry), keys.pubsub(channel)].map { ByteBuffer(string: $0) })
        }
        if existed.int == 0 {
            _ = try? await redis.send(["SADD", keys.presenceChannels, channel.rawValue])
            _ = try? await redis.send(["ZADD", keys.channels, "NX", "0", channel.rawValue])
            _ = try? await redis.send(["HSETNX", keys.meta(channel), "first_used", String(clock.nowMilliseconds())])
        }
        return existed.int == 1 ? .update : .enter
    }

    public func leavePresence(_ channel: ChannelName, connectionID: String) async throws -> Bool {
        let left = try await call {
            try await redis.evaluate(
                RedisScripts.leave, keys: [keys.presence(channel), keys.presenceExpiry(channel)],
                arguments: [connectionID, keys.pubsub(channel)].map { ByteBuffer(string: $0) })
        }
        return left.int == 1
    }

    public func presenceMembers(_ channel: ChannelName) async throws -> [PresenceMember] {
        let reply = try await call {
            try await redis.evaluate(
                RedisScripts.members, keys: [keys.presence(channel), keys.presenceExpiry(channel)],
                arguments: [ByteBuffer(string: String(clock.nowMilliseconds()))])
        }
        let members = (reply.array ?? []).compactMap { value -> PresenceMember? in
            guard case .bulkString(let json) = value else { return nil }
            return RedisWire.decodeMember(json)
        }
        return members.sorted { ($0.enteredAt, $0.connectionID) < ($1.enteredAt, $1.connectionID) }
    }

    public func refreshPresence(_ members: [(channel: ChannelName, connectionID: String)]) async throws {
        let expiry = String(clock.nowMilliseconds() + Int64(configuration.presenceTTLSeconds) * 1000)
        try await call {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (channel, connectionID) in members {
                    group.addTask { _ = try await self.redis.send(["ZADD", self.keys.presenceExpiry(channel), "XX", expiry, connectionID]) }
                }
                // Keep the channels findable by every node's sweeper.
                for channel in Set(members.map(\.channel)) {
                    group.addTask { _ = try await self.redis.send(["SADD", self.keys.presenceChannels, channel.rawValue]) }
                }
                try await group.waitForAll()
            }
        }
    }

    public func sweepExpiredPresence() async throws -> Int {
        let now = String(clock.nowMilliseconds())
        let channels = try await call { try await redis.send(["SMEMBERS", keys.presenceChannels]) }
        var removed = 0
        for name in (channels.array ?? []).compactMap(\.string) {
            let channel = ChannelName(trusted: name)
            let reply = try await call {
                try await redis.evaluate(
                    RedisScripts.sweep, keys: [keys.presence(channel), keys.presenceExpiry(channel)],
                    arguments: [now, keys.pubsub(channel)].map { ByteBuffer(string: $0) })
            }
            removed += Int(reply.array?.first?.int ?? 0)
            if reply.array?.last?.int == 0 { _ = try? await redis.send(["SREM", keys.presenceChannels, name]) }
        }
        return removed
    }
}
