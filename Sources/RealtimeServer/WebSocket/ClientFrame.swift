import Foundation
import RealtimeCore

/// One client -> server WebSocket frame: `{"op", "ref"?, ...}`. Unknown fields are ignored.
struct ClientFrame: Decodable {
    var op: String
    /// Echoed back verbatim (as its JSON text) in the reply.
    var ref: JSONValue?
    var channel: String?
    var sinceID: String?
    /// The epoch the client's `since_id` belongs to (from its last `subscribed`).
    var epoch: String?
    var event: String?
    var data: JSONValue?
    var idempotencyKey: String?
    var limit: Int?
    var direction: String?
    var token: String?

    enum CodingKeys: String, CodingKey {
        case op, ref, channel, sinceID = "since_id", epoch, event, data, idempotencyKey = "idempotency_key", limit, direction, token
    }
}

extension ClientFrame: FastDecodable {
    init?(json: JSONValue) {
        guard let o = json.objectMembers, case .string(let op)? = o["op"],
            let channel = JSONValue.optionalString(o["channel"]), let sinceID = JSONValue.optionalString(o["since_id"]),
            let event = JSONValue.optionalString(o["event"]), let idempotencyKey = JSONValue.optionalString(o["idempotency_key"]),
            let direction = JSONValue.optionalString(o["direction"]), let token = JSONValue.optionalString(o["token"]),
            let epoch = JSONValue.optionalString(o["epoch"])
        else { return nil }
        switch o["limit"] {
        case nil, .null?: limit = nil
        case .integer(let i)? where Int(exactly: i) != nil: limit = Int(i)
        default: return nil
        }
        self.op = op
        self.ref = o["ref"]?.nonNull
        self.channel = channel
        self.sinceID = sinceID
        self.epoch = epoch
        self.event = event
        // A missing `data` stays nil; a JSON null is a value (`publish` requires the field).
        self.data = o["data"]
        self.idempotencyKey = idempotencyKey
        self.direction = direction
        self.token = token
    }
}

/// A request type that can be built from a parsed ``JSONValue`` without Foundation's decoder;
/// `init?(json:)` returns nil on any shape it does not expect, and the caller falls back to
/// `Decodable` for the precise error.
protocol FastDecodable: Decodable {
    init?(json: JSONValue)
}

/// Decoding client JSON (REST bodies and WebSocket frames) with errors that name the field.
enum RequestDecoding {
    /// The fast path: ``JSONParser`` plus `init?(json:)`; anything unusual takes the Foundation
    /// path, which words the error.
    static func decode<T: FastDecodable>(_ type: T.Type, from bytes: [UInt8]) throws(RealtimeError) -> T {
        if let value = JSONParser.parse(bytes), let decoded = T(json: value) { return decoded }
        return try decodeWithFoundation(T.self, from: bytes)
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(RealtimeError) -> T {
        try decodeWithFoundation(T.self, from: bytes)
    }

    static func decodeWithFoundation<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(RealtimeError) -> T {
        try JSONGuard.checkDepth(bytes)
        // Strict RFC 8259 first: Foundation alone would accept trailing commas and more.
        guard JSONParser.isValid(bytes) else { throw .badRequest("not valid JSON (RFC 8259)") }
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw .badRequest(describe(error))
        } catch {
            throw .badRequest("not valid JSON")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context.codingPath)
            return "missing field '\(parent.isEmpty ? key.stringValue : parent + "." + key.stringValue)'"
        case .typeMismatch(let type, let context):
            return "field '\(path(context.codingPath))' has the wrong type (expected \(typeName(type)))"
        case .valueNotFound(let type, let context):
            return "field '\(path(context.codingPath))' is null (expected \(typeName(type)))"
        case .dataCorrupted(let context):
            let p = path(context.codingPath)
            return p.isEmpty ? "not valid JSON" : "field '\(p)' is invalid"
        @unknown default:
            return "not valid JSON"
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "string"
        case is Int.Type, is Int64.Type: return "integer"
        case is Double.Type: return "number"
        case is Bool.Type: return "boolean"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") || name.hasPrefix("[") { return "array" }
            if name.hasPrefix("Dictionary") { return "object" }
            return "object"
        }
    }
}
