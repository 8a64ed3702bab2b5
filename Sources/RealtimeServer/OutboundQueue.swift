import DequeModule
import NIOCore
import Synchronization

/// A connection's bounded outbound queue: fan-out pushes without blocking, the connection's
/// writer task drains it. Overflow means the peer is too slow; the queue then closes with 4008
/// and drops what it held, so the slow peer costs others nothing.
final class OutboundQueue: Sendable {
    enum Item {
        case frame(ByteBuffer)
        case close(code: UInt16, reason: String)
    }

    private struct State {
        var frames = Deque<ByteBuffer>()
        var close: (code: UInt16, reason: String)?
        var closeSent = false
        var waiter: CheckedContinuation<Void, Never>?
        var closingWaiters: [CheckedContinuation<Void, Never>] = []
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) { self.limit = limit }

    enum PushResult {
        case queued
        /// This push found the queue full: the queue now closes with 4008.
        case overflowed
        /// The queue was already closing; the frame was dropped.
        case closing
    }

    /// Queues a frame without blocking.
    @discardableResult
    func push(_ frame: ByteBuffer) -> PushResult {
        let (result, waiters) = state.withLock { s -> (PushResult, [CheckedContinuation<Void, Never>]) in
            guard s.close == nil else { return (.closing, []) }
            if s.frames.count >= limit {
                s.frames.removeAll()
                s.close = (4008, "slow consumer")
                return (.overflowed, Self.takeWaiters(&s, closing: true))
            }
            s.frames.append(frame)
            return (.queued, Self.takeWaiters(&s, closing: false))
        }
        for w in waiters { w.resume() }
        return result
    }

    private static func takeWaiters(_ s: inout State, closing: Bool) -> [CheckedContinuation<Void, Never>] {
        var out = s.waiter.map { [$0] } ?? []
        s.waiter = nil
        if closing {
            out += s.closingWaiters
            s.closingWaiters = []
        }
        return out
    }

    /// Returns once a close has been requested.
    func waitUntilClosing() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.close != nil { return true }
                s.closingWaiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Closes after what is queued (or at once, dropping it, when `dropQueued`). The first close wins.
    func close(code: UInt16, reason: String, dropQueued: Bool = false) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            if s.close == nil {
                s.close = (code, reason)
                if dropQueued { s.frames.removeAll() }
            }
            return Self.takeWaiters(&s, closing: true)
        }
        for w in waiters { w.resume() }
    }

    var isClosing: Bool { state.withLock { $0.close != nil } }

    /// The next item to write: queued frames in order, then the close once, then nil.
    func next() async -> Item? {
        while true {
            let item = state.withLock { s -> Item?? in
                if let f = s.frames.popFirst() { return .some(.frame(f)) }
                if let c = s.close {
                    if s.closeSent { return .some(nil) }
                    s.closeSent = true
                    return .some(.close(code: c.code, reason: c.reason))
                }
                return nil
            }
            if let item { return item }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if !s.frames.isEmpty || s.close != nil { return true }
                    s.waiter = c
                    return false
                }
                if resumeNow { c.resume() }
            }
        }
    }
}
