import Foundation

/// A subscriber worker: this same executable run as `realtime-bench worker`, driven over
/// stdin/stdout with one line per command and one JSON report per answer. Workers exist
/// because one process may hold at most 20000 descriptors here.
final class WorkerProcess: @unchecked Sendable {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let lines: AsyncStream<String>
    private var iterator: AsyncStream<String>.Iterator

    init(config: SubscriberConfig) throws {
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["worker"]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        let (stream, continuation) = AsyncStream<String>.makeStream()
        lines = stream
        iterator = stream.makeAsyncIterator()
        let fd = output.fileHandleForReading.fileDescriptor
        let thread = Thread {
            var pending = Data()
            while true {
                let chunk = readSome(fd)
                if chunk.isEmpty { break }
                pending.append(contentsOf: chunk)
                while let nl = pending.firstIndex(of: 0x0A) {
                    continuation.yield(String(decoding: pending[pending.startIndex..<nl], as: UTF8.self))
                    pending = Data(pending[(nl + 1)...])
                }
            }
            continuation.finish()
        }
        thread.start()
        try process.run()
        send(jsonLine(config))
    }

    func send(_ line: String) {
        writeAll(input.fileHandleForWriting.fileDescriptor, line + "\n")
    }

    /// The next report line.
    func report() async throws -> WorkerReport {
        while let line = await iterator.next() {
            if let data = line.data(using: .utf8), let r = try? JSONDecoder().decode(WorkerReport.self, from: data) { return r }
            progress("worker: \(line)")
        }
        throw BenchError("a worker exited")
    }

    func finish() {
        send("exit")
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

/// Several workers seen as one.
final class WorkerSet: @unchecked Sendable {
    let workers: [WorkerProcess]

    /// Splits `count` subscribers over enough workers that none holds more than `perWorker`.
    init(base: SubscriberConfig, count: Int, workers minimum: Int, perWorker: Int = 9000) throws {
        let n = max(minimum, (count + perWorker - 1) / perWorker, 1)
        var list: [WorkerProcess] = []
        var offset = 0
        for i in 0..<n {
            var c = base
            c.offset = offset
            c.count = count / n + (i < count % n ? 1 : 0)
            c.connectConcurrency = max(16, base.connectConcurrency / n)
            offset += c.count
            list.append(try WorkerProcess(config: c))
        }
        workers = list
    }

    /// Sends a command to all, then sums their answers.
    func ask(_ command: String) async throws -> WorkerReport {
        for w in workers { w.send(command) }
        var total = WorkerReport()
        var histogram = makeHistogram()
        for w in workers {
            let r = try await w.report()
            total.received += r.received
            total.errors += r.errors
            total.connected += r.connected
            total.failed += r.failed
            total.caughtUp += r.caughtUp
            total.resumedFalse += r.resumedFalse
            total.elapsedMilliseconds = max(total.elapsedMilliseconds, r.elapsedMilliseconds)
            histogram.add(pairs: r.latency)
        }
        total.latency = histogram.pairs
        return total
    }

    /// The first report, sent by each worker once its connections are up.
    func ready() async throws -> WorkerReport { try await ask("") }

    func finish() { for w in workers { w.finish() } }
}

/// `realtime-bench worker`: reads its configuration, connects, then answers commands.
func runWorker() async throws {
    guard let first = readLine(), let config = try? JSONDecoder().decode(SubscriberConfig.self, from: Data(first.utf8)) else {
        throw BenchError("worker: expected a configuration line")
    }
    let pool = try SubscriberPool(config: config)
    var (connected, failed) = await pool.connectAll()
    func emit(_ r: WorkerReport) { writeAll(STDOUT_FILENO, jsonLine(r) + "\n") }
    while let line = readLine() {
        let words = line.split(separator: " ")
        switch words.first {
        case nil:
            var r = await pool.report()
            r.connected = connected
            r.failed = failed
            emit(r)
        case "report":
            var r = await pool.report()
            r.connected = connected
            emit(r)
        case "drop":
            await pool.dropAll()
            emit(WorkerReport())
        case "reconnect":
            let expected = words.count > 1 ? Int(words[1]) ?? 1 : 1
            let r = await pool.reconnectAll(expected: expected, timeout: .seconds(60))
            connected = r.connected
            failed = r.failed
            emit(r)
        case "exit":
            pool.shutdown()
            return
        default:
            emit(WorkerReport(errors: 1))
        }
    }
    pool.shutdown()
}
