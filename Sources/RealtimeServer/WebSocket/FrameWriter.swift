import DequeModule
import NIOCore
import RealtimeCore
import Synchronization

/// Writes pre-encoded WebSocket frames straight to a connection's socket, below the WebSocket
/// encoder: fan-out writes the same bytes to every subscriber on the event loop without a task
/// hop per frame. Frames queue here only while the socket is not writable; past `limit` queued
/// frames the peer is too slow and the connection is closed (4008), so it costs others nothing.
///
/// Every method runs on the channel's event loop.
final class FrameWriter: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum WriteResult {
        /// Written; `firstUnflushed` when no flush was pending before this write.
        case written(firstUnflushed: Bool)
        case queued
        /// This write found the queue full; the queue was dropped and writing stopped.
        case overflowed
        /// Writing has stopped (closing, or the handler is gone); the frame was dropped.
        case stopped
    }

    private let limit: Int
    private var context: ChannelHandlerContext?
    private var queued = Deque<ByteBuffer>()
    private var stopped = false
    private var needsFlush = false
    /// The channel's writability, tracked here so the hot path reads a stored flag.
    private var writable = true
    /// Frames written since the last flush, counted into the delivery metric once per flush.
    private(set) var unflushedFrames = 0
    private var drained: EventLoopPromise<Void>?

    init(limit: Int) { self.limit = limit }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        writable = context.channel.isWritable
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        stopped = true
        queued.removeAll()
        drained?.succeed()
        drained = nil
    }

    func write(_ frame: WireFrame) -> WriteResult {
        guard !stopped, let context else { return .stopped }
        if queued.isEmpty, writable {
            context.write(wrapOutboundOut(frame.bytes), promise: nil)
            unflushedFrames += 1
            defer { needsFlush = true }
            return .written(firstUnflushed: !needsFlush)
        }
        if queued.count >= limit {
            queued.removeAll()
            stopped = true
            return .overflowed
        }
        queued.append(frame.bytes)
        unflushedFrames += 1
        return .queued
    }

    /// Flushes; returns how many frames were handed to the socket or queued since the last flush.
    @discardableResult
    func flush() -> Int {
        let frames = unflushedFrames
        unflushedFrames = 0
        guard needsFlush, let context else { return frames }
        needsFlush = false
        context.flush()
        return frames
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        while writable, let next = queued.popFirst() {
            context.write(wrapOutboundOut(next), promise: nil)
            needsFlush = true
            writable = context.channel.isWritable
        }
        _ = flush()
        if queued.isEmpty {
            drained?.succeed()
            drained = nil
        }
        context.fireChannelWritabilityChanged()
    }

    /// Stops accepting frames; completes once what is queued is written (at once when
    /// `dropQueued`), so a close frame sent afterwards follows every data frame.
    func finish(dropQueued: Bool, on loop: any EventLoop) -> EventLoopFuture<Void> {
        stopped = true
        if dropQueued { queued.removeAll() }
        _ = flush()
        guard context != nil, !queued.isEmpty else { return loop.makeSucceededVoidFuture() }
        let p = drained ?? loop.makePromise(of: Void.self)
        drained = p
        return p.futureResult
    }
}
