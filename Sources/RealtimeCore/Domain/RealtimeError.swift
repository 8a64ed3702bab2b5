/// An error with the contract's stable 5-digit code; the first three digits are the HTTP status.
///
/// Every failure a client can observe (REST error bodies, WebSocket `error` pushes) is one of these,
/// so the code a client sees never depends on where in the node the failure happened.
public struct RealtimeError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    public var message: String
    /// Suggested wait before retrying, for `42900` rate limiting.
    public var retryAfterMilliseconds: Int?

    public init(code: Int, message: String, retryAfterMilliseconds: Int? = nil) {
        self.code = code
        self.message = message
        self.retryAfterMilliseconds = retryAfterMilliseconds
    }

    /// The HTTP status is the code's first three digits.
    public var status: Int { code / 100 }

    public var description: String { "\(code): \(message)" }

    public static func badRequest(_ message: String) -> Self { .init(code: 40000, message: message) }
    public static func badChannelName(_ name: String) -> Self {
        .init(code: 40010, message: "invalid channel name '\(name.prefix(220))': 1-200 characters of A-Z a-z 0-9 _ - : . @ =")
    }
    public static func noCredentials(_ message: String = "missing or unknown API key") -> Self { .init(code: 40100, message: message) }
    public static func tokenExpired(_ message: String = "token expired") -> Self { .init(code: 40140, message: message) }
    public static func tokenInvalid(_ message: String = "token invalid") -> Self { .init(code: 40141, message: message) }
    public static func scopeMissing(_ scope: String) -> Self { .init(code: 40300, message: "API key lacks scope '\(scope)'") }
    public static func capabilityMissing(_ operation: String, _ channel: String) -> Self {
        .init(code: 40310, message: "token lacks capability '\(operation)' on channel '\(channel)'")
    }
    public static func notFound(_ message: String) -> Self { .init(code: 40400, message: message) }
    public static func conflict(_ message: String) -> Self { .init(code: 40900, message: message) }
    public static func tooLarge(_ message: String) -> Self { .init(code: 41300, message: message) }
    public static func rateLimited(retryAfterMilliseconds: Int) -> Self {
        .init(code: 42900, message: "rate limit exceeded; retry after \(retryAfterMilliseconds) ms", retryAfterMilliseconds: retryAfterMilliseconds)
    }
    public static func `internal`(_ message: String = "internal error") -> Self { .init(code: 50000, message: message) }
    public static func engineUnavailable(_ message: String = "engine unavailable; nothing was published, retry later") -> Self {
        .init(code: 50300, message: message)
    }
    /// A write was sent to the engine and not answered in time: it may or may not have been
    /// applied. Retrying with the same idempotency key is safe.
    public static func outcomeUnknown(_ message: String = "outcome unknown: the engine did not answer in time; retry with the same idempotency_key") -> Self {
        .init(code: 50400, message: message)
    }
}
