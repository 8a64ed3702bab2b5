import DequeModule
import NIOCore
import NIOWebSocket
import RealtimeCore

/// What a connection hands its session's ops task, in arrival order.
enum ConnectionWork: Sendable {
    case authenticate(token: String)
    case message([UInt8])
    /// A complete binary message: not an op (contract §10), answered with an error in turn.
    case binary

    var bytes: Int {
        switch self {
        case .authenticate(let token): token.utf8.count
        case .message(let bytes): bytes.count
        case .binary: 0
        }
    }
}

/// A WebSocket connection on its event loop, carrying out what its ``ConnectionStateMachine``
/// decides: reads frames (inflating compressed ones) into whole messages for the session's
/// ops task, answers pings, runs the one timer (heartbeat or token lifetime) and the close
/// handshake.
///
/// Every method runs on the channel's event loop, and so does its ``WebSocketSession`` (an
/// actor on that loop): the two share the loop, not a lock.
final class WebSocketConnection: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let session: WebSocketSession
    /// In the registry (false for connections refused at the limit or while draining).
    private let registered: Bool
    private let loop: any EventLoop
    private let inflater: PerMessageDeflate.Inflater?
    private let limit: Int
    private let authDeadline: Int64
    private var context: ChannelHandlerContext?
    /// The connection's channel while the handler is in its pipeline (on the loop).
    var channel: (any Channel)? { context?.channel }

    // Inbound: the fragmented message being assembled, then whole messages for the task.
    private var assembling: [UInt8] = []
    private var assemblingFragments = false
    private var assemblingCompressed = false
    private var work = Deque<ConnectionWork>()
    private var workBytes = 0

    // One timer per connection, for whichever is due first: the next heartbeat or the next look
    // at the token's lifetime.
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var nextBeat = NIODeadline.distantFuture
    private var nextExpiryCheck: NIODeadline?

    /// The message being assembled came as binary frames.
    private var assemblingBinary = false
    /// Heartbeat, close handshake, cleanup and read pause: decided there, carried out here.
    private var machine = ConnectionStateMachine()
    private var closeTimer: Scheduled<Void>?

    init(session: WebSocketSession, registered: Bool, inflater: PerMessageDeflate.Inflater?) {
        self.session = session
        self.registered = registered
        self.loop = session.loop
        self.inflater = inflater
        let runtime = session.runtime
        self.limit = runtime.configuration.limits.maxInboundFrameBytes
        self.authDeadline = runtime.clock.nowMilliseconds() + Int64(runtime.configuration.timing.authTimeoutSeconds) * 1000
    }

    private var runtime: GatewayRuntime { session.runtime }

    /// Too much handed to the task and not yet handled, or the socket does not take what is
    /// written (contract §10: a client that does not read gets no more ops read either, so it
    /// cannot make the node allocate replies or pongs for it).
    private var readsPaused: Bool { work.count >= 16 || workBytes >= 4 * limit || !(context?.channel.isWritable ?? true) }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        session.assumeIsolated { $0.connection = self }
        // A peer gone during the upgrade never sends channelInactive through this handler.
        if !context.channel.isActive { execute(machine.socketDidClose()) }
    }

    /// A close asked for by the session, the hub or the node; the first one wins.
    func requestClose(_ close: ConnectionStateMachine.Close) {
        execute(machine.requestClose(close))
    }

    /// The session verified a token: look at its lifetime now.
    func tokenAccepted(expiresAt: Int64) {
        machine.tokenAccepted(expiresAt: expiresAt)
        scheduleExpiry()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Starts heartbeats and the authentication deadline, and authenticates a query token.
    func open(token: String?) {
        runtime.metrics.connections.increment()
        runtime.metrics.connectionsOpened.increment()
        nextBeat = .now() + heartbeatPeriod
        scheduleExpiry()
        if let token { enqueue(.authenticate(token: token)) }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // RFC 6455 §5.1: a server fails the connection on a frame its client did not mask.
        guard frame.maskKey != nil else { return machine.isClosing ? () : failProtocol("client frames must be masked") }
        switch frame.opcode {
        case .text, .binary, .continuation:
            receivedData(frame)
        case .ping:
            guard !machine.isClosing else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            machine.pongReceived()
        case .connectionClose:
            receivedClose(frame)
        default:
            failProtocol("unknown opcode")
        }
    }

    private func receivedData(_ frame: WebSocketFrame) {
        guard !machine.isClosing else { return }
        if frame.rsv2 || frame.rsv3 || (frame.rsv1 && (inflater == nil || frame.opcode == .continuation)) {
            return failProtocol("reserved bit set")
        }
        if frame.opcode == .continuation {
            guard assemblingFragments else { return failProtocol("continuation frame without a message") }
        } else {
            guard !assemblingFragments else { return failProtocol("new message inside a fragmented one") }
            assemblingCompressed = frame.rsv1
            assemblingBinary = frame.opcode == .binary
        }
        var payload: [UInt8]
        if assemblingCompressed, let inflater {
            do {
                payload = Array(try inflater.inflate(frame.unmaskedData, final: frame.fin, budget: limit - assembling.count).readableBytesView)
            } catch .tooLarge {
                return messageTooLarge()
            } catch {
                return execute(machine.protocolViolation(code: 1007, reason: "invalid compressed data"))
            }
        } else {
            payload = Self.unmaskedBytes(frame)
        }
        guard assembling.count + payload.count <= limit else { return messageTooLarge() }
        if frame.fin, !assemblingFragments {
            enqueue(assemblingBinary ? .binary : .message(payload))
            return
        }
        assembling.append(contentsOf: payload)
        assemblingFragments = !frame.fin
        if frame.fin {
            let message = assembling
            assembling = []
            enqueue(assemblingBinary ? .binary : .message(message))
        }
    }

    /// The payload, unmasked while copied out of the read buffer (`unmaskedData` would first
    /// copy the read buffer's whole storage).
    private static func unmaskedBytes(_ frame: WebSocketFrame) -> [UInt8] {
        var bytes = Array(frame.data.readableBytesView)
        guard let key = frame.maskKey else { return bytes }
        bytes.withUnsafeMutableBufferPointer { buffer in
            for i in buffer.indices { buffer[i] ^= key[i & 3] }
        }
        return bytes
    }

    private func messageTooLarge() {
        session.push(WebSocketSession.error(RealtimeError.tooLarge("frame exceeds \(limit) bytes"), ref: nil))
        requestClose(.init(code: 4009, reason: "message too big", dropQueued: false))
    }

    private func failProtocol(_ reason: String) {
        execute(machine.protocolViolation(code: 1002, reason: reason))
    }

    private func receivedClose(_ frame: WebSocketFrame) {
        var data = frame.unmaskedData
        // Answer with a normal closure, unless the peer's close frame is malformed or carries
        // a code no peer may send.
        let reply: UInt16
        switch data.readableBytes {
        case 0: reply = 1000
        case 1: reply = 1002
        default: reply = data.readInteger(as: UInt16.self).map(Self.peerMaySend) == true ? 1000 : 1002
        }
        execute(machine.peerClosed(replyCode: reply))
    }

    private static func peerMaySend(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: true
        default: false
        }
    }

    func read(context: ChannelHandlerContext) {
        execute(machine.readRequested(paused: readsPaused))
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        execute(machine.readsMayResume(paused: readsPaused))
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            requestClose(.init(code: 1012, reason: "node draining", dropQueued: false))
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            // The peer's stream ended without a close frame (the server allows half-closure for
            // HTTP): the connection is gone now (contract §10), not after missed heartbeats.
            execute(machine.inputClosed())
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeTimer?.cancel()
        stopTimers()
        execute(machine.socketDidClose())
        context.fireChannelInactive()
    }

    // MARK: The ops task

    /// Queues an op for the session; starts its ops task when none is running. (A task that
    /// lived as long as the connection would cost each idle connection its parked frames and
    /// task-allocator slabs: measured, 13.2 KiB per idle connection instead of 5.8.)
    private func enqueue(_ item: ConnectionWork) {
        guard !machine.isClosing else { return }
        work.append(item)
        workBytes += item.bytes
        if machine.opArrived() {
            Task { [session] in await session.run(self) }
        }
    }

    /// The session's ops task takes the next op; nil when none is left or the connection is
    /// closing, and the task ends.
    func nextWork() -> ConnectionWork? {
        guard !machine.isClosing, let item = work.popFirst() else {
            execute(machine.opsDone())
            return nil
        }
        workBytes -= item.bytes
        execute(machine.readsMayResume(paused: readsPaused))
        return item
    }

    /// The session left its channels and presence sets.
    func cleanupDone() {
        execute(machine.cleanupDone())
    }

    // MARK: Timers

    private var heartbeatPeriod: TimeAmount { .seconds(Int64(runtime.configuration.timing.heartbeatSeconds)) }

    /// Sets the timer for the earliest thing due, unless it is already set for it.
    private func armTimer() {
        let deadline = min(nextBeat, nextExpiryCheck ?? .distantFuture)
        guard !machine.isClosing, deadline != .distantFuture else { return stopTimers() }
        guard deadline != timerDeadline else { return }
        timer?.cancel()
        timerDeadline = deadline
        timer = loop.scheduleTask(deadline: deadline) { [weak self] in self?.timerFired() }
    }

    private func timerFired() {
        // The loop ran the timer, so its deadline has come, by the loop's clock (which a test
        // loop moves by hand) if not yet by the wall clock.
        let now = max(NIODeadline.now(), timerDeadline ?? .now())
        timer = nil
        timerDeadline = nil
        if now >= nextBeat {
            nextBeat = now + heartbeatPeriod
            beat()
        }
        if let check = nextExpiryCheck, now >= check {
            scheduleExpiry()
        } else {
            armTimer()
        }
    }

    private func beat() {
        guard context != nil else { return }
        execute(machine.heartbeatDue())
    }

    /// Looks at the token's lifetime now (pushing `token_expiring` or closing as due) and sets
    /// the timer for the next look.
    private func scheduleExpiry() {
        nextExpiryCheck = nil
        let now = runtime.clock.nowMilliseconds()
        let warning = Int64(runtime.configuration.timing.tokenExpiryWarningSeconds) * 1000
        let (actions, next) = machine.lifetimeCheck(now: now, authDeadline: authDeadline, warning: warning)
        execute(actions)
        if let next { nextExpiryCheck = .now() + .milliseconds(max(next - now, 1)) }
        armTimer()
    }

    private func stopTimers() {
        timer?.cancel()
        timer = nil
        timerDeadline = nil
    }

    // MARK: Carrying out the machine's actions

    private func execute(_ actions: [ConnectionStateMachine.Action]) {
        for action in actions {
            switch action {
            case .send(let notice):
                session.push(frame(for: notice))
            case .sendPing:
                guard let context else { continue }
                var data = context.channel.allocator.buffer(capacity: 8)
                data.writeInteger(UInt64.random(in: 0...UInt64.max))
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: data)), promise: nil)
            case .beginClose(let close):
                beginClose(close)
            case .closeSocket:
                context?.close(promise: nil)
            case .awaitCloseAnswer:
                closeTimer?.cancel()
                closeTimer = loop.scheduleTask(in: .seconds(5)) { [weak self] in self?.context?.close(promise: nil) }
            case .startCleanup:
                Task { [session] in
                    await session.cleanup()
                    self.cleanupDone()
                }
            case .finish:
                if registered {
                    runtime.registry.remove(session)
                    runtime.metrics.connections.decrement()
                }
            case .read:
                context?.read()
            }
        }
    }

    /// Stops timers and queued ops, has the writer flush (or drop) what it queued, then writes
    /// the close frame, so it always follows the last data frame. A peer that does not read it
    /// at all is given a heartbeat period (the time it would get before counting as gone).
    private func beginClose(_ close: ConnectionStateMachine.Close) {
        stopTimers()
        work.removeAll()
        workBytes = 0
        assembling = []
        guard let context else { return }
        let bound = TimeAmount.seconds(Int64(max(runtime.configuration.timing.heartbeatSeconds, 5)))
        closeTimer = loop.scheduleTask(in: bound) { [weak self] in self?.context?.close(promise: nil) }
        let frame = Self.closeFrame(code: close.code, reason: close.reason, allocator: context.channel.allocator)
        session.writer.finish(dropQueued: close.dropQueued, on: loop).whenComplete { [self] _ in
            guard !machine.socketClosed, let context = self.context else { return }
            context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { [self] _ in
                execute(machine.closeFrameWritten())
            }
        }
    }

    private func frame(for notice: ConnectionStateMachine.Notice) -> String {
        switch notice {
        case .authTimeout:
            WebSocketSession.error(.noCredentials("no auth frame within \(runtime.configuration.timing.authTimeoutSeconds) s"), ref: nil)
        case .tokenExpired:
            WebSocketSession.error(.tokenExpired(), ref: nil)
        case .tokenExpiring(let expiresAt):
            WebSocketSession.frame("token_expiring") { $0.key("expires_at"); $0.string(Timestamp.iso8601(milliseconds: expiresAt)) }
        }
    }

    private static func closeFrame(code: UInt16, reason: String, allocator: ByteBufferAllocator) -> WebSocketFrame {
        var data = allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code)
        data.writeString(String(reason.utf8.prefix(123)) ?? "")
        return WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
    }
}
