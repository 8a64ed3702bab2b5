/// The lifecycle of one WebSocket connection as a value: each event returns what the handler
/// must do, and the handler does only that (in the manner of swift-websocket's
/// `WebSocketStateMachine`). No I/O, no clock: tested exhaustively on its own.
///
/// It decides the token's lifetime (the authentication deadline, `token_expiring`, closing
/// `4001` at expiry, a refreshed expiry), the heartbeat (ping, or close `1001` after a missed pong), the close handshake
/// (one close per connection, whoever asks first: flush or drop what is queued, then the close
/// frame, then the socket), EOF, when the session may clean up (after the op in flight), when
/// the connection may leave the registry (cleaned up and the socket closed), and when reads are
/// held (too much work queued, or a socket that does not take what is written).
struct ConnectionStateMachine {
    enum Phase: Equatable {
        case open
        /// A close was asked for; the close frame is not written yet.
        case closing
        /// Our close frame is written; waiting for the peer's answer (or a timeout).
        case closeSent
    }

    /// Why and how the connection closes.
    struct Close: Equatable {
        var code: UInt16
        var reason: String
        /// Drop what is queued for the peer instead of flushing it first.
        var dropQueued: Bool
    }

    /// A frame the machine decides to send the client.
    enum Notice: Equatable {
        /// No token within the authentication deadline (`40100`, then close `4001`).
        case authTimeout
        /// The token expired (`40140`, then close `4001`).
        case tokenExpired
        /// `token_expiring`, with the expiry in milliseconds since the epoch.
        case tokenExpiring(expiresAtMilliseconds: Int64)
    }

    enum Action: Equatable {
        case send(Notice)
        case sendPing
        /// Stop the heartbeat and expiry timers, drop queued ops, finish the writer (flush or
        /// drop), then write the close frame; arm `unansweredCloseTimeout` meanwhile.
        case beginClose(Close)
        /// Close the socket now.
        case closeSocket
        /// Our close frame went out and the peer is expected to answer: close the socket if it
        /// has not within `closeAnswerTimeout`.
        case awaitCloseAnswer
        /// Leave every channel and presence set (no op is in flight).
        case startCleanup
        /// Cleaned up and the socket is closed: leave the node's registry.
        case finish
        case read
    }

    private(set) var phase = Phase.open
    private(set) var close: Close?
    /// Close right after our close frame instead of waiting for the peer's (it already sent
    /// one, broke the protocol, stopped answering pings, or its stream ended).
    private(set) var withoutHandshake = false
    private(set) var socketClosed = false
    private(set) var awaitingPong = false
    /// The token's expiry in seconds since the epoch; nil before authentication.
    private(set) var expiresAt: Int64?
    /// The expiry `token_expiring` was sent for.
    private var warnedFor: Int64?
    /// An op is being handled (the session's work must finish before it cleans up).
    private(set) var processing = false
    private var cleanupStarted = false
    private var cleanedUp = false
    private var finished = false
    /// A read the pipeline asked for while reads were paused.
    private(set) var heldRead = false

    var isClosing: Bool { phase != .open }

    // MARK: Token lifetime

    /// A token was verified (at connect or refresh).
    mutating func tokenAccepted(expiresAt: Int64) {
        self.expiresAt = expiresAt
    }

    /// Looks at the token's lifetime at `now` (milliseconds since the epoch): before
    /// authentication the deadline `authDeadline`, after it the token's expiry, with a
    /// `token_expiring` notice `warning` milliseconds before. Returns what to do and when to
    /// look next (nil: no more looks, the connection is closing).
    mutating func lifetimeCheck(now: Int64, authDeadline: Int64, warning: Int64) -> (actions: [Action], next: Int64?) {
        guard phase == .open, !socketClosed else { return ([], nil) }
        guard let expiresAt else {
            guard now >= authDeadline else { return ([], authDeadline) }
            return ([.send(.authTimeout)] + requestClose(Close(code: 4001, reason: "authentication timeout", dropQueued: false)), nil)
        }
        // Claims are at most 253402300799 s (year 9999): no overflow.
        let expiry = expiresAt * 1000
        if now >= expiry {
            return ([.send(.tokenExpired)] + requestClose(Close(code: 4001, reason: "token expired", dropQueued: false)), nil)
        }
        if warnedFor != expiresAt, now >= expiry - warning {
            warnedFor = expiresAt
            return ([.send(.tokenExpiring(expiresAtMilliseconds: expiry))], expiry)
        }
        return ([], warnedFor == expiresAt ? expiry : expiry - warning)
    }

    // MARK: Heartbeat

    /// The heartbeat timer fired: ping, or give up on a peer that did not answer the last one.
    mutating func heartbeatDue() -> [Action] {
        guard phase == .open, !socketClosed else { return [] }
        if awaitingPong {
            withoutHandshake = true
            return requestClose(Close(code: 1001, reason: "ping timeout", dropQueued: true))
        }
        awaitingPong = true
        return [.sendPing]
    }

    mutating func pongReceived() { awaitingPong = false }

    // MARK: Closing

    /// A close asked for from anywhere (an op, the expiry timer, the hub, draining); the first
    /// one wins.
    mutating func requestClose(_ close: Close) -> [Action] {
        guard phase == .open else { return [] }
        phase = .closing
        self.close = close
        var actions: [Action] = []
        if !processing { actions += startCleanup() }
        guard !socketClosed else { return actions }
        if heldRead {
            heldRead = false
            actions.append(.read)  // read on, so the peer's close answer arrives
        }
        var effective = close
        effective.dropQueued = close.dropQueued || withoutHandshake
        actions.append(.beginClose(effective))
        return actions
    }

    /// The peer sent a close frame with `replyCode` already worked out (1000 or 1002).
    mutating func peerClosed(replyCode: UInt16) -> [Action] {
        if phase == .closeSent { return [.closeSocket] }  // the answer to ours
        withoutHandshake = true
        return requestClose(Close(code: replyCode, reason: "", dropQueued: true))
    }

    /// A protocol violation: close with the code and do not wait for an answer.
    mutating func protocolViolation(code: UInt16, reason: String) -> [Action] {
        withoutHandshake = true
        return requestClose(Close(code: code, reason: reason, dropQueued: true))
    }

    /// The writer has flushed (or dropped) what was queued and our close frame is written.
    mutating func closeFrameWritten() -> [Action] {
        guard phase == .closing, !socketClosed else { return [] }
        phase = .closeSent
        return withoutHandshake ? [.closeSocket] : [.awaitCloseAnswer]
    }

    /// The peer's stream ended (EOF) without a close frame: the connection is gone now.
    mutating func inputClosed() -> [Action] {
        withoutHandshake = true
        return [.closeSocket]
    }

    /// The socket is closed (by either side).
    mutating func socketDidClose() -> [Action] {
        socketClosed = true
        var actions = requestClose(Close(code: 1006, reason: "", dropQueued: true))
        actions.removeAll { if case .beginClose = $0 { true } else { $0 == .read } }
        return actions + finishIfDone()
    }

    // MARK: Ops and cleanup

    /// An op arrived; returns true when no task is handling ops and one must start.
    mutating func opArrived() -> Bool {
        guard !processing else { return false }
        processing = true
        return true
    }

    /// The ops task found no op left (or the connection closing) and ends; when closing, the
    /// cleanup starts now.
    mutating func opsDone() -> [Action] {
        processing = false
        return phase == .open ? [] : startCleanup()
    }

    private mutating func startCleanup() -> [Action] {
        guard !cleanupStarted else { return [] }
        cleanupStarted = true
        return [.startCleanup]
    }

    mutating func cleanupDone() -> [Action] {
        cleanedUp = true
        return finishIfDone()
    }

    private mutating func finishIfDone() -> [Action] {
        guard cleanedUp, socketClosed, !finished else { return [] }
        finished = true
        return [.finish]
    }

    // MARK: Reads

    /// The pipeline asks for a read; `paused` when ops pile up or the socket does not take
    /// what is written (a client that does not read gets no more ops read either).
    mutating func readRequested(paused: Bool) -> [Action] {
        if paused, phase == .open {
            heldRead = true
            return []
        }
        return [.read]
    }

    /// Work was taken or the socket became writable: release a held read if reads may go on.
    mutating func readsMayResume(paused: Bool) -> [Action] {
        guard heldRead, !paused else { return [] }
        heldRead = false
        return [.read]
    }
}
