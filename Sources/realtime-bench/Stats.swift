import Foundation
import Histogram

/// Monotonic nanoseconds, shared by every process on the machine (CLOCK_MONOTONIC), so a
/// publisher's send time carried in a payload can be compared with a subscriber's receive time.
@inline(__always)
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Latencies in microseconds, 3 significant digits, up to 10 minutes.
typealias LatencyHistogram = Histogram<UInt64>

func makeHistogram() -> LatencyHistogram {
    LatencyHistogram(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
}

extension Histogram where Count == UInt64 {
    /// Recorded (value, count) pairs: compact enough to pass between processes.
    var pairs: [[UInt64]] {
        recordedValues().map { [$0.value, $0.count] }
    }

    mutating func add(pairs: [[UInt64]]) {
        for p in pairs where p.count == 2 { _ = record(p[0], count: p[1]) }
    }

    /// Percentiles in milliseconds, as written to results.
    var summary: LatencySummary {
        func ms(_ v: UInt64) -> Double { Double(v) / 1000 }
        guard totalCount > 0 else { return LatencySummary(count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0) }
        return LatencySummary(
            count: totalCount,
            p50: ms(valueAtPercentile(50)), p90: ms(valueAtPercentile(90)),
            p99: ms(valueAtPercentile(99)), p999: ms(valueAtPercentile(99.9)), max: ms(max)
        )
    }
}

struct LatencySummary: Codable {
    var count: UInt64
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
}

/// Counters and latencies of one event loop's subscribers; touched only on that loop.
final class LoopStats: @unchecked Sendable {
    var received: UInt64 = 0
    var latency = makeHistogram()
    var errors: UInt64 = 0

    func take() -> WorkerReport {
        defer {
            latency.reset()
            received = 0
            errors = 0
        }
        return WorkerReport(received: received, latency: latency.pairs, errors: errors)
    }
}

/// What a subscriber worker reports on request.
struct WorkerReport: Codable {
    var received: UInt64 = 0
    var latency: [[UInt64]] = []
    var errors: UInt64 = 0
    var connected: Int = 0
    var failed: Int = 0
    var resumedFalse: Int = 0
    var caughtUp: Int = 0
    var elapsedMilliseconds: Double = 0
}

/// Resident memory of a process in KiB, from /proc.
func residentKiB(pid: Int32) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first { !$0.isEmpty }.map(String.init) ?? "")
    }
    return nil
}

/// Writes one line to stderr (progress), leaving stdout to results.
func progress(_ text: String) {
    writeAll(STDERR_FILENO, text + "\n")
}

/// Writes all of `text` to `fd`, retrying interrupted and partial writes (`FileHandle.write`
/// traps on `EINTR`, which a loaded machine delivers now and then).
func writeAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n > 0 {
            offset += n
        } else if n < 0, errno == EINTR || errno == EAGAIN {
            continue
        } else {
            return
        }
    }
}

/// What `fd` has to read (blocking until something is there), retrying interrupted reads;
/// empty at end of file or on an error.
func readSome(_ fd: Int32) -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n >= 0 { return Array(buffer[..<n]) }
        if errno != EINTR { return [] }
    }
}

func jsonLine<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: try! encoder.encode(value), as: UTF8.self)
}

/// Writes one JSON result line to stdout.
func emitResult<T: Encodable>(_ value: T) {
    writeAll(STDOUT_FILENO, jsonLine(value) + "\n")
}
