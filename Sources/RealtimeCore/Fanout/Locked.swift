import Synchronization

/// A `Mutex` in a class, so locks can live in arrays (one per shard).
///
/// In debug builds a lock given a ``LockStatistics/Counter`` counts how often it was taken and
/// how often the taker found it held by another thread (`/metrics` shows both as
/// `realtime_debug_lock_*`): the contention counters used to look for what serialises the
/// fan-out and publish paths on many cores. Release builds count nothing.
public final class Locked<Value>: Sendable {
    private let mutex: Mutex<Value>
    private let counter: LockStatistics.Counter?

    public init(_ value: sending Value, counting counter: LockStatistics.Counter? = nil) {
        mutex = Mutex(value)
        self.counter = counter
    }

    public func withLock<T, E: Error>(_ body: (inout sending Value) throws(E) -> sending T) throws(E) -> sending T {
        #if DEBUG
        if let counter {
            counter.acquired.add(1, ordering: .relaxed)
            if let taken = try mutex.withLockIfAvailable({ (value: inout sending Value) throws(E) -> sending Taken<T> in Taken(value: try body(&value)) }) {
                return taken.value
            }
            counter.contended.add(1, ordering: .relaxed)
        }
        #endif
        return try mutex.withLock(body)
    }

    /// Tells a result from "the lock was held" when the result is itself optional.
    private struct Taken<T>: ~Copyable {
        var value: T
    }
}

/// Acquisition and contention counts per kind of lock (debug builds only).
public enum LockStatistics {
    public final class Counter: Sendable {
        public let name: String
        let acquired = Atomic<Int>(0)
        let contended = Atomic<Int>(0)
        init(_ name: String) { self.name = name }
    }

    public static let hubShards = Counter("hub_shard")
    public static let memoryEngineShards = Counter("memory_engine_shard")
    public static let keyRateLimiter = Counter("key_rate_limiter")

    /// Prometheus text for `/metrics`; empty in release builds.
    public static var prometheusText: String {
        #if DEBUG
        let all = [hubShards, memoryEngineShards, keyRateLimiter]
        var text = "# HELP realtime_debug_lock_acquired_total Locks taken (debug builds)\n# TYPE realtime_debug_lock_acquired_total counter\n"
        for c in all { text += "realtime_debug_lock_acquired_total{lock=\"\(c.name)\"} \(c.acquired.load(ordering: .relaxed))\n" }
        text += "# HELP realtime_debug_lock_contended_total Locks found held by another thread (debug builds)\n# TYPE realtime_debug_lock_contended_total counter\n"
        for c in all { text += "realtime_debug_lock_contended_total{lock=\"\(c.name)\"} \(c.contended.load(ordering: .relaxed))\n" }
        return text
        #else
        return ""
        #endif
    }
}
