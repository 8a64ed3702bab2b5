import NIOCore
import NIOHTTP1

/// Closes a connection whose request head has not fully arrived within the bound (contract
/// §10: 10 s), so a client that trickles a head in (slowloris) cannot hold a connection, on
/// its first request or any later one on a kept-alive connection.
///
/// It sits first in the pipeline and sees bytes; ``HTTPExchanges``, placed after the HTTP/1 codec,
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
    var headsRead = 0
    var responsesEnded = 0

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

    func cancel() { deadline = nil }

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
}
