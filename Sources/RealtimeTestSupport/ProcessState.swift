import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Whether a child process has exited, read from /proc, without Foundation's `Process`
/// machinery. `Process.waitUntilExit()` and `isRunning` learn of an exit through a libdispatch
/// source; the test process stalled when that source's wake-up was lost (docs/robustness.md,
/// "Known issue"), with two cooperative threads blocked in `waitUntilExit` for good. A
/// SIGKILLed process is dead within milliseconds, so a short bounded spin on /proc is enough.
public enum ProcessState {
    /// True once `pid` is a zombie (exited, not yet reaped) or gone.
    public static func hasExited(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        // "pid (comm) S ...": the state follows the command name's closing parenthesis.
        let state = stat[stat.index(after: close)...].drop(while: { $0 == " " }).first
        return state == "Z" || state == "X"
    }

    /// Sends SIGKILL and waits, bounded, until the process has exited.
    public static func killAndWait(_ pid: pid_t, timeout: TimeInterval = 10) {
        kill(pid, SIGKILL)
        waitForExit(pid, timeout: timeout)
    }

    /// Waits, bounded, until the process has exited (a spin of 2 ms steps on /proc).
    public static func waitForExit(_ pid: pid_t, timeout: TimeInterval = 10) {
        let deadline = Date().addingTimeInterval(timeout)
        while !hasExited(pid), Date() < deadline { usleep(2000) }
    }
}
