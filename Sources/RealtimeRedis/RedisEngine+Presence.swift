import NIOCore
import RealtimeCore
import RedisClient

extension RedisEngine: PresenceStore {
    var presenceTTLMilliseconds: String { String(Int64(configuration.presenceTTLSeconds).multipliedReportingOverflow(by: 1000).partialValue) }

    public func enter(_ channel: ChannelName, member: PresenceMember) async throws -> PresenceEvent.Action {
        var member = member
        // An update keeps the original entry time.
        let existing = try await call { try await redis.send(["HGET", keys.presence(channel), member.connectionID]) }
        if case .bulkString(let json) = existing, let previous = RedisWire.decodeMember(json) {
            member.enteredAt = previous.enteredAt
        }
        let existed = try await call(write: true) {
            try await redis.evaluate(
                scripts.enter, keys: [keys.presence(channel), keys.presenceExpiry(channel)],
                arguments: [member.connectionID, member.json, presenceTTLMilliseconds, keys.pubsub(channel), presenceNow])
        }
        if existed.int == 0 {
            _ = try? await redis.send(["SADD", keys.presenceChannels, channel.rawValue])
            _ = try? await redis.send(["ZADD", keys.channels, "NX", "0", channel.rawValue])
            _ = try? await redis.send(["HSETNX", keys.meta(channel), "first_used", String(clock.nowMilliseconds())])
        }
        return existed.int == 1 ? .update : .enter
    }

    public func leave(_ channel: ChannelName, connectionID: String) async throws -> Bool {
        let left = try await call(write: true) {
            try await redis.evaluate(
                scripts.leave, keys: [keys.presence(channel), keys.presenceExpiry(channel)],
                arguments: [connectionID, keys.pubsub(channel)])
        }
        return left.int == 1
    }

    public func members(_ channel: ChannelName) async throws -> [PresenceMember] {
        let reply = try await call {
            try await redis.evaluate(
                scripts.members, keys: [keys.presence(channel), keys.presenceExpiry(channel)],
                arguments: [presenceNow])
        }
        let members = (reply.array ?? []).compactMap { value -> PresenceMember? in
            guard case .bulkString(let json) = value else { return nil }
            return RedisWire.decodeMember(json)
        }
        return members.sorted { ($0.enteredAt, $0.connectionID) < ($1.enteredAt, $1.connectionID) }
    }

    public func refresh(_ members: [(channel: ChannelName, member: PresenceMember)]) async throws -> [PresenceEvent] {
        let byChannel = Dictionary(grouping: members, by: \.channel)
        let now = presenceNow
        return try await call(write: true) {
            try await withThrowingTaskGroup(of: [PresenceEvent].self) { group in
                for (channel, entries) in byChannel {
                    group.addTask {
                        var arguments = [self.presenceTTLMilliseconds, self.keys.pubsub(channel), now]
                        for entry in entries { arguments += [entry.member.connectionID, entry.member.json] }
                        let reply = try await self.redis.evaluate(
                            self.scripts.refresh, keys: [self.keys.presence(channel), self.keys.presenceExpiry(channel)],
                            arguments: arguments)
                        // Keep the channel findable by every node's sweeper.
                        _ = try await self.redis.send(["SADD", self.keys.presenceChannels, channel.rawValue])
                        let entered = Set((reply.array ?? []).compactMap(\.string))
                        return entries.filter { entered.contains($0.member.connectionID) }
                            .map { PresenceEvent(channel: channel, action: .enter, member: $0.member) }
                    }
                }
                var all: [PresenceEvent] = []
                for try await events in group { all += events }
                return all
            }
        }
    }

    public func sweep() async throws -> Int {
        do {
            let removed = try await sweepChannels()
            if removed > 0 { logger.debug("presence sweep", metadata: ["removed": "\(removed)"]) }
            return removed
        } catch {
            logger.warning("presence sweep failed", metadata: ["error": "\(error)"])
            throw error
        }
    }

    func sweepChannels() async throws -> Int {
        let now = presenceNow
        let channels = try await call { try await redis.send(["SMEMBERS", keys.presenceChannels]) }
        var removed = 0
        for name in (channels.array ?? []).compactMap(\.string) {
            let channel = ChannelName(trusted: name)
            let reply = try await call(write: true) {
                try await redis.evaluate(
                    scripts.sweep, keys: [keys.presence(channel), keys.presenceExpiry(channel)],
                    arguments: [now, keys.pubsub(channel)])
            }
            removed += Int(reply.array?.first?.int ?? 0)
            if reply.array?.last?.int == 0 { _ = try? await redis.send(["SREM", keys.presenceChannels, name]) }
        }
        return removed
    }
}
