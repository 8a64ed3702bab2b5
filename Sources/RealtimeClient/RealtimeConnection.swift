import Foundation
import NIOCore
import NIOSSL
import Synchronization

/// What a connection is doing; every change is published on ``RealtimeConnection/states``.
public enum ConnectionState: Sendable, Equatable {
    case connecting
    case connected(connectionID: String)
    /// Lost; a reconnect is scheduled. `code` is the server's close code, if it sent one.
    case disconnected(code: UInt16?)
    /// Closed by ``RealtimeConnection/close()``.
    case closed
    /// The server refused for good (close 4003); no retry.
    case failed(code: UInt16)
}

/// A realtime (WebSocket) connection with automatic reconnect.
///
/// - Reconnects with exponential backoff and jitter; at once on 1012 (node restarting, the
///   load balancer hands us to another node); never on 4003.
/// - Asks `token` for a token before connecting, before expiry (`token_expiring`, sent as an
///   `auth` op) and after a 4001 close.
/// - On every reconnect, resubscribes each channel with the last message id it received;
///   a `resumed: false` answer is surfaced as ``ChannelEvent/missedMessages(sinceID:)``.
public actor RealtimeConnection {
    public struct Options: Sendable {
        /// `ws://host:port/v1/realtime/ws` (the token response's `endpoint`).
        public var endpoint: String
        /// Further nodes to try, in turn, when a connection is lost (without a load balancer).
        public var fallbackEndpoints: [String] = []
        public var token: @Sendable () async throws -> String
        public var minRetryDelay: Duration = .milliseconds(250)
        public var maxRetryDelay: Duration = .seconds(20)
        public var requestTimeout: Duration = .seconds(10)
        /// How `publish` is retried, always with the same idempotency key.
        public var publishRetry = RetryPolicy()
        /// TLS for `wss://` endpoints (a private CA, a client certificate); nil: the system's
        /// trust roots with hostname verification.
        public var tlsConfiguration: TLSConfiguration?

        public init(endpoint: String, token: @escaping @Sendable () async throws -> String) {
            self.endpoint = endpoint
            self.token = token
        }
    }

    public let options: Options
    public nonisolated let states: AsyncStream<ConnectionState>
    private let stateContinuation: AsyncStream<ConnectionState>.Continuation
    public private(set) var state: ConnectionState = .disconnected(code: nil)
    public private(set) var clientID: String?
    /// Counts `connected` frames: channels use it to subscribe and enter once per connection.
    private(set) var generation = 0

    private var transport: WebSocketTransport?
    private var token: String?
    private var needToken = true
    private var closed = false
    private var runner: Task<Void, Never>?
    private var nextRef = 0
    private var pending: [Int: CheckedContinuation<RealtimeJSON, any Error>] = [:]
    private var channels: [String: RealtimeChannel] = [:]
    private var stateWaiters: [CheckedContinuation<Void, any Error>] = []

    public init(options: Options) {
        self.options = options
        (states, stateContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(64))
    }

    /// Starts connecting (and keeps the connection up until ``close()``).
    public func connect() {
        guard runner == nil, !closed else { return }
        runner = Task { await self.run() }
    }

    /// Waits until connected.
    public func waitUntilConnected() async throws {
        if case .connected = state { return }
        if closed { throw RealtimeClientError(code: 0, message: "connection closed") }
        try await withCheckedThrowingContinuation { stateWaiters.append($0) }
    }

    /// Closes for good.
    public func close() async {
        closed = true
        transport?.close(code: 1000)
        runner?.cancel()
        setState(.closed)
        failPending(RealtimeClientError(code: 0, message: "connection closed"))
        stateContinuation.finish()
    }

    /// Drops the socket without a close handshake, as a network failure would (for tests and
    /// for apps that know the network changed); the connection reconnects as usual.
    public func dropTransport() {
        transport?.abort()
    }

    /// The channel object for `name` (one per name and connection).
    public func channel(_ name: String) -> RealtimeChannel {
        if let c = channels[name] { return c }
        let c = RealtimeChannel(name: name, connection: self)
        channels[name] = c
        return c
    }

    // MARK: Requests

    /// Sends an op and returns its reply; an `error` reply throws ``RealtimeClientError``.
    public func request(_ op: String, _ fields: [String: RealtimeJSON] = [:]) async throws -> RealtimeJSON {
        guard let transport, case .connected = state else { throw RealtimeClientError(code: 0, message: "not connected") }
        nextRef += 1
        let ref = nextRef
        var frame = fields
        frame["op"] = .string(op)
        frame["ref"] = .number(Double(ref))
        let text = String(decoding: try JSONEncoder().encode(RealtimeJSON.object(frame)), as: UTF8.self)
        let timeout = options.requestTimeout
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout, clock: .suspending)
            await self?.expire(ref, op: op)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { c in
            pending[ref] = c
            transport.send(text)
        }
    }

    private func expire(_ ref: Int, op: String) {
        pending.removeValue(forKey: ref)?.resume(throwing: RealtimeClientError(code: 0, message: "\(op) timed out"))
    }

    // MARK: The connection loop

    private func run() async {
        var attempt = 0
        let endpoints = [options.endpoint] + options.fallbackEndpoints
        var endpointIndex = 0
        while !closed && !Task.isCancelled {
            let endpoint = endpoints[endpointIndex % endpoints.count]
            setState(.connecting)
            var closeCode: UInt16?
            do {
                if needToken || token == nil {
                    token = try await options.token()
                    needToken = false
                }
                let separator = endpoint.contains("?") ? "&" : "?"
                let t = try await WebSocketTransport.connect(
                    to: endpoint + separator + "token=" + Self.escape(token ?? ""), tlsConfiguration: options.tlsConfiguration)
                transport = t
                for await event in t.events {
                    switch event {
                    case .text(let text):
                        if handle(text) { attempt = 0 }
                    case .closed(let code):
                        closeCode = code
                    }
                }
            } catch {
                closeCode = nil
            }
            transport = nil
            failPending(RealtimeClientError(code: 0, message: "connection lost"))
            if closed { return }
            switch closeCode {
            case 4003:
                setState(.failed(code: 4003))
                closed = true
                for w in stateWaiters { w.resume(throwing: RealtimeClientError(code: 40300, message: "refused (4003)")) }
                stateWaiters = []
                return
            case 4001:
                needToken = true
            default:
                break
            }
            setState(.disconnected(code: closeCode))
            endpointIndex += 1
            if closeCode == 1012 && attempt == 0 {
                attempt += 1
                continue
            }
            let base = min(options.maxRetryDelay, options.minRetryDelay * (1 << min(attempt, 16)))
            let delay = base / 2 + base * Double.random(in: 0..<0.5)
            attempt += 1
            try? await Task.sleep(for: delay, clock: .suspending)
        }
    }

    /// Handles one frame; returns true when the connection became ready.
    private func handle(_ text: String) -> Bool {
        guard let frame = try? JSONDecoder().decode(RealtimeJSON.self, from: Data(text.utf8)) else { return false }
        if let ref = frame["ref"]?.number, let c = pending.removeValue(forKey: Int(ref)) {
            if frame["type"]?.string == "error" {
                c.resume(throwing: RealtimeClientError(
                    code: Int(frame["code"]?.number ?? 0), message: frame["message"]?.string ?? "",
                    retryAfterMilliseconds: frame["retry_after_ms"]?.number.map { Int($0) }))
            } else {
                c.resume(returning: frame)
            }
            return false
        }
        switch frame["type"]?.string {
        case "connected":
            clientID = frame["client_id"]?.string
            setState(.connected(connectionID: frame["connection_id"]?.string ?? ""))
            for w in stateWaiters { w.resume() }
            stateWaiters = []
            generation += 1
            let generation = self.generation
            for channel in channels.values { Task { await channel.connectionReady(generation: generation) } }
            return true
        case "message":
            if let message = try? JSONDecoder().decode(RealtimeMessage.self, from: Data(text.utf8)) {
                channels[message.channel]?.deliver(message)
            }
        case "presence_event":
            if let event = try? JSONDecoder().decode(PresenceEvent.self, from: Data(text.utf8)) {
                channels[event.channel]?.deliver(event)
            }
        case "unsubscribed":
            if let name = frame["channel"]?.string { channels[name]?.ended() }
        case "subscribed":
            if let name = frame["channel"]?.string { channels[name]?.resynced(epoch: frame["epoch"]?.string) }
        case "token_expiring":
            Task { await self.refreshToken() }
        case "error":
            let code = Int(frame["code"]?.number ?? 0)
            if code == 40140 || code == 40141 { needToken = true }
        default:
            break
        }
        return false
    }

    private func refreshToken() async {
        do {
            let fresh = try await options.token()
            token = fresh
            _ = try await request("auth", ["token": .string(fresh)])
        } catch {
            needToken = true
        }
    }

    private func setState(_ s: ConnectionState) {
        guard s != state else { return }
        state = s
        stateContinuation.yield(s)
    }

    private func failPending(_ error: RealtimeClientError) {
        let all = pending
        pending = [:]
        for c in all.values { c.resume(throwing: error) }
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
    }
}
