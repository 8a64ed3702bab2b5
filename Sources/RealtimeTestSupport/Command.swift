import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs commands with posix_spawn and waitpid. Foundation's `Process` on Linux can take a
/// command for still running while daemons it started hold an inherited descriptor; here
/// those daemons inherit nothing but /dev/null and the output file (every other descriptor is
/// closed in the child).
public enum Command {
    /// Runs `arguments` (looked up on PATH) in `directory`; returns its exit status and stdout.
    public static func run(
        _ arguments: [String], directory: String, environment: [String: String] = [:], timeout: TimeInterval = 180
    ) async throws -> (status: Int32, output: String) {
        let outPath = NSTemporaryDirectory() + "cmd-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        let pid = try spawn(arguments, directory: directory, environment: environment, stdout: outPath)
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(timeout)
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date() > deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                break
            }
            try await Task.sleep(for: .milliseconds(20), clock: .suspending)
        }
        let output = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let exited = (status & 0x7f) == 0
        return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output)
    }

    /// Starts a command and returns without waiting (for cleanup paths that cannot await).
    public static func runDetached(_ arguments: [String], directory: String, environment: [String: String] = [:]) throws {
        _ = try spawn(arguments, directory: directory, environment: environment, stdout: "/dev/null")
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), which Swift's Glibc module
    /// does not export.
    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: CloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: CloseFrom.self) }

    private static func spawn(_ arguments: [String], directory: String, environment: [String: String], stdout: String) throws -> pid_t {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Nothing else is inherited: a listening socket this process has open (a test's
        // free-port probe, say) must not live on in a daemon the command starts.
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }
        // Change directory in a shell that then execs the command.
        let command = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", directory] + arguments
        let argv = command.map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        guard posix_spawn(&pid, "/bin/sh", &actions, nil, argv, envp) == 0 else { throw CocoaError(.executableNotLoadable) }
        return pid
    }
}
