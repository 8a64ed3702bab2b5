import NIOCore
import NIOHTTP1

/// Closes a connection whose request head has not fully arrived within the bound (contract
/// §10: 10 s), so a client that trickles a head in (slowloris) cannot hold a connection, on
/// its first request or any later one on a kept-alive connection.
///
/// It sits first in the pipeline and sees bytes; its ``Observer``, placed after the HTTP/1 codec,
/// tells it when a head was decoded and when a response ended. The clock starts when the
/// connection opens and, on a kept-alive connection, at the first byte that arrives once every
/// request read so far has been answered; a decoded head stops it. An idle kept-alive
/// connection that sends nothing is left to the HTTP idle timeout (60 s). Removed when the
/// connection becomes a WebSocket.
///
/// Starting and stopping the clock only sets or clears a deadline: one scheduled check per
/// connection (at most one per `timeout`) finds it, instead of a timer scheduled and cancelled
/// for every request (a heap insert and removal on the loop per request, measurably slower).
final class HeadReadTimeout: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let timeout: TimeAmount
    /// When the head being read must have arrived; nil while the clock is stopped.
    private var deadline: NIODeadline?
    /// The one pending check, if any.
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    /// Request heads decoded and responses ended: equal when no request is in flight.
    private var headsRead = 0
    private var responsesEnded = 0

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        arm()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancel()
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if deadline == nil, headsRead == responsesEnded { arm() }
        context.fireChannelRead(data)
    }

    /// The first request's head was read by the upgrade handler (no upgrade followed).
    func firstHeadRead() { cancel() }

    private func arm() {
        guard deadline == nil, context != nil else { return }
        let due = NIODeadline.now() + timeout
        deadline = due
        if timer == nil { check(at: due) }
    }

    private func cancel() { deadline = nil }

    private func check(at due: NIODeadline) {
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: due) { bound.value.checked() }
    }

    /// The check came due: close if the clock ran out, else look again when it will.
    private func checked() {
        timer = nil
        guard let deadline, let context else { return }
        if deadline <= .now() { context.close(promise: nil) } else { check(at: deadline) }
    }

    /// Reports decoded heads and ended responses to its ``HeadReadTimeout``, and answers a
    /// request that expects `100 Continue` (RFC 9110 §10.1.1). It sits between NIO's HTTP/1
    /// codec and the conversion to HTTP types, so it sees every request head with its version
    /// and every response, whichever handler wrote it (the router or ``PublishFastPath``).
    ///
    /// A client that sends `Expect: 100-continue` waits for the interim answer before it sends
    /// the body (curl does for bodies over 1 MiB, a batch publish up to
    /// `REALTIME_MAX_REQUEST_BYTES`; older libcurl from 1 KiB), and gives up waiting only after
    /// its own timeout (curl: 1 s). The `100 Continue` goes out as soon as every earlier request
    /// on the connection has been answered, never inside another response; then the request is
    /// read and answered as any other (an oversized body is read, dropped and answered `41300`).
    /// HTTP/1.0 requests and requests without a body get no interim answer.
    final class Observer: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        typealias OutboundIn = HTTPServerResponsePart
        typealias OutboundOut = HTTPServerResponsePart

        let timeout: HeadReadTimeout
        /// The numbers (counted from 1, as `headsRead`) of read requests that wait for their
        /// `100 Continue` until the responses before them have ended; in order.
        private var continueAfter = CircularBuffer<Int>(initialCapacity: 1)

        init(_ timeout: HeadReadTimeout) { self.timeout = timeout }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head(let head) = unwrapInboundIn(data) {
                timeout.headsRead += 1
                timeout.cancel()
                if Self.expectsContinue(head) {
                    if timeout.responsesEnded == timeout.headsRead - 1 {
                        sendContinue(context: context)
                    } else {
                        continueAfter.append(timeout.headsRead)
                    }
                }
            }
            context.fireChannelRead(data)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            guard case .end = unwrapOutboundIn(data) else { return context.write(data, promise: promise) }
            timeout.responsesEnded += 1
            context.write(data, promise: promise)
            if let next = continueAfter.first, next == timeout.responsesEnded + 1 {
                continueAfter.removeFirst()
                sendContinue(context: context)
            }
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
}
