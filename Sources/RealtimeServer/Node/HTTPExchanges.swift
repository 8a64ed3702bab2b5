import Foundation
import NIOCore
import NIOHTTP1
import NIOWebSocket
import RealtimeCore

/// Keeps count of a connection's HTTP/1.1 exchanges, requests read against answers written,
/// and does what needs that count:
///
/// - tells ``HeadReadTimeout`` when a head was decoded and when an answer ended;
/// - closes a kept-alive connection idle for `REALTIME_HTTP_IDLE_TIMEOUT_SECONDS`, and on
///   graceful shutdown closes an idle connection at once and a busy one after its answers;
/// - answers `Expect: 100-continue` (RFC 9110 §10.1.1);
/// - answers input that is not HTTP/1.1 (a parse error of NIO's decoder), and a WebSocket
///   upgrade NIO refuses (no `Sec-WebSocket-Key`, a version other than 13), with `400` /
///   `40000` in the contract's JSON envelope, then closes the connection.
///
/// It sits right after NIO's HTTP/1 decoder (behind the upgrade handler while that is there),
/// before the conversion to HTTP types, so it sees every request head with its version and
/// every answer, whichever handler wrote it (the router or ``PublishFastPath``). Removed when
/// the connection becomes a WebSocket.
///
/// Interim and error answers never land inside another answer or ahead of an earlier one:
///
/// - A client that sends `Expect: 100-continue` waits for it before sending the body (curl does
///   for bodies over 1 MiB, a batch publish up to `REALTIME_MAX_REQUEST_BYTES`; older libcurl
///   from 1 KiB) and gives up waiting only after its own timeout (curl: 1 s). The
///   `100 Continue` goes out at once, or right after the answers to the requests before it.
///   HTTP/1.0 requests and requests without a body get none.
/// - Broken input between requests (on a new connection, or after complete requests): the
///   requests before it are answered, then the `400`, then the connection closes. A client that
///   sent nothing valid learns why at once, instead of waiting for the head-read timeout.
/// - Broken input inside a request (a malformed chunked body): that request cannot end, so the
///   error goes on to whoever reads it (the router's route or ``PublishFastPath``), which
///   answers it `400` without applying anything; the connection closes after that answer.
final class HTTPExchanges: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let timeout: HeadReadTimeout
    /// A kept-alive connection with nothing read or answered for this long is closed (while a
    /// request's answer is being worked out, the connection is not idle).
    let idleTimeout: TimeAmount
    /// When a request part was last read or an answer last ended.
    private var lastActive = NIODeadline.now()
    private var idleCheck: Scheduled<Void>?
    /// The server is shutting down: close once every request read has been answered.
    private var quiescing = false
    /// The numbers (counted from 1, as `headsRead`) of read requests that wait for their
    /// `100 Continue` until the answers before them have ended; in order.
    private var continueAfter = CircularBuffer<Int>(initialCapacity: 1)
    /// A request's head has been read and its end not yet.
    private var requestOpen = false
    /// The input broke: the connection closes once every request read has been answered.
    private var broken = false
    /// ... and the break fell between requests: this answer goes out before it closes.
    private var breakAnswer: (error: RealtimeError, headers: [(String, String)])?
    private static let malformed = (error: RealtimeError.badRequest("malformed HTTP/1.1 request"), headers: [(String, String)]())
    private static let badUpgrade = (
        error: RealtimeError.badRequest("invalid WebSocket upgrade: it needs a Sec-WebSocket-Key and Sec-WebSocket-Version: 13"),
        headers: [("Sec-WebSocket-Version", "13")]
    )

    /// With TLS: the `Strict-Transport-Security` value every answer carries.
    let hsts: String?

    init(_ timeout: HeadReadTimeout, idleTimeout: TimeAmount, hsts: String? = nil) {
        self.timeout = timeout
        self.idleTimeout = idleTimeout
        self.hsts = hsts
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastActive = .now()
        checkIdle(at: lastActive + idleTimeout, context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
    }

    private func checkIdle(at due: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(deadline: due) { bound.value.0.idleChecked(context: bound.value.1) }
    }

    /// One check per `idleTimeout` at most: close if nothing happened since, else look again.
    private func idleChecked(context: ChannelHandlerContext) {
        idleCheck = nil
        let now = NIODeadline.now()
        let answering = timeout.headsRead > timeout.responsesEnded && !requestOpen
        if !answering, lastActive + idleTimeout <= now {
            context.close(promise: nil)
        } else {
            checkIdle(at: answering ? now + idleTimeout : lastActive + idleTimeout, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else { return context.fireUserInboundEventTriggered(event) }
        // Graceful shutdown: an idle connection closes now, a busy one after its answers.
        if timeout.headsRead == timeout.responsesEnded, !requestOpen {
            context.close(promise: nil)
        } else {
            quiescing = true
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActive = .now()
        switch unwrapInboundIn(data) {
        case .head(let head):
            timeout.headsRead += 1
            timeout.cancel()
            requestOpen = true
            if Self.expectsContinue(head) {
                if timeout.responsesEnded == timeout.headsRead - 1 {
                    sendContinue(context: context)
                } else {
                    continueAfter.append(timeout.headsRead)
                }
            }
        case .body:
            break
        case .end:
            requestOpen = false
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let upgrade = error as? NIOWebSocketUpgradeError, upgrade == .invalidUpgradeHeader, !broken, timeout.headsRead == 0 {
            // A WebSocket upgrade without a valid key or version 13: nothing answered it.
            broken = true
            breakAnswer = Self.badUpgrade
            return endBroken(context: context, after: nil)
        }
        guard error is HTTPParserError else { return context.fireErrorCaught(error) }
        guard !broken else { return }  // the decoder reads nothing more after its first error
        broken = true
        if requestOpen {
            // Whoever reads this request's body answers it.
            requestOpen = false
            context.fireErrorCaught(error)
        } else {
            breakAnswer = Self.malformed
        }
        if timeout.responsesEnded == timeout.headsRead { endBroken(context: context, after: nil) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else { return context.write(data, promise: promise) }
        timeout.responsesEnded += 1
        lastActive = .now()
        if broken || quiescing, timeout.responsesEnded == timeout.headsRead {
            let written = context.eventLoop.makePromise(of: Void.self)
            if let promise { written.futureResult.cascade(to: promise) }
            context.write(data, promise: written)
            return endBroken(context: context, after: written.futureResult)
        }
        context.write(data, promise: promise)
        if !broken, let next = continueAfter.first, next == timeout.responsesEnded + 1 {
            continueAfter.removeFirst()
            sendContinue(context: context)
        }
    }

    /// Every request read has been answered after the input broke: the `400` if the break
    /// fell between requests, then close once what was written has gone out (`after`: the
    /// last answer's end, when it is being written now).
    private func endBroken(context: ChannelHandlerContext, after: EventLoopFuture<Void>?) {
        let last: EventLoopFuture<Void>
        if let answer = breakAnswer {
            breakAnswer = nil
            let reply = JSONReply(error: answer.error)
            var buffer = context.channel.allocator.buffer(capacity: reply.body.utf8.count)
            buffer.writeString(reply.body)
            var headers = HTTPHeaders(
                [
                    ("Content-Type", "application/json; charset=utf-8"), ("Content-Length", String(buffer.readableBytes)),
                    ("Date", PublishFastPath.httpDate(time(nil))), ("Connection", "close"),
                ] + answer.headers)
            if let hsts { headers.add(name: "Strict-Transport-Security", value: hsts) }
            let head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: reply.status.code), headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            last = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        } else {
            context.flush()
            last = after ?? context.eventLoop.makeSucceededVoidFuture()
        }
        last.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    private func sendContinue(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
    }

    /// An HTTP/1.1 request with a body that asks for `100 Continue` before sending it.
    static func expectsContinue(_ head: HTTPRequestHead) -> Bool {
        guard head.version.major == 1, head.version.minor >= 1, head.headers.contains(name: "expect") else { return false }
        guard head.headers.first(name: "expect")?.lowercased() == "100-continue" else { return false }
        return head.headers.first(name: "content-length") != "0"
    }
}
