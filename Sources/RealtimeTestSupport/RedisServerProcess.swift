import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A real `redis-server` on a free loopback port, for tests. Started and stopped by PID; no
/// persistence, so a restart starts empty (like a crashed cache node).
public final class RedisServerProcess: @unchecked Sendable {
    // @unchecked: `process` is only replaced by `start`/`stop`, which tests call from one task.
    public private(set) var port: Int
    private var process: Process?
    private let directory: URL

    /// Serves TLS only (with a CA and certificate made for the test) when set.
    public let tls: Bool
    /// Keeps data across restarts (append-only file, fsync always), as a durable deployment does.
    public let durable: Bool

    public var url: String {
        tls ? "rediss://127.0.0.1:\(port)?tls_ca_file=\(directory.path)/ca.crt" : "redis://127.0.0.1:\(port)"
    }

    public init(port: Int? = nil, tls: Bool = false, durable: Bool = false) throws {
        self.port = try port ?? Self.freePort()
        self.tls = tls
        self.durable = durable
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if tls { try makeCertificates() }
    }

    /// A CA and a server certificate for 127.0.0.1, with the openssl command line tool.
    private func makeCertificates() throws {
        let d = directory.path
        let script = """
            set -e; cd '\(d)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext.cnf
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        ProcessState.waitForExit(p.processIdentifier, timeout: 60)
        guard FileManager.default.fileExists(atPath: d + "/server.crt") else { throw CocoaError(.fileWriteUnknown) }
    }

    /// Starts the server and waits until it accepts connections. If the chosen port was taken
    /// meanwhile (another test raced for it), tries a new one, unless `keepPort`.
    public func start(keepPort: Bool = false) async throws {
        for attempt in 0..<5 {
            if attempt > 0 {
                stop()
                guard !keepPort else { break }
                port = try Self.freePort()
            }
            if try await launch() { return }
        }
        throw CocoaError(.executableLoad)
    }

    private func launch() async throws -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary())
        let d = directory.path
        let listen = tls
            ? ["--port", "0", "--tls-port", String(port), "--tls-cert-file", d + "/server.crt", "--tls-key-file", d + "/server.key",
                "--tls-ca-cert-file", d + "/ca.crt", "--tls-auth-clients", "no"]
            : ["--port", String(port)]
        p.arguments = listen + [
            "--bind", "127.0.0.1", "--save", "", "--appendonly", durable ? "yes" : "no", "--appendfsync", "always",
            "--dir", d, "--protected-mode", "no", "--loglevel", "warning",
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, !ProcessState.hasExited(p.processIdentifier) {
            if let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get() {
                try? await channel.close().get()
                // Someone else's server may own the port while ours failed to bind and exits.
                try await Task.sleep(for: .milliseconds(100), clock: .suspending)
                return !ProcessState.hasExited(p.processIdentifier)
            }
            try await Task.sleep(for: .milliseconds(20), clock: .suspending)
        }
        return false
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered.
    public func suspend() {
        if let p = process, !ProcessState.hasExited(p.processIdentifier) { kill(p.processIdentifier, SIGSTOP) }
    }

    /// Lets a suspended server run again (SIGCONT).
    public func resume() {
        if let p = process { kill(p.processIdentifier, SIGCONT) }
    }

    /// Stops the server (SIGKILL: clients see the connection drop; only a durable server keeps data).
    public func stop() {
        guard let p = process, !ProcessState.hasExited(p.processIdentifier) else { return }
        ProcessState.killAndWait(p.processIdentifier)
        process = nil
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    static func binary() -> String {
        for path in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return "redis-server"
    }

    /// A port nothing listens on right now, never the same twice in one test process.
    public static func freePort() throws -> Int {
        while true {
            let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
            let port = channel.localAddress?.port ?? 0
            try channel.close().wait()
            if handedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
    }

    private static let handedOut = Mutex<Set<Int>>([])
}
