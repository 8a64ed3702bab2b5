import RealtimeCore
@testable import RealtimeRedis
@testable import RedisClient
import Testing

/// How the Redis engine reports Redis' own answers and failures in the contract's codes: a
/// refusal for a passing reason is `50300` (nothing applied, retry), an outcome it cannot
/// know is `50400` for a write, anything else `50000`. Pure: the errors are built by hand.
@Suite struct RedisErrorMappingTests {
    static let refusals = [
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "READONLY You can't write against a read only replica.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
        "OOM command not allowed when used memory > 'maxmemory'. script: abc, on @user_script:12.",
        "NOREPLICAS Not enough good replicas to write.",
        "CLUSTERDOWN The cluster is down",
        "TRYAGAIN Multiple keys request during rehashing of slot",
    ]

    @Test(arguments: refusals)
    func aPassingRefusalIs50300ForWritesAndReads(_ message: String) {
        let error = RedisError.server(message)
        #expect(error.isTransientRefusal)
        for write in [true, false] {
            let mapped = RedisEngine.contractError(error, write: write)
            #expect(mapped.code == 50300 && mapped.status == 503, "\(message) write: \(write) -> \(mapped)")
        }
    }

    @Test(arguments: [
        "ERR Error running script (call to f_abc): @user_script:3: user_script:3: bad argument",
        "BUSYKEY Target key name already exists.",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "NOSCRIPT No matching script. Please use EVAL.",
        "",
    ])
    func anyOtherErrorReplyIs50000(_ message: String) {
        let error = RedisError.server(message)
        #expect(!error.isTransientRefusal)
        #expect(RedisEngine.contractError(error, write: true).code == 50000)
    }

    @Test func whatMayHaveRunIsUnknownForAWriteAndUnavailableForARead() {
        for error in [RedisError.timeout, .connectionLost("reset"), .followUpFailed("WAIT"), .protocolError("bad byte")] {
            #expect(RedisEngine.contractError(error, write: true).code == 50400, "\(error)")
            #expect(RedisEngine.contractError(error, write: false).code == 50300, "\(error)")
        }
        for error in [RedisError.connection("refused"), .crossSlot("two slots")] {
            #expect(RedisEngine.contractError(error, write: true).code == 50300, "\(error)")
        }
    }

    /// The command after a script (`WAIT` for replicated durability) failing, even with a
    /// refusal, must not read as "nothing applied": the script has run.
    @Test func aFollowUpsFailureIsNeverARefusalOfTheScript() async {
        for cause in [RedisError.server("BUSY Redis is busy running a script."), .connection("refused"), .timeout] {
            await #expect(throws: RedisError.followUpFailed(cause.description)) {
                try await RedisCommandClient.followUp { throw cause }
            }
            #expect(RedisEngine.contractError(.followUpFailed(cause.description), write: true).code == 50400)
        }
    }
}
