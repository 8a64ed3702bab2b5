import NIOCore
import NIOPosix
import Synchronization

/// A TCP proxy on a free loopback port that breaks the link to an upstream server on command,
/// for fault tests: it passes bytes, holds them both ways (`pause`: a partition in which
/// connections stay open and new ones hang), resets every connection, or delays every chunk.
public final class FaultProxy: Sendable {
    public let upstreamPort: Int
    let group: any EventLoopGroup
    let state = Mutex(State())
    let delayNanos = Atomic<Int64>(0)
    /// Read per chunk: a read already armed when `pause` turned reading off still delivers.
    let holding = Atomic<Bool>(false)

    struct Pair {
        var client: any Channel
        var upstream: (any Channel)?
    }

    struct State {
        var listener: (any Channel)?
        var pairs: [ObjectIdentifier: Pair] = [:]
        var paused = false
    }

    public init(upstreamPort: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.upstreamPort = upstreamPort
        self.group = group
    }

    /// The port clients connect to.
    public var port: Int { state.withLock { $0.listener?.localAddress?.port ?? 0 } }

    public func start() async throws {
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try self.accepted(channel) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        state.withLock { $0.listener = listener }
    }

    /// Stops listening and closes every connection.
    public func stop() {
        let channels = state.withLock { s -> [any Channel] in
            defer { s.pairs = [:] }
            return [s.listener].compactMap { $0 } + s.pairs.values.flatMap { [$0.client] + [$0.upstream].compactMap { $0 } }
        }
        for c in channels { c.close(promise: nil) }
    }

    /// Holds bytes both ways on every connection, old and new, until `resume`.
    public func pause() { setPaused(true) }

    public func resume() { setPaused(false) }

    private func setPaused(_ paused: Bool) {
        holding.store(paused, ordering: .relaxed)
        let channels = state.withLock { s -> [any Channel] in
            s.paused = paused
            return s.pairs.values.flatMap { [$0.client] + [$0.upstream].compactMap { $0 } }
        }
        for c in channels { c.setOption(.autoRead, value: !paused).whenComplete { _ in } }
    }

    /// Resets every open connection (RST, not FIN); new ones are accepted as before.
    public func reset() {
        let channels = state.withLock { s -> [any Channel] in
            defer { s.pairs = [:] }
            return s.pairs.values.flatMap { [$0.client] + [$0.upstream].compactMap { $0 } }
        }
        for c in channels {
            guard let socket = c as? any SocketOptionProvider else {
                c.close(promise: nil)
                continue
            }
            socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in c.close(promise: nil) }
        }
    }

    /// Delays every chunk by `milliseconds` in each direction (0: no delay).
    public func delay(milliseconds: Int) {
        delayNanos.store(Int64(milliseconds) * 1_000_000, ordering: .relaxed)
    }

    var delay: TimeAmount { .nanoseconds(delayNanos.load(ordering: .relaxed)) }

    private func accepted(_ client: any Channel) throws {
        let key = ObjectIdentifier(client)
        let clientSide = Relay(proxy: self)
        try client.pipeline.syncOperations.addHandler(clientSide)
        state.withLock { $0.pairs[key] = Pair(client: client, upstream: nil) }
        // The relays close the other side once they have passed on what they hold, as TCP
        // delivers data sent before a FIN when a partition heals.
        client.closeFuture.whenComplete { [self] _ in
            _ = state.withLock { $0.pairs.removeValue(forKey: key) }
        }
        ClientBootstrap(group: client.eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { upstream in
                upstream.eventLoop.makeCompletedFuture {
                    let upstreamSide = Relay(proxy: self)
                    upstreamSide.partner = client
                    clientSide.partner = upstream
                    try upstream.pipeline.syncOperations.addHandler(upstreamSide)
                }
            }
            .connect(host: "127.0.0.1", port: upstreamPort)
            .whenComplete { [self] result in
                switch result {
                case .failure:
                    client.close(promise: nil)
                case .success(let upstream):
                    let paused = state.withLock { s -> Bool? in
                        guard s.pairs[key] != nil else { return nil }
                        s.pairs[key]!.upstream = upstream
                        return s.paused
                    }
                    guard let paused else {
                        upstream.close(promise: nil)
                        return
                    }
                    if !paused {
                        client.setOption(.autoRead, value: true).whenComplete { _ in }
                        upstream.setOption(.autoRead, value: true).whenComplete { _ in }
                    }
                }
            }
    }
}

/// Forwards what one side reads to the other, after the proxy's delay; holds it while paused.
/// What one side sends arrives in order, as over any TCP connection, also when the delay is
/// lowered while chunks wait: a chunk never overtakes one read before it.
final class Relay: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: `partner` is set once in the upstream's initializer, before either side
    // reads; `held`, `delayed` and the flags are touched only on the channel's loop.
    typealias InboundIn = ByteBuffer
    let proxy: FaultProxy
    var partner: (any Channel)?
    private var held: [ByteBuffer] = []
    private var waiting = false
    private var closing = false
    /// Chunks waiting out their delay, in the order they were read (and whether the partner
    /// is closed after them). Released from the front only.
    private var delayed: [(due: NIODeadline, chunks: [ByteBuffer], close: Bool)] = []
    private var timerArmed = false

    init(proxy: FaultProxy) { self.proxy = proxy }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        held.append(unwrapInboundIn(data))
        release(context.eventLoop)
    }

    /// Forwards what is held, in order, unless the proxy is paused; then looks again shortly.
    private func release(_ loop: any EventLoop) {
        guard !waiting, !held.isEmpty || closing, partner != nil else { return }
        guard !proxy.holding.load(ordering: .relaxed) else {
            waiting = true
            loop.scheduleTask(in: .milliseconds(20)) {
                self.waiting = false
                self.release(loop)
            }
            return
        }
        delayed.append((.now() + proxy.delay, held, closing))
        held = []
        forwardDue(loop)
    }

    /// Writes the waiting chunks whose time has come, front first, and sets one timer for the
    /// next: a chunk due earlier (the delay was lowered) waits for those read before it.
    private func forwardDue(_ loop: any EventLoop) {
        guard let partner else { return }
        let now = NIODeadline.now()
        while let first = delayed.first, first.due <= now {
            delayed.removeFirst()
            for bytes in first.chunks { partner.writeAndFlush(bytes, promise: nil) }
            if first.close { partner.close(promise: nil) }
        }
        guard let next = delayed.first, !timerArmed else { return }
        timerArmed = true
        loop.scheduleTask(deadline: next.due) {
            self.timerArmed = false
            self.forwardDue(loop)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        if held.isEmpty, !waiting, delayed.isEmpty {
            partner?.close(promise: nil)
        } else {
            // After what is still on its way.
            release(context.eventLoop)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
