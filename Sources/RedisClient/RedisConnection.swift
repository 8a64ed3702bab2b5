import DequeModule
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A request on the wire: an encoded command and the promise its reply completes.
struct RedisRequest {
    var bytes: ByteBuffer
    var promise: EventLoopPromise<RESPValue>
    /// A `SUNSUBSCRIBE`: its reply looks like the push a cluster node sends on its own when the
    /// channel's slot moves away, and only this tells the two apart.
    var shardUnsubscribe = false
}

/// RESP over one channel: hiredis decodes, replies complete requests in FIFO order (which is
/// what makes pipelining safe). On a subscriber connection, `message` pushes go to `onPush`.
///
/// Commands arrive through ``send(_:)`` on the channel's loop. Their writes are flushed once per
/// loop turn, so commands issued together leave in one syscall; one repeating check per
/// connection (not a timer per command) enforces the command timeout.
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let reader = RESPReader()
    private var pending = Deque<(promise: EventLoopPromise<RESPValue>, deadline: NIODeadline, shardUnsubscribe: Bool)>()
    private let onPush: (@Sendable (ByteBuffer, ByteBuffer) -> Void)?
    private let commandTimeout: TimeAmount
    private var context: ChannelHandlerContext?
    private var flushScheduled = false
    private var timeoutCheck: RepeatedTask?
    /// This handler, sendable to its own loop (for the flush and the timeout check); released
    /// when the handler leaves the pipeline.
    private var bound: NIOLoopBound<RedisChannelHandler>?

    init(commandTimeout: TimeAmount, onPush: (@Sendable (ByteBuffer, ByteBuffer) -> Void)?) {
        self.commandTimeout = commandTimeout
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.bound = bound
        let every = min(commandTimeout, .milliseconds(250))
        timeoutCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in
            bound.value.expireTimedOut()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeoutCheck?.cancel()
        self.context = nil
        self.bound = nil
    }

    /// Queues a command (on the channel's loop); the flush follows at the end of this loop turn.
    func send(_ request: RedisRequest) {
        guard let context, context.channel.isActive else {
            request.promise.fail(RedisError.connection("connection closed"))
            return
        }
        pending.append((request.promise, .now() + commandTimeout, request.shardUnsubscribe))
        context.write(wrapOutboundOut(request.bytes), promise: nil)
        guard !flushScheduled, let bound else { return }
        flushScheduled = true
        context.eventLoop.execute {
            let handler = bound.value
            handler.flushScheduled = false
            handler.context?.flush()
        }
    }

    /// A command not answered in time fails, and the connection closes, failing everything
    /// behind it (their replies could no longer be matched).
    private func expireTimedOut() {
        guard let first = pending.first, first.deadline < .now() else { return }
        pending.removeFirst().promise.fail(RedisError.timeout)
        failAll(.connectionLost("connection closed after a command timed out"))
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try reader.feed(unwrapInboundIn(data))
            while let value = try reader.next() {
                if let onPush, case .array(let items) = value, items.count == 3, case .bulkString(let kind) = items[0],
                    kind.readableBytes == 7 || kind.readableBytes == 8
                {
                    let name = String(buffer: kind)
                    if name == "message" || name == "smessage", case .bulkString(let channel) = items[1], case .bulkString(let payload) = items[2] {
                        onPush(channel, payload)
                        continue
                    }
                    if name == "sunsubscribe", pending.first?.shardUnsubscribe != true {
                        // The node gave the channel's slot away (a migration or a failover):
                        // the connection's subscriptions are no longer whole.
                        throw RedisError.connectionLost("the server ended a sharded subscription (its slot moved)")
                    }
                }
                guard let request = pending.popFirst() else {
                    throw RedisError.protocolError("reply without a request")
                }
                request.promise.succeed(value)
            }
        } catch {
            failAll(.connectionLost("\(error)"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionLost("connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(.connectionLost("\(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        while let p = pending.popFirst() { p.promise.fail(error) }
    }
}

/// One connection to Redis. Commands from many tasks share it, pipelined.
public final class RedisConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<RedisChannelHandler>

    init(channel: any Channel, handler: NIOLoopBound<RedisChannelHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Connects, authenticates and selects the database.
    /// - Parameter onPush: set for a subscriber connection: `(channel, payload)` of each message,
    ///   called on the connection's event loop.
    public static func connect(
        _ config: RedisConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onPush: (@Sendable (ByteBuffer, ByteBuffer) -> Void)? = nil
    ) async throws -> RedisConnection {
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        if let ca = config.tlsCAFile { tlsConfiguration.trustRoots = .file(ca) }
        let sslContext = try config.tls ? NIOSSLContext(configuration: tlsConfiguration) : nil
        // SNI takes names, not addresses; an address is still checked against the certificate.
        let serverName = config.host.contains(where: { $0.isLetter }) ? config.host : nil
        let channel: any Channel
        let handler: NIOLoopBound<RedisChannelHandler>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(config.connectTimeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let sslContext {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                        }
                        try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(commandTimeout: TimeAmount(config.commandTimeout), onPush: onPush))
                    }
                }
                .connect(host: config.host, port: config.port).get()
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self), eventLoop: channel.eventLoop)
            }.get()
        } catch {
            throw RedisError.connection("cannot connect to \(config.host):\(config.port): \(error)")
        }
        let connection = RedisConnection(channel: channel, handler: handler)
        do {
            if let password = config.password {
                try await connection.send(config.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
            }
            if config.database != 0 { try await connection.send(["SELECT", String(config.database)]) }
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    public var isActive: Bool { channel.isActive }

    public func close() { channel.close(promise: nil) }

    /// Sends a command and returns its reply; an error reply throws `RedisError.server`.
    @discardableResult
    public func send(_ arguments: [String]) async throws -> RESPValue {
        try await send(buffers: arguments.map { ByteBuffer(string: $0) })
    }

    @discardableResult
    public func send(buffers arguments: [ByteBuffer]) async throws -> RESPValue {
        let value = try await sendFuture(arguments).get()
        if case .error(let message) = value { throw RedisError.server(message) }
        return value
    }

    /// Runs a script by SHA, loading it on `NOSCRIPT`. `asking` sends `ASKING` ahead of each
    /// attempt (a cluster slot being imported by this node). The command is encoded once, into
    /// one buffer, and sent again as it is after a `NOSCRIPT`.
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String], asking: Bool = false) async throws -> RESPValue {
        let size = keys.reduce(0) { $0 + $1.utf8.count + 16 } + arguments.reduce(0) { $0 + $1.utf8.count + 16 }
        var command = channel.allocator.buffer(capacity: 96 + size)
        RESPEncoder.beginCommand(count: 3 + keys.count + arguments.count, into: &command)
        RESPEncoder.append("EVALSHA", into: &command)
        RESPEncoder.append(script.sha1, into: &command)
        RESPEncoder.append(String(keys.count), into: &command)
        for key in keys { RESPEncoder.append(key, into: &command) }
        for argument in arguments { RESPEncoder.append(argument, into: &command) }
        do {
            return try await send(encoded: command, asking: asking)
        } catch RedisError.server(let message) where message.hasPrefix("NOSCRIPT") {
            try await send(["SCRIPT", "LOAD", script.source])
            return try await send(encoded: command, asking: asking)
        }
    }

    /// Sends `ASKING` (when asked) and the command back to back, so nothing comes between them
    /// on this connection.
    public func send(buffers arguments: [ByteBuffer], asking: Bool) async throws -> RESPValue {
        var command = channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(arguments, into: &command)
        return try await send(encoded: command, asking: asking)
    }

    /// Sends an encoded command, after `ASKING` when asked; an error reply throws.
    private func send(encoded command: ByteBuffer, asking: Bool) async throws -> RESPValue {
        let value: RESPValue
        if asking {
            let replies = enqueue([RESPEncoder.encode(["ASKING"]), command])
            _ = try? await replies[0].get()
            value = try await replies[1].get()
        } else {
            value = try await enqueue(command).get()
        }
        if case .error(let message) = value { throw RedisError.server(message) }
        return value
    }

    /// Queues the command (in call order) and returns the future of its reply. A command not
    /// answered within the timeout closes the connection, failing it and everything behind it.
    func sendFuture(_ arguments: [ByteBuffer]) -> EventLoopFuture<RESPValue> {
        var bytes = channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(arguments, into: &bytes)
        let unsubscribe = arguments.first.map { $0.readableBytes == 12 && String(buffer: $0).uppercased() == "SUNSUBSCRIBE" } ?? false
        return enqueue(bytes, shardUnsubscribe: unsubscribe)
    }

    /// Queues one encoded command (the common case, without the arrays of `enqueue(_:)`).
    private func enqueue(_ command: ByteBuffer, shardUnsubscribe: Bool = false) -> EventLoopFuture<RESPValue> {
        let loop = channel.eventLoop
        let request = RedisRequest(bytes: command, promise: loop.makePromise(of: RESPValue.self), shardUnsubscribe: shardUnsubscribe)
        if loop.inEventLoop {
            handler.value.send(request)
        } else {
            let handler = self.handler
            loop.execute { handler.value.send(request) }
        }
        return request.promise.futureResult
    }

    /// Queues encoded commands together: nothing another task sends comes between them.
    private func enqueue(_ commands: [ByteBuffer]) -> [EventLoopFuture<RESPValue>] {
        let loop = channel.eventLoop
        let requests = commands.map { RedisRequest(bytes: $0, promise: loop.makePromise(of: RESPValue.self)) }
        if loop.inEventLoop {
            for request in requests { handler.value.send(request) }
        } else {
            let handler = self.handler
            loop.execute { for request in requests { handler.value.send(request) } }
        }
        return requests.map(\.promise.futureResult)
    }
}

extension TimeAmount {
    /// The same span as a `Duration`, to the nanosecond.
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
