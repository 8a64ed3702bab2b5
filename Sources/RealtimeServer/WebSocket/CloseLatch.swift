import Synchronization

/// The close a connection is headed for: the first request wins, and the connection learns of
/// it through the callback it installed.
final class CloseLatch: Sendable {
    struct Request {
        var code: UInt16
        var reason: String
        /// Drop frames still queued for the peer (slow consumer) instead of flushing them first.
        var dropQueued: Bool
    }

    private struct State {
        var request: Request?
        var onClose: (@Sendable (Request) -> Void)?
    }

    private let state = Mutex(State())

    /// Installs what runs (once, on the requesting thread) when a close is requested; runs at
    /// once if one already was.
    func onClose(_ body: @escaping @Sendable (Request) -> Void) {
        let pending = state.withLock { s -> Request? in
            s.onClose = body
            return s.request
        }
        if let pending { body(pending) }
    }

    /// Requests a close; later requests are ignored.
    func close(code: UInt16, reason: String, dropQueued: Bool = false) {
        let (request, body) = state.withLock { s -> (Request?, (@Sendable (Request) -> Void)?) in
            guard s.request == nil else { return (nil, nil) }
            let request = Request(code: code, reason: reason, dropQueued: dropQueued)
            s.request = request
            return (request, s.onClose)
        }
        if let request, let body { body(request) }
    }

    var isClosing: Bool { state.withLock { $0.request != nil } }
}
