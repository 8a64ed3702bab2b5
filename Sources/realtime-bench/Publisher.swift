import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// What the publisher sends and how fast.
struct PublishPlan {
    var wire: WireProtocol
    /// `http://host:port/path`; `{channel}` in the path is replaced (raw mode).
    var url: String
    var key: String?
    var channels: [String]
    /// Messages per second over all connections; nil publishes flat out.
    var rate: Double?
    var seconds: Double
    var connections: Int
    /// Extra bytes of payload padding.
    var padding: Int = 0
    /// PEM CA to trust for `https://` (nil: the system's roots).
    var tlsCAFile: String?
}

struct PublishResult {
    var sent: UInt64 = 0
    var ok: UInt64 = 0
    var failed: UInt64 = 0
    /// Successful publishes per channel index.
    var perChannel: [UInt64]
    var latency = makeHistogram()
    var elapsedSeconds: Double = 0
}

/// One keep-alive HTTP/1.1 connection publishing one request at a time. Message n is due at
/// `start + n / rate`; latency counts from that intended time, so a stalled server cannot
/// hide its stall by slowing the publisher down (no coordinated omission).
private final class PublisherHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let plan: PublishPlan
    let slot: Int
    let start: UInt64
    let end: UInt64
    let interval: Double
    let done: EventLoopPromise<PublishResult>
    let host: String
    let path: String
    var result: PublishResult
    var n: UInt64
    var intended: UInt64 = 0
    var channelIndex = 0
    var status: UInt = 0
    /// A request was sent and its response has not ended yet.
    var outstanding = false
    let padding: String

    init(plan: PublishPlan, slot: Int, start: UInt64, host: String, path: String, done: EventLoopPromise<PublishResult>) {
        self.plan = plan
        self.slot = slot
        self.start = start
        self.end = start + UInt64(plan.seconds * 1e9)
        self.interval = plan.rate.map { 1e9 / $0 } ?? 0
        self.done = done
        self.host = host
        self.path = path
        self.n = UInt64(slot)
        self.result = PublishResult(perChannel: Array(repeating: 0, count: plan.channels.count))
        self.padding = String(repeating: "x", count: plan.padding)
    }

    func channelActive(context: ChannelHandlerContext) {
        next(context: context)
    }

    private func next(context: ChannelHandlerContext) {
        let now = monotonicNanos()
        if plan.rate != nil {
            intended = start + UInt64(Double(n) * interval)
            if intended >= end { return finish(context: context) }
            if intended > now + 200_000 {
                let delay = TimeAmount.nanoseconds(Int64(intended - now))
                let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: delay) { self.send(context: ctx.value) }
                return
            }
        } else {
            if now >= end { return finish(context: context) }
            intended = now
        }
        send(context: context)
    }

    private func send(context: ChannelHandlerContext) {
        channelIndex = Int(n % UInt64(plan.channels.count))
        let channel = plan.channels[channelIndex]
        let data = #"{"t":\#(intended),"s":\#(n)\#(padding.isEmpty ? "" : #","p":""# + padding + "\"")}"#
        let body: String
        let uri: String
        switch plan.wire {
        case .realtime:
            body = #"{"channel":""# + channel + #"","event":"b","data":"# + data + "}"
            uri = path
        case .raw:
            body = data
            uri = path.replacingOccurrences(of: "{channel}", with: channel)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        if let key = plan.key { headers.add(name: "Authorization", value: "Bearer " + key) }
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: uri, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        outstanding = true
        result.sent += 1
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status.code
        case .body:
            break
        case .end:
            guard outstanding else {
                // A server bug this tool must show, not crash on.
                result.failed += 1
                progress("publish connection \(slot): a response (HTTP \(status)) with no request outstanding")
                return
            }
            outstanding = false
            let now = monotonicNanos()
            if (200..<300).contains(status) {
                result.ok += 1
                result.perChannel[channelIndex] += 1
            } else {
                result.failed += 1
                if result.failed <= 3 { progress("publish: HTTP \(status)") }
            }
            _ = result.latency.record(max((now &- min(intended, now)) / 1000, 1))
            n += UInt64(plan.connections)
            next(context: context)
        }
    }

    private func finish(context: ChannelHandlerContext) {
        result.elapsedSeconds = Double(monotonicNanos() - start) / 1e9
        done.succeed(result)
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        progress("publish connection \(slot): \(error)")
        result.elapsedSeconds = Double(monotonicNanos() - start) / 1e9
        done.succeed(result)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        result.elapsedSeconds = Double(monotonicNanos() - start) / 1e9
        done.succeed(result)
    }
}

/// Runs a publish plan on `group` and sums what every connection did.
func publish(_ plan: PublishPlan, on group: any EventLoopGroup) async throws -> PublishResult {
    guard let url = WSURL(plan.url) else { throw BenchError("bad publish URL \(plan.url)") }
    let address = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
    let tls = try url.tlsContext(caFile: plan.tlsCAFile)
    let start = monotonicNanos() + 50_000_000
    var futures: [EventLoopFuture<PublishResult>] = []
    for slot in 0..<plan.connections {
        let loop = group.next()
        let done = loop.makePromise(of: PublishResult.self)
        let host = "\(url.host):\(url.port)"
        _ = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(try url.tlsHandler(tls)) }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        PublisherHandler(plan: plan, slot: slot, start: start, host: host, path: url.path, done: done)
                    )
                }
            }
            .connect(to: address)
            .whenFailure { done.fail($0) }
        futures.append(done.futureResult)
    }
    var total = PublishResult(perChannel: Array(repeating: 0, count: plan.channels.count))
    for f in futures {
        let r = try await f.get()
        total.sent += r.sent
        total.ok += r.ok
        total.failed += r.failed
        for i in r.perChannel.indices { total.perChannel[i] += r.perChannel[i] }
        total.latency.add(r.latency)
        total.elapsedSeconds = max(total.elapsedSeconds, r.elapsedSeconds)
    }
    return total
}
