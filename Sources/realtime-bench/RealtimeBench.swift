import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

@main
struct RealtimeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "realtime-bench",
        abstract: "Load generator for realtime-gateway (and, in raw mode, any WebSocket pub/sub server such as Nchan).",
        discussion: """
            Every command prints a progress line to stderr and one JSON result line per step to stdout.
            Latency is measured from the publisher's intended send time carried in the payload
            ("t", CLOCK_MONOTONIC ns) to the subscriber's receive time.
            """,
        subcommands: [Fanout.self, Idle.self, Storm.self, Worker.self]
    )
}

/// Where and how to reach the server under test.
struct Target: ParsableArguments {
    @Option(help: "realtime (this project's protocol) or raw (plain WebSocket + POST, e.g. Nchan).")
    var wire: WireProtocol = .realtime
    @Option(help: "Subscriber WebSocket URL; {channel} is replaced in raw mode.")
    var wsURL = "ws://127.0.0.1:8080/v1/realtime/ws"
    @Option(help: "Publish URL; {channel} is replaced in raw mode.")
    var publishURL = "http://127.0.0.1:8080/v1/realtime/publish"
    @Option(help: "API key (realtime mode): publishes and mints the subscribers' token.")
    var key: String?
    @Option(help: "Channels used; subscriber i takes channel i % channels.")
    var channels = 1
    @Option(help: "Channel name prefix.")
    var channelPrefix = "bench"
    @Option(help: "Minimum number of subscriber worker processes (more are used above 9000 connections each).")
    var workers = 1
    @Option(help: "Event loop threads per worker.")
    var threads = 1
    @Option(help: "A label copied into every result line.")
    var label = ""
    @Option(help: "PEM CA file to trust for wss:// and https:// URLs (default: the system's roots).")
    var tlsCAFile: String?
    @Option(help: "Bytes of Cookie header in each subscriber's upgrade request, as a browser's request carries (0: none).")
    var upgradeCookieBytes = 0
    @Option(help: "Bytes of an extra field in each subscriber's subscribe op (realtime mode): a client that once sent a large message.")
    var subscribePaddingBytes = 0

    var channelNames: [String] { (0..<channels).map { "\(channelPrefix)-\($0)" } }

    /// The WebSocket URL a subscriber uses: in realtime mode with a freshly minted token.
    func subscriberURL() async throws -> String {
        guard wire == .realtime else { return wsURL }
        guard let key else { throw ValidationError("--key is required with --wire realtime") }
        guard let api = WSURL(publishURL) else { throw ValidationError("bad --publish-url") }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let tlsCAFile { tls.trustRoots = .file(tlsCAFile) }
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        defer { Task { try? await client.shutdown() } }
        var request = HTTPClientRequest(url: "\(api.tls ? "https" : "http")://\(api.host):\(api.port)/v1/realtime/token")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"client_id":"bench","capabilities":{"*":["subscribe","history"]},"ttl_seconds":86400}"#))
        let response = try await client.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        struct Minted: Decodable { var token: String }
        guard response.status.code == 201, let minted = try? JSONDecoder().decode(Minted.self, from: Data(body.readableBytesView)) else {
            throw BenchError("token request failed: HTTP \(response.status.code) \(String(buffer: body))")
        }
        return wsURL + (wsURL.contains("?") ? "&" : "?") + "token=" + minted.token
    }

    /// Starts `count` subscribers in worker processes; returns once they have connected.
    func startSubscribers(_ count: Int) async throws -> (WorkerSet, WorkerReport) {
        let set = try WorkerSet(base: subscriberConfig(url: try await subscriberURL()), count: count, workers: workers)
        do {
            return (set, try await set.ready())
        } catch {
            set.finish()
            throw error
        }
    }

    func subscriberConfig(url: String) -> SubscriberConfig {
        SubscriberConfig(
            wire: wire, url: url, channels: channelNames, offset: 0, count: 0, threads: threads, tlsCAFile: tlsCAFile, upgradeCookieBytes: upgradeCookieBytes,
            subscribePaddingBytes: subscribePaddingBytes)
    }

    func plan(rate: Double?, seconds: Double, connections: Int, padding: Int = 0) -> PublishPlan {
        PublishPlan(
            wire: wire, url: publishURL, key: key, channels: channelNames, rate: rate, seconds: seconds, connections: connections, padding: padding,
            tlsCAFile: tlsCAFile)
    }
}

extension WireProtocol: ExpressibleByArgument {}

/// Expected deliveries: each successful publish on channel c reaches every subscriber of c.
func expectedDeliveries(perChannel: [UInt64], subscribers: Int) -> UInt64 {
    let c = perChannel.count
    var total: UInt64 = 0
    for (i, n) in perChannel.enumerated() {
        let subs = subscribers / c + (i < subscribers % c ? 1 : 0)
        total += n * UInt64(subs)
    }
    return total
}

struct StepResult: Codable {
    var scenario: String
    var label: String
    var subscribers: Int
    var channels: Int
    var offered_rate: Double?
    var published: UInt64
    var publish_failed: UInt64
    var publish_per_second: Double
    var expected: UInt64
    var delivered: UInt64
    var lost: Int64
    var delivered_per_second: Double
    var latency_ms: LatencySummary
    var publish_latency_ms: LatencySummary
    var connect_failed: Int
}

struct Fanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Subscribers on channels, a publisher over HTTP at stepped rates (or flat out); delivered/s, loss, latency."
    )
    @OptionGroup var target: Target
    @Option(help: "Subscriber connections.")
    var subscribers = 1000
    @Option(help: "Comma-separated publish rates in messages/s; 'max' publishes flat out.")
    var rates = "max"
    @Option(help: "Seconds per step.")
    var seconds = 5.0
    @Option(help: "Publisher HTTP connections.")
    var connections = 16
    @Option(help: "Payload padding bytes.")
    var padding = 0
    @Flag(help: "Keep stepping after a step loses messages or falls behind.")
    var noStop = false

    func run() async throws {
        var workers: WorkerSet?
        if subscribers > 0 {
            let (set, ready) = try await target.startSubscribers(subscribers)
            workers = set
            progress("\(ready.connected) subscribers connected, \(ready.failed) failed")
            if ready.failed > 0 && ready.connected == 0 { set.finish(); throw BenchError("no subscriber could connect") }
        }
        defer { workers?.finish() }
        let group = MultiThreadedEventLoopGroup.singleton
        let steps: [Double?] = rates.split(separator: ",").map { $0 == "max" ? nil : Double($0) }
        for rate in steps {
            _ = try await workers?.ask("report")
            let published = try await publish(target.plan(rate: rate, seconds: seconds, connections: connections, padding: padding), on: group)
            let expected = expectedDeliveries(perChannel: published.perChannel, subscribers: subscribers)
            // Drain: wait until everything expected arrived, or nothing more arrives for 2 s.
            var delivered: UInt64 = 0
            var histogram = makeHistogram()
            var idleSince = monotonicNanos()
            let drainStart = monotonicNanos()
            // When the last delivery was seen: deliveries that trail the publisher count
            // against the time they took, not just the publishing window.
            var lastDelivery = drainStart
            var connectFailed = 0
            if let workers {
                while delivered < expected {
                    try await Task.sleep(for: .milliseconds(50), clock: .suspending)
                    let r = try await workers.ask("report")
                    connectFailed = r.failed
                    if r.received > 0 {
                        idleSince = monotonicNanos()
                        lastDelivery = idleSince
                    }
                    delivered += r.received
                    histogram.add(pairs: r.latency)
                    if monotonicNanos() - idleSince > 2_000_000_000 || monotonicNanos() - drainStart > 30_000_000_000 { break }
                }
                // Whatever arrived during the last poll.
                let r = try await workers.ask("report")
                delivered += r.received
                histogram.add(pairs: r.latency)
            }
            let trailing = Double(lastDelivery - drainStart) / 1e9
            let window = max(published.elapsedSeconds, 0.001) + trailing
            let result = StepResult(
                scenario: "fanout", label: target.label, subscribers: subscribers, channels: target.channels,
                offered_rate: rate, published: published.ok, publish_failed: published.failed,
                publish_per_second: (Double(published.ok) / max(published.elapsedSeconds, 0.001)).rounded(),
                expected: expected, delivered: delivered, lost: Int64(expected) - Int64(delivered),
                delivered_per_second: (Double(delivered) / window).rounded(),
                latency_ms: histogram.summary, publish_latency_ms: published.latency.summary, connect_failed: connectFailed
            )
            emitResult(result)
            progress(
                "\(target.label) rate=\(rate.map { String(Int($0)) } ?? "max") published=\(published.ok) (\(result.publish_per_second)/s, \(published.failed) failed) "
                    + "delivered=\(delivered)/\(expected) (\(result.delivered_per_second)/s) p50=\(result.latency_ms.p50)ms p99=\(result.latency_ms.p99)ms"
            )
            // Behind: the publisher could not keep the offered rate (the server answered too
            // slowly), or deliveries could not keep up with what was published.
            let offeredDeliveries = Double(expected) / max(published.elapsedSeconds, 0.001)
            let fellBehind = rate.map { result.publish_per_second < 0.9 * $0 } ?? false
                || (subscribers > 0 && result.delivered_per_second < 0.9 * offeredDeliveries)
            if !noStop && (result.lost != 0 || fellBehind || published.failed > 0) { break }
        }
    }
}

struct Idle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Opens idle subscribed connections and reports the server's memory per connection.")
    @OptionGroup var target: Target
    @Option(help: "Connections to open.")
    var connections = 10000
    @Option(help: "Server process id whose resident memory is measured (repeatable; summed).")
    var pid: [Int32] = []
    @Option(help: "Seconds to hold the connections before measuring.")
    var hold = 3.0

    struct Result: Codable {
        var scenario = "idle"
        var label: String
        var connections: Int
        var connected: Int
        var failed: Int
        var rss_before_kib: Int
        var rss_after_kib: Int
        var kib_per_connection: Double
        var connect_seconds: Double
    }

    func run() async throws {
        let before = pid.compactMap(residentKiB).reduce(0, +)
        let start = monotonicNanos()
        let (set, ready) = try await target.startSubscribers(connections)
        defer { set.finish() }
        let connectSeconds = Double(monotonicNanos() - start) / 1e9
        progress("\(ready.connected) connected, \(ready.failed) failed in \(String(format: "%.1f", connectSeconds)) s; holding \(hold) s")
        try await Task.sleep(for: .seconds(hold), clock: .suspending)
        let after = pid.compactMap(residentKiB).reduce(0, +)
        let per = ready.connected > 0 ? Double(after - before) / Double(ready.connected) : 0
        emitResult(Result(
            label: target.label, connections: connections, connected: ready.connected, failed: ready.failed,
            rss_before_kib: before, rss_after_kib: after, kib_per_connection: (per * 100).rounded() / 100, connect_seconds: connectSeconds
        ))
    }
}

struct Storm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Clients drop, messages are published meanwhile, all reconnect at once with since_id: time until all caught up."
    )
    @OptionGroup var target: Target
    @Option(help: "Clients.")
    var clients = 10000
    @Option(help: "Messages published per channel while the clients are away.")
    var messages = 20
    @Option(help: "Publisher HTTP connections.")
    var connections = 8

    struct Result: Codable {
        var scenario = "storm"
        var label: String
        var clients: Int
        var channels: Int
        var missed_per_client: Int
        var reconnected: Int
        var caught_up: Int
        var resumed_false: Int
        var seconds: Double
    }

    func run() async throws {
        guard target.wire == .realtime else { throw ValidationError("storm needs --wire realtime (resume by since_id)") }
        let (set, ready) = try await target.startSubscribers(clients)
        defer { set.finish() }
        progress("\(ready.connected) clients connected, \(ready.failed) failed")
        let group = MultiThreadedEventLoopGroup.singleton
        // One message per channel so every client holds a last id.
        let first = try await publish(target.plan(rate: Double(target.channels) * 20, seconds: 0.05, connections: 1), on: group)
        var seen: UInt64 = 0
        let expectedFirst = expectedDeliveries(perChannel: first.perChannel, subscribers: clients)
        for _ in 0..<100 where seen < expectedFirst {
            try await Task.sleep(for: .milliseconds(100), clock: .suspending)
            seen += try await set.ask("report").received
        }
        progress("every client has a last id (\(seen)/\(expectedFirst)); dropping them")
        _ = try await set.ask("drop")
        let total = Double(messages * target.channels)
        let missed = try await publish(target.plan(rate: total * 10, seconds: 0.1, connections: connections), on: group)
        guard missed.failed == 0, missed.perChannel.allSatisfy({ $0 == UInt64(messages) }) else {
            throw BenchError("publishing the missed messages failed: \(missed.ok) ok, \(missed.failed) failed")
        }
        progress("published \(missed.ok) while away; reconnecting all \(clients) at once")
        let r = try await set.ask("reconnect \(messages)")
        let result = Result(
            label: target.label, clients: clients, channels: target.channels, missed_per_client: messages,
            reconnected: r.connected, caught_up: r.caughtUp, resumed_false: r.resumedFalse,
            seconds: (r.elapsedMilliseconds / 10).rounded() / 100
        )
        emitResult(result)
        progress("\(r.caughtUp)/\(clients) caught up in \(result.seconds) s, \(r.resumedFalse) resumed:false")
    }
}

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Internal: a subscriber worker process.", shouldDisplay: false)
    func run() async throws { try await runWorker() }
}
