import Foundation

/// How the SDK retries a publish (contract §10): with the same idempotency key (one of its own
/// when the caller gives none), on `50300` (nothing was published), `50400` (outcome unknown),
/// `42900` (after the server's hint) and connection errors or timeouts; never on other errors.
/// The key makes a retried publish apply exactly once.
public struct RetryPolicy: Sendable {
    /// Attempts in all, the first included.
    public var attempts: Int
    public var baseDelay: Duration
    public var maxDelay: Duration

    public init(attempts: Int = 5, baseDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(2)) {
        self.attempts = max(1, attempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    public static let none = RetryPolicy(attempts: 1)

    /// A fresh idempotency key for one logical publish.
    public static func newIdempotencyKey() -> String { "sdk-" + UUID().uuidString.lowercased() }

    /// Whether an error may be retried with the same key, and after how long at least.
    static func retryable(_ error: any Error) -> (Bool, hint: Duration?) {
        guard let e = error as? RealtimeClientError else { return (true, nil) }  // transport: connection or timeout
        switch e.code {
        case 50300, 50400: return (true, nil)
        case 42900: return (true, e.retryAfterMilliseconds.map { .milliseconds($0) })
        case 0: return (true, nil)  // no reply (timed out) or not connected
        default: return (false, nil)
        }
    }

    /// Runs `body` until it succeeds, a non-retryable error, or the attempts run out, with
    /// exponential backoff and full jitter between attempts.
    func run<T>(_ body: () async throws -> T) async throws -> T {
        var delay = baseDelay
        var attempt = 1
        while true {
            do {
                return try await body()
            } catch {
                let (retry, hint) = Self.retryable(error)
                guard retry, attempt < attempts, !Task.isCancelled else { throw error }
                let jittered = Duration.nanoseconds(Int64.random(in: 0...max(1, Int64(delay.components.seconds) * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000)))
                try await Task.sleep(for: max(hint ?? .zero, jittered), clock: .suspending)
                delay = min(delay * 2, maxDelay)
                attempt += 1
            }
        }
    }
}
