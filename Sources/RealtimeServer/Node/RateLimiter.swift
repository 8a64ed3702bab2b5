import RealtimeCore
import Synchronization

/// A token bucket: `rate` per second, bursts up to `2 x rate`.
struct TokenBucket {
    let rate: Double
    var tokens: Double
    var updatedAt: Int64

    init(rate: Int, now: Int64) {
        self.rate = Double(rate)
        self.tokens = Double(rate) * 2
        self.updatedAt = now
    }

    /// Takes one token, or returns how many milliseconds until one is available.
    mutating func take(now: Int64) -> Int? {
        tokens = min(rate * 2, tokens + Double(max(now - updatedAt, 0)) * rate / 1000)
        updatedAt = now
        if tokens >= 1 {
            tokens -= 1
            return nil
        }
        return max(1, Int(((1 - tokens) * 1000 / rate).rounded(.up)))
    }
}

/// Token buckets keyed by name (API key ids); buckets idle for a minute are dropped.
final class KeyedRateLimiter: Sendable {
    let rate: Int
    let clock: any RealtimeClock
    let buckets = Locked<[String: TokenBucket]>([:], counting: LockStatistics.keyRateLimiter)

    init(rate: Int, clock: any RealtimeClock) {
        self.rate = rate
        self.clock = clock
    }

    /// Throws `42900` with a retry hint when `key` is over its rate.
    func take(_ key: String) throws(RealtimeError) {
        let now = clock.nowMilliseconds()
        let wait = buckets.withLock { b -> Int? in
            if b.count > 10_000 { b = b.filter { now - $0.value.updatedAt < 60_000 } }
            return b[key, default: TokenBucket(rate: rate, now: now)].take(now: now)
        }
        if let wait { throw .rateLimited(retryAfterMilliseconds: wait) }
    }
}
