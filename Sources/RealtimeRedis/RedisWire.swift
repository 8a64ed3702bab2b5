import Foundation
import NIOCore
import RealtimeCore
import RedisClient

/// What travels on a channel's pub/sub channel, as the Lua scripts write it:
/// `m\n<id>\n<client_len>\n<client><event_len>\n<event><data>`, `p\n<action>\n<member JSON>`, or `d`.
enum RedisWire {
    static func decode(_ payload: ByteBuffer, channel: ChannelName) -> EngineEvent? {
        var buffer = payload
        guard let kind = buffer.readInteger(as: UInt8.self) else { return nil }
        switch kind {
        case UInt8(ascii: "m"):
            guard buffer.readInteger(as: UInt8.self) == 10, let idText = readLine(&buffer), let id = MessageID(idText),
                let clientLength = readLine(&buffer).flatMap({ Int($0) }), let client = buffer.readString(length: clientLength),
                let eventLength = readLine(&buffer).flatMap({ Int($0) }), let event = buffer.readString(length: eventLength),
                let data = buffer.readString(length: buffer.readableBytes)
            else { return nil }
            return .message(Message(
                id: id, channel: channel, event: event, data: data, clientID: client.isEmpty ? nil : client,
                timestamp: Int64(id.milliseconds)))
        case UInt8(ascii: "p"):
            guard buffer.readInteger(as: UInt8.self) == 10, let actionText = readLine(&buffer),
                let action = PresenceEvent.Action(rawValue: actionText),
                let member = decodeMember(buffer)
            else { return nil }
            return .presence(PresenceEvent(channel: channel, action: action, member: member))
        case UInt8(ascii: "d"):
            return .channelDeleted(channel)
        case UInt8(ascii: "e"):
            guard buffer.readInteger(as: UInt8.self) == 10, let epoch = buffer.readString(length: buffer.readableBytes), !epoch.isEmpty else { return nil }
            return .epochChanged(channel, epoch: epoch)
        default:
            return nil
        }
    }

    private static func readLine(_ buffer: inout ByteBuffer) -> String? {
        guard let end = buffer.readableBytesView.firstIndex(of: 10) else { return nil }
        let line = buffer.readString(length: end - buffer.readerIndex)
        buffer.moveReaderIndex(forwardBy: 1)
        return line
    }

    /// A stored member (its wire JSON) back into a member.
    static func decodeMember(_ json: ByteBuffer) -> PresenceMember? {
        struct Wire: Decodable {
            var client_id: String
            var user_id: String?
            var connection_id: String
            var data: JSONValue?
            var entered_at: String
            var updated_at: String
        }
        guard let w = try? JSONDecoder().decode(Wire.self, from: Data(json.readableBytesView)),
            let entered = Timestamp.parse(w.entered_at), let updated = Timestamp.parse(w.updated_at)
        else { return nil }
        return PresenceMember(
            clientID: w.client_id, userID: w.user_id, connectionID: w.connection_id, data: w.data.map(\.jsonText),
            enteredAt: entered, updatedAt: updated)
    }

    /// A stream entry `[id, [field, value, ...]]` as a message.
    static func message(fromEntry entry: RESPValue, channel: ChannelName) -> Message? {
        guard let parts = entry.array, parts.count == 2, let idText = parts[0].string, let id = MessageID(idText),
            let fields = parts[1].array
        else { return nil }
        var event = ""
        var data = "null"
        var client: String?
        var i = 0
        while i + 1 < fields.count {
            switch fields[i].string {
            case "e": event = fields[i + 1].string ?? ""
            case "d": data = fields[i + 1].string ?? "null"
            case "c": client = fields[i + 1].string
            default: break
            }
            i += 2
        }
        return Message(id: id, channel: channel, event: event, data: data, clientID: client, timestamp: Int64(id.milliseconds))
    }
}
