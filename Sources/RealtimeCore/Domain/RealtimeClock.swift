import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Wall-clock time in milliseconds; engines take one so tests can move time (presence TTL,
/// token expiry, idempotency windows) without sleeping.
public protocol RealtimeClock: Sendable {
    func nowMilliseconds() -> Int64
}

public struct SystemClock: RealtimeClock {
    public init() {}
    public func nowMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

/// A clock that only moves when told to; for tests.
public final class ManualClock: RealtimeClock {
    private let now: Mutex<Int64>

    public init(milliseconds: Int64 = 1_800_000_000_000) { self.now = Mutex(milliseconds) }

    public func nowMilliseconds() -> Int64 { now.withLock { $0 } }

    public func advance(byMilliseconds ms: Int64) { now.withLock { $0 += ms } }
}
