import Logging
import RealtimeCore
import ServiceLifecycle

/// Runs the hub (and through it the engine); key revocations close affected connections.
struct EngineService: Service {
    let runtime: GatewayRuntime

    func run() async throws {
        let runtime = self.runtime
        runtime.hub.onControl { event in
            guard case .keyRevoked(let keyID) = event else { return }
            runtime.closeSessions(mintedBy: keyID)
        }
        let hub = runtime.hub
        try await cancelWhenGracefulShutdown {
            try await hub.run()
        }
    }
}

/// Refreshes the presence heartbeats of every member on this node.
struct PresenceHeartbeatService: Service {
    let runtime: GatewayRuntime

    func run() async throws {
        let period = Duration.seconds(runtime.configuration.timing.presenceHeartbeatSeconds)
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: period, clock: .suspending)
                // Members swept meanwhile (after a Redis outage longer than the TTL) are entered
                // again by the store, with an enter event.
                var members: [(channel: ChannelName, member: PresenceMember)] = []
                for session in runtime.registry.withPresence { members += await session.presenceMemberships }
                if !members.isEmpty { _ = try? await runtime.engine.presence.refresh(members) }
            }
        }
    }
}

/// Re-checks, every 2 s, the API key behind each WebSocket session's token against the key
/// store, so a revocation this node missed on pub/sub (its link was down when it was sent)
/// still closes the key's connections within 5 s of the link working (cache 2 s + period 2 s).
struct KeyRecheckService: Service {
    let runtime: GatewayRuntime
    static let period = Duration.seconds(2)

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: Self.period, clock: .suspending)
                let keyIDs = runtime.registry.keyIDs.subtracting([APIKeyMaterial.bootstrapKeyID])
                for keyID in keyIDs {
                    // Unreachable: checked again next round; a key record that is gone counts as revoked.
                    let record: APIKeyRecord?
                    do { record = try await runtime.engine.keys.key(id: keyID) } catch { continue }
                    if record?.revoked ?? true { runtime.closeSessions(mintedBy: keyID) }
                }
            }
        }
    }
}

/// On graceful shutdown (first, before the server stops): refuses new connections, tells every
/// client to reconnect elsewhere with 1012 and waits, bounded, for their sessions to clean up
/// (which removes their presence members with leave events).
struct DrainService: Service {
    let runtime: GatewayRuntime

    func run() async throws {
        try? await gracefulShutdown()
        runtime.draining.store(true, ordering: .relaxed)
        for session in runtime.registry.all { session.close(code: 1012, reason: "node draining") }
        let deadline = ContinuousClock.now + .seconds(max(1, runtime.configuration.timing.shutdownTimeoutSeconds - 2))
        while runtime.registry.count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20), clock: .suspending)
        }
        runtime.logger.info("drained", metadata: ["connections_left": "\(runtime.registry.count)"])
    }
}
