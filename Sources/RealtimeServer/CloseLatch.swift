import Synchronization

/// The close a connection is headed for: the first request wins, and waiters learn of it.
final class CloseLatch: Sendable {
    struct Request {
        var code: UInt16
        var reason: String
        /// Drop frames still queued for the peer (slow consumer) instead of flushing them first.
        var dropQueued: Bool
    }

    private struct State {
        var request: Request?
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Requests a close; later requests are ignored.
    func close(code: UInt16, reason: String, dropQueued: Bool = false) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            if s.request == nil { s.request = Request(code: code, reason: reason, dropQueued: dropQueued) }
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    var isClosing: Bool { state.withLock { $0.request != nil } }

    var request: Request? { state.withLock { $0.request } }

    /// Returns once a close has been requested.
    func waitUntilClosing() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.request != nil { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
