import DequeModule
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A request on the wire: an encoded command and the promise its reply completes.
struct RedisRequest {
    var bytes: ByteBuffer
    var promise: EventLoopPromise<RESPValue>
}

/// RESP over one channel: hiredis decodes, replies complete requests in FIFO order (which is
/// what makes pipelining safe). On a subscriber connection, `message` pushes go to `onPush`.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private let reader = RESPReader()
    private var pending = Deque<EventLoopPromise<RESPValue>>()
    private let onPush: (@Sendable (ByteBuffer, ByteBuffer) -> Void)?

    init(onPush: (@Sendable (ByteBuffer, ByteBuffer) -> Void)?) {
        self.onPush = onPush
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        pending.append(request.promise)
        context.write(wrapOutboundOut(request.bytes), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try reader.feed(unwrapInboundIn(data))
            while let value = try reader.next() {
                if let onPush, case .array(let items) = value, items.count == 3, case .bulkString(let kind) = items[0],
                    kind.readableBytes == 7, String(buffer: kind) == "message",
                    case .bulkString(let channel) = items[1], case .bulkString(let payload) = items[2]
                {
                    onPush(channel, payload)
                    continue
                }
                guard let promise = pending.popFirst() else {
                    throw RedisError.protocolError("reply without a request")
                }
                promise.succeed(value)
            }
        } catch {
            failAll(error as? RedisError ?? .protocolError("\(error)"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connection("connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(.connection("\(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        while let p = pending.popFirst() { p.fail(error) }
    }
}

/// One connection to Redis. Commands from many tasks share it, pipelined.
public final class RedisConnection: Sendable {
    let channel: any Channel
    let commandTimeout: Duration

    init(channel: any Channel, commandTimeout: Duration) {
        self.channel = channel
        self.commandTimeout = commandTimeout
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
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(config.connectTimeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let sslContext {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                        }
                        try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(onPush: onPush))
                    }
                }
                .connect(host: config.host, port: config.port).get()
        } catch {
            throw RedisError.connection("cannot connect to \(config.host):\(config.port): \(error)")
        }
        let connection = RedisConnection(channel: channel, commandTimeout: config.commandTimeout)
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

    /// Writes the command now (in call order) and returns the future of its reply. A command not
    /// answered within the timeout closes the connection, failing it and everything behind it.
    func sendFuture(_ arguments: [ByteBuffer]) -> EventLoopFuture<RESPValue> {
        var bytes = channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(arguments, into: &bytes)
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let channel = self.channel
        let timeout = channel.eventLoop.scheduleTask(in: TimeAmount(commandTimeout)) {
            promise.fail(RedisError.timeout)
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in timeout.cancel() }
        // A write that never reaches the handler (closed channel) fails the request here;
        // completing a promise twice is a no-op in NIO, so the handler may fail it too.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in promise.fail(RedisError.connection("\(error)")) }
        channel.writeAndFlush(RedisRequest(bytes: bytes, promise: promise), promise: written)
        return promise.futureResult
    }
}

extension TimeAmount {
    /// The same span as a `Duration`, to the nanosecond.
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
