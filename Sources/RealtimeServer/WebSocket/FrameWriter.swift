import DequeModule
import NIOCore
import RealtimeCore
import Synchronization

/// Writes pre-encoded WebSocket frames straight to a connection's socket, below the WebSocket
/// encoder: fan-out writes the same bytes to every subscriber on the event loop without a task
/// hop per frame. Frames queue here only while the socket is not writable.
///
/// Every byte counts against the connection's outbound budget (contract §10): what is queued
/// here plus what NIO holds unsent. A write that would take it over the budget stops the
/// writer (the connection closes with 4008), so a peer that does not read costs the node at
/// most its budget.
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

    /// The outbound budget in bytes.
    private let budget: Int
    private var context: ChannelHandlerContext?
    private var queued = Deque<ByteBuffer>()
    private var queuedBytes = 0
    private var stopped = false
    private var needsFlush = false
    /// The channel's writability, tracked here so the hot path reads a stored flag.
    private var writable = true
    /// Frames written since the last flush, counted into the delivery metric once per flush.
    private(set) var unflushedFrames = 0
    private var drained: EventLoopPromise<Void>?

    init(budget: Int) { self.budget = budget }

    /// Bytes NIO holds for the socket and has not sent yet.
    private var unsentInChannel: Int {
        (try? context?.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        writable = context.channel.isWritable
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        stopped = true
        queued.removeAll()
        queuedBytes = 0
        drained?.succeed()
        drained = nil
    }

    func write(_ frame: WireFrame) -> WriteResult {
        write(frame.bytes, frames: 1)
    }

    /// Writes `frames` complete frames held back to back in `bytes`, as one write.
    func write(_ bytes: ByteBuffer, frames: Int) -> WriteResult {
        guard !stopped, let context else { return .stopped }
        let size = bytes.readableBytes
        if queued.isEmpty, writable {
            // Writable: NIO holds less than its high water mark, so only a write that alone
            // nears the budget needs the exact count.
            if size > budget / 2, unsentInChannel + size > budget { return overflow() }
            context.write(wrapOutboundOut(bytes), promise: nil)
            unflushedFrames += frames
            defer { needsFlush = true }
            return .written(firstUnflushed: !needsFlush)
        }
        if queuedBytes + size + unsentInChannel > budget { return overflow() }
        queued.append(bytes)
        queuedBytes += size
        unflushedFrames += frames
        return .queued
    }

    private func overflow() -> WriteResult {
        queued.removeAll()
        queuedBytes = 0
        stopped = true
        return .overflowed
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
            queuedBytes -= next.readableBytes
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
        if dropQueued {
            queued.removeAll()
            queuedBytes = 0
        }
        _ = flush()
        guard context != nil, !queued.isEmpty else { return loop.makeSucceededVoidFuture() }
        let p = drained ?? loop.makePromise(of: Void.self)
        drained = p
        return p.futureResult
    }
}
