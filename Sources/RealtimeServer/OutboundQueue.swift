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
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) { self.limit = limit }

    /// Queues a frame; false when the queue overflowed (it is then closing with 4008) or is closing.
    @discardableResult
    func push(_ frame: ByteBuffer) -> Bool {
        let (accepted, waiter) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
            guard s.close == nil else { return (false, nil) }
            if s.frames.count >= limit {
                s.frames.removeAll()
                s.close = (4008, "slow consumer")
            } else {
                s.frames.append(frame)
            }
            let w = s.waiter
            s.waiter = nil
            return (s.close == nil, w)
        }
        waiter?.resume()
        return accepted
    }

    /// Closes after what is queued (or at once, dropping it, when `dropQueued`). The first close wins.
    func close(code: UInt16, reason: String, dropQueued: Bool = false) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.close == nil {
                s.close = (code, reason)
                if dropQueued { s.frames.removeAll() }
            }
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume()
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
