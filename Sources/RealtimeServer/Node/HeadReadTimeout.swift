import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Closes a connection whose request head has not fully arrived within the bound (contract
/// §10: 10 s), so a client that trickles a head in (slowloris) cannot hold a connection, on
/// its first request or any later one on a kept-alive connection.
///
/// It sits first in the pipeline and sees bytes; its ``Observer``, placed after the HTTP codec,
/// tells it when a head was decoded and when a response ended. The clock starts when the
/// connection opens and, on a kept-alive connection, at the first byte that arrives once every
/// request read so far has been answered; a decoded head stops it. An idle kept-alive
/// connection that sends nothing is left to the HTTP idle timeout (60 s). Removed when the
/// connection becomes a WebSocket.
final class HeadReadTimeout: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let timeout: TimeAmount
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
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if timer == nil, headsRead == responsesEnded { arm() }
        context.fireChannelRead(data)
    }

    /// The first request's head was read by the upgrade handler (no upgrade followed).
    func firstHeadRead() { cancel() }

    private func arm() {
        guard timer == nil, let context else { return }
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) { bound.value.close(promise: nil) }
    }

    private func cancel() {
        timer?.cancel()
        timer = nil
    }

    /// Reports decoded heads and ended responses to its ``HeadReadTimeout``.
    final class Observer: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPRequestPart
        typealias InboundOut = HTTPRequestPart
        typealias OutboundIn = HTTPResponsePart
        typealias OutboundOut = HTTPResponsePart

        let timeout: HeadReadTimeout
        init(_ timeout: HeadReadTimeout) { self.timeout = timeout }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head = unwrapInboundIn(data) {
                timeout.headsRead += 1
                timeout.cancel()
            }
            context.fireChannelRead(data)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .end = unwrapOutboundIn(data) { timeout.responsesEnded += 1 }
            context.write(data, promise: promise)
        }
    }
}
