import Dispatch
import Foundation
import HTTPTypes
import Metrics
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOSSL
import RealtimeCore
import Synchronization

/// Serves `POST /v1/realtime/publish` and `/publish/batch` from the connection's pipeline,
/// below Hummingbird: no request task per connection turn, no router, no middleware chain, no
/// async body stream. The answer comes from the same ``PublishEndpoint`` the router's routes
/// use; every other request passes through to Hummingbird untouched.
///
/// Responses leave in request order however requests are mixed on a pipelined HTTP/1.1
/// connection: a publish waits until every request handed to the router before it has been
/// answered, and while a publish runs, the requests behind it wait here. Reads go on while a
/// publish runs and nothing waits (holding them would take the socket out of the poller's
/// read set and put it back, two `epoll_ctl` calls per request), and stop once something
/// waits, so what waits is at most two reads' worth. The end of the input waits with them:
/// it is passed on only once every request before it has been handled.
///
/// The publish runs as a task whose executor is this connection's event loop, so it starts,
/// suspends on the engine and resumes on the loop that then writes the response (through the
/// Redis engine, on the Redis connection of the same loop: ``RedisCommandClient``).
final class PublishFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// What the fast path needs from the node, shared by every connection.
    struct Service: Sendable {
        let endpoint: PublishEndpoint
        /// TLS: the header every response carries, and whether a client certificate is required.
        let hsts: String?
        let requireClientCertificate: Bool
        let metrics: PublishRouteMetrics
    }

    private struct Publish {
        var head: HTTPRequestHead
        var route: PublishEndpoint.Route
        /// Nil once the body outgrew the route's limit, or the key was refused (the rest is
        /// read and dropped).
        var body: ByteBuffer?
        var limit: Int
        var startedAt: UInt64
        /// The key's check, once made: while the body is small it is made with the answer;
        /// a body that grows past ``PublishEndpoint/unauthenticatedBodyLimit`` waits for it.
        var key: Result<APIKeyAuthenticator.Authenticated, RealtimeError>?
    }

    private enum State {
        /// Between requests.
        case idle
        /// A request for the router: its parts pass through.
        case passing
        /// A publish's body is arriving.
        case collecting(Publish)
        /// A publish's body outgrew what is read before its key is checked: reads wait for the
        /// check.
        case authenticating(Publish)
        /// A publish is being answered; the requests behind it wait.
        case running
    }

    private let service: Service
    private let executor: EventLoopTaskExecutor
    private var state = State.idle
    /// Requests handed to the router whose response has not ended yet.
    private var routedOpen = 0
    /// Parts that arrived while they could not be handled yet, in order.
    private var waiting = CircularBuffer<HTTPServerRequestPart>()
    /// A read asked for while requests wait; issued once they are all handled.
    private var readHeld = false
    /// The peer ended its input while requests were waiting or a publish ran: passed on (to
    /// the router, which then ends the connection) once they are handled.
    private var inputClosedHeld = false
    private var context: ChannelHandlerContext?
    /// The input broke inside a request still waiting here (``HTTPExchanges`` passes the
    /// decoder's error on only then); handled once the parts before it are.
    private var brokenInput: (any Error)?
    /// The `Date` header's value and the second it names (responses carry one, as the router's do).
    private var date: (second: Int, text: String) = (-1, "")

    init(service: Service, eventLoop: any EventLoop) {
        self.service = service
        self.executor = EventLoopTaskExecutor(eventLoop)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if waiting.isEmpty, handle(part, context: context) { return }
        waiting.append(part)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else { return context.fireErrorCaught(error) }
        if waiting.isEmpty, !isRunning { inputBroke(error, context: context) } else { brokenInput = error }
    }

    /// The request being read cannot end: a publish is answered `400` here, unapplied (the
    /// connection then closes, ``HTTPExchanges``); the router's request gets the error.
    private func inputBroke(_ error: any Error, context: ChannelHandlerContext) {
        guard case .collecting(let publish) = state else { return context.fireErrorCaught(error) }
        state = .running
        service.metrics.started()
        finish(publish, JSONReply(error: .badRequest("malformed HTTP/1.1 request body")))
    }

    func read(context: ChannelHandlerContext) {
        if waiting.isEmpty, !isAuthenticating { context.read() } else { readHeld = true }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed, !waiting.isEmpty || isRunning {
            inputClosedHeld = true
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // Only the router's responses pass here (the fast path writes below itself).
        let ended = if case .end = unwrapOutboundIn(data) { true } else { false }
        context.write(data, promise: promise)
        if ended, routedOpen > 0 {
            routedOpen -= 1
            if routedOpen == 0 { resume(context: context) }
        }
    }

    /// A publish is being answered or its key checked: parts wait, reads are held.
    private var isRunning: Bool {
        switch state {
        case .running, .authenticating: true
        default: false
        }
    }

    /// A publish body is arriving while its key is checked: reads wait for the check.
    private var isAuthenticating: Bool {
        if case .authenticating = state { true } else { false }
    }

    /// Handles a part now, or returns false when it must wait (for earlier answers).
    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) -> Bool {
        switch (state, part) {
        case (.running, _), (.authenticating, _):
            return false
        case (.idle, .head(let head)):
            if head.method == .POST, let route = PublishEndpoint.route(path: Self.pathOnly(head.uri)) {
                guard routedOpen == 0 else { return false }
                let limit = service.endpoint.bodyLimit(route)
                state = .collecting(Publish(head: head, route: route, body: ByteBuffer(), limit: limit, startedAt: Self.now()))
                return true
            }
            routedOpen += 1
            state = .passing
            context.fireChannelRead(wrapInboundOut(part))
            return true
        case (.collecting(var publish), .body(let chunk)):
            state = .idle  // no copy of the buffer while it grows
            if var body = publish.body {
                publish.body = nil
                if body.readableBytes + chunk.readableBytes <= publish.limit {
                    var chunk = chunk
                    body.writeBuffer(&chunk)
                    publish.body = body
                }
            }
            if publish.key == nil, let body = publish.body, body.readableBytes > service.endpoint.unauthenticatedBodyLimit {
                state = .authenticating(publish)
                authenticate(publish, context: context)
            } else {
                state = .collecting(publish)
            }
            return true
        case (.collecting(let publish), .end):
            state = .running
            service.metrics.started()
            start(publish, context: context)
            return true
        case (.passing, .end):
            state = .idle
            context.fireChannelRead(wrapInboundOut(part))
            return true
        case (.passing, _), (.idle, _), (.collecting, .head):
            // The codec never sends these; pass them on for the router to refuse.
            context.fireChannelRead(wrapInboundOut(part))
            return true
        }
    }

    /// Handles what waited, in order, until something must wait again; then reads on.
    private func resume(context: ChannelHandlerContext) {
        var handled = false
        while let part = waiting.first, handle(part, context: context) {
            waiting.removeFirst()
            handled = true
        }
        // Outside a read, the router's channel handler passes on what it was given only at a
        // read's end: without this, a request that waited here would sit there unanswered.
        if handled { context.fireChannelReadComplete() }
        if waiting.isEmpty, !isRunning, let error = brokenInput {
            brokenInput = nil
            inputBroke(error, context: context)
        }
        if waiting.isEmpty, !isRunning, inputClosedHeld {
            inputClosedHeld = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        if waiting.isEmpty, !isAuthenticating, readHeld {
            readHeld = false
            context.read()
        }
    }

    /// Checks the key of a publish whose body is still arriving; reads wait meanwhile.
    private func authenticate(_ publish: Publish, context: ChannelHandlerContext) {
        let endpoint = service.endpoint
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        let presented = RESTController.presentedKey(publish.head.headers)
        Task(executorPreference: executor) {
            let key = await endpoint.authenticate(presented)
            if loop.inEventLoop {
                handler.value.authenticated(key)
            } else {
                loop.execute { handler.value.authenticated(key) }
            }
        }
    }

    /// The check is in: a refused key's body is dropped as it arrives (the refusal is answered
    /// at its end); then the waiting parts are handled and reads go on.
    private func authenticated(_ key: Result<APIKeyAuthenticator.Authenticated, RealtimeError>) {
        guard case .authenticating(var publish) = state, let context else { return }
        publish.key = key
        if case .failure = key { publish.body = nil }
        state = .collecting(publish)
        resume(context: context)
    }

    private func start(_ publish: Publish, context: ChannelHandlerContext) {
        let service = self.service
        let channel = context.channel
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        Task(executorPreference: executor) {
            let reply: JSONReply
            if service.requireClientCertificate, (try? await channel.nioSSL_peerCertificate().get()) == nil {
                reply = JSONReply(error: .noCredentials("a client certificate signed by REALTIME_TLS_CLIENT_CA_FILE is required"))
            } else {
                let key: Result<APIKeyAuthenticator.Authenticated, RealtimeError>
                if let checked = publish.key {
                    key = checked
                } else {
                    key = await service.endpoint.authenticate(RESTController.presentedKey(publish.head.headers))
                }
                reply = await service.endpoint.respond(publish.route, key: key, body: publish.body)
            }
            let answered = reply
            if loop.inEventLoop {
                handler.value.finish(publish, answered)
            } else {
                loop.execute { handler.value.finish(publish, answered) }
            }
        }
    }

    private func finish(_ publish: Publish, _ reply: JSONReply) {
        service.metrics.finished(publish.route, status: reply.status, nanoseconds: Self.now() - publish.startedAt)
        guard let context else { return }
        var body = context.channel.allocator.buffer(capacity: reply.body.utf8.count)
        body.writeString(reply.body)
        let close = !publish.head.isKeepAlive
        var headers = HTTPHeaders()
        headers.reserveCapacity(5 + reply.headers.count)
        headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Date", value: dateHeader())
        for field in reply.headers { headers.add(name: field.name.rawName, value: field.value) }
        if let hsts = service.hsts { headers.add(name: "Strict-Transport-Security", value: hsts) }
        if close { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: reply.status.code), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if close {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            state = .idle
            return
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        state = .idle
        resume(context: context)
    }

    private func dateHeader() -> String {
        let now = time(nil)
        if now != date.second { date = (now, Self.httpDate(now)) }
        return date.text
    }

    /// IMF-fixdate, the HTTP `Date` format: `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func httpDate(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 40)
        let n = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func pathOnly(_ target: String) -> Substring {
        let end = target.firstIndex(where: { $0 == "?" || $0 == "#" }) ?? target.endIndex
        return target[..<end]
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
}

/// Runs a task's jobs on one NIO event loop.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// The request metrics Hummingbird's `MetricsMiddleware` records, with the same labels, for
/// the requests the fast path answers: `/metrics` reads the same whichever way a publish came.
/// The usual answers' instruments are made up front (no lock per request); others on first use.
final class PublishRouteMetrics: Sendable {
    private struct Key: Hashable {
        let route: PublishEndpoint.Route
        let status: Int
    }
    private struct Instruments: Sendable {
        let requests: Counter
        let duration: Metrics.Timer
    }
    private let usual: [Key: Instruments]
    private let others = Mutex<[Key: Instruments]>([:])
    private let active = Meter(label: "http.server.active_requests", dimensions: [("http.request.method", "POST")])

    init() {
        var usual: [Key: Instruments] = [:]
        for route in PublishEndpoint.Route.allCases {
            for status in [200, 201] { usual[Key(route: route, status: status)] = Self.make(Key(route: route, status: status)) }
        }
        self.usual = usual
    }

    func started() { active.increment() }

    func finished(_ route: PublishEndpoint.Route, status: HTTPResponse.Status, nanoseconds: UInt64) {
        active.decrement()
        let key = Key(route: route, status: status.code)
        let found =
            usual[key]
            ?? others.withLock { table in
                if let found = table[key] { return found }
                let made = Self.make(key)
                table[key] = made
                return made
            }
        found.requests.increment()
        found.duration.recordNanoseconds(Int64(clamping: nanoseconds))
    }

    private static func make(_ key: Key) -> Instruments {
        let dimensions = [("http.route", key.route.path), ("http.request.method", "POST"), ("http.response.status_code", String(key.status))]
        return Instruments(
            requests: Counter(label: "hb.requests", dimensions: dimensions),
            duration: Metrics.Timer(label: "http.server.request.duration", dimensions: dimensions, preferredDisplayUnit: .seconds))
    }
}
