import Foundation
import Testing
@testable import RealtimeServer

/// The connection's lifecycle without I/O: every path to a closed, cleaned-up connection.
@Suite struct ConnectionStateMachineTests {
    typealias M = ConnectionStateMachine
    let bye = M.Close(code: 4001, reason: "token expired", dropQueued: false)

    @Test func aHeartbeatPingsAndAMissedPongClosesWith1001WithoutWaitingForAnAnswer() {
        var m = M()
        let r1 = m.heartbeatDue()
        #expect(r1 == [.sendPing])
        m.pongReceived()
        let r2 = m.heartbeatDue()
        #expect(r2 == [.sendPing])
        let closing = m.heartbeatDue()
        #expect(closing == [.startCleanup, .beginClose(M.Close(code: 1001, reason: "ping timeout", dropQueued: true))])
        let r3 = m.closeFrameWritten()
        #expect(r3 == [.closeSocket])
        let r4 = m.heartbeatDue()
        #expect(r4.isEmpty, "no pings once closing")
    }

    @Test func aServerCloseFlushesWaitsForTheAnswerThenFinishesAfterCleanup() {
        var m = M()
        let r5 = m.requestClose(bye)
        #expect(r5 == [.startCleanup, .beginClose(bye)])
        let r6 = m.requestClose(M.Close(code: 1012, reason: "draining", dropQueued: false))
        #expect(r6.isEmpty, "the first close wins")
        let r7 = m.closeFrameWritten()
        #expect(r7 == [.awaitCloseAnswer])
        let r8 = m.peerClosed(replyCode: 1000)
        #expect(r8 == [.closeSocket])
        let r9 = m.cleanupDone()
        #expect(r9.isEmpty, "still open at the socket level")
        let r10 = m.socketDidClose()
        #expect(r10 == [.finish])
    }

    @Test func aClientCloseIsAnsweredAndTheSocketClosedRightAfter() {
        var m = M()
        let r11 = m.peerClosed(replyCode: 1000)
        #expect(r11 == [.startCleanup, .beginClose(M.Close(code: 1000, reason: "", dropQueued: true))])
        let r12 = m.closeFrameWritten()
        #expect(r12 == [.closeSocket])
        let r13 = m.socketDidClose()
        #expect(r13.isEmpty)
        let r14 = m.cleanupDone()
        #expect(r14 == [.finish])
    }

    @Test func anOpInFlightDelaysCleanupUntilItIsDone() {
        var m = M()
        let r15 = m.opArrived()
        #expect(r15)
        let r16 = m.opArrived()
        #expect(!r16, "one task at a time")
        let r17 = m.requestClose(bye)
        #expect(r17 == [.beginClose(bye)], "no cleanup under an op in flight")
        let r18 = m.opsDone()
        #expect(r18 == [.startCleanup])
        let r19 = m.opsDone()
        #expect(r19.isEmpty, "cleanup starts once")
    }

    @Test func eofClosesAtOnceAndCleansUpWithoutAHandshake() {
        var m = M()
        let r20 = m.inputClosed()
        #expect(r20 == [.closeSocket])
        let r21 = m.socketDidClose()
        #expect(r21 == [.startCleanup])
        let r22 = m.closeFrameWritten()
        #expect(r22.isEmpty, "no close frame on a closed socket")
        let r23 = m.cleanupDone()
        #expect(r23 == [.finish])
        let r24 = m.cleanupDone()
        #expect(r24.isEmpty, "finishes once")
    }

    @Test func heldReadsResumeWhenThePressureIsGoneAndWhenClosing() {
        var m = M()
        let r25 = m.readRequested(paused: true)
        #expect(r25.isEmpty)
        let r26 = m.readsMayResume(paused: true)
        #expect(r26.isEmpty)
        let r27 = m.readsMayResume(paused: false)
        #expect(r27 == [.read])
        let r28 = m.readsMayResume(paused: false)
        #expect(r28.isEmpty, "one held read, released once")
        _ = m.readRequested(paused: true)
        // Closing reads on, so the peer's answer to the close frame is seen.
        let r29 = m.requestClose(bye)
        #expect(r29 == [.startCleanup, .read, .beginClose(bye)])
        let r30 = m.readRequested(paused: true)
        #expect(r30 == [.read])
    }

    @Test func aProtocolViolationDropsWhatIsQueuedAndDoesNotWaitForTheAnswer() {
        var m = M()
        let r31 = m.protocolViolation(code: 1002, reason: "reserved bit set")
        #expect(r31 == [.startCleanup, .beginClose(M.Close(code: 1002, reason: "reserved bit set", dropQueued: true))])
        let r32 = m.closeFrameWritten()
        #expect(r32 == [.closeSocket])
    }

    /// Whatever order the events come in, a connection ends cleaned up and finished, once.
    @Test func everyOrderOfEventsEndsFinishedExactlyOnce() {
        enum Event: CaseIterable { case heartbeat, pong, close, peerClose, written, eof, socketClosed, opIn, opsDone, cleanupDone, lifetime, token }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var m = M()
            var finishes = 0
            var cleanups = 0
            var socketClosed = false
            var cleanupRan = false
            func apply(_ actions: [M.Action]) {
                for a in actions {
                    if a == .finish { finishes += 1 }
                    if a == .startCleanup { cleanups += 1 }
                }
            }
            for _ in 0..<12 {
                switch Event.allCases.randomElement(using: &rng)! {
                case .heartbeat: apply(m.heartbeatDue())
                case .pong: m.pongReceived()
                case .close: apply(m.requestClose(bye))
                case .peerClose: apply(m.peerClosed(replyCode: 1000))
                case .written: apply(m.closeFrameWritten())
                case .eof: apply(m.inputClosed())
                case .socketClosed where !socketClosed:
                    socketClosed = true
                    apply(m.socketDidClose())
                case .opIn: _ = m.opArrived()
                case .opsDone where m.processing: apply(m.opsDone())
                case .lifetime: apply(m.lifetimeCheck(now: Int64.random(in: 0...4_000_000, using: &rng), authDeadline: 2_000_000, warning: 60_000).actions)
                case .token: m.tokenAccepted(expiresAt: Int64.random(in: 0...4_000, using: &rng))
                case .cleanupDone where cleanups == 1 && !cleanupRan:
                    cleanupRan = true
                    apply(m.cleanupDone())
                default: break
                }
            }
            // Drive to the end as the handler would.
            if !socketClosed { apply(m.socketDidClose()) }
            if m.processing { apply(m.opsDone()) }
            if !cleanupRan, cleanups == 1 { apply(m.cleanupDone()) }
            #expect(cleanups == 1 && finishes == 1, "cleanups \(cleanups), finishes \(finishes)")
        }
    }

    // MARK: Token lifetime

    @Test func noTokenByTheDeadlineClosesWith4001() {
        var m = M()
        let early = m.lifetimeCheck(now: 1_000, authDeadline: 10_000, warning: 60_000)
        #expect(early.actions.isEmpty && early.next == 10_000, "looks again at the deadline")
        let due = m.lifetimeCheck(now: 10_000, authDeadline: 10_000, warning: 60_000)
        #expect(due.actions == [.send(.authTimeout), .startCleanup, .beginClose(M.Close(code: 4001, reason: "authentication timeout", dropQueued: false))])
        #expect(due.next == nil)
        let after = m.lifetimeCheck(now: 20_000, authDeadline: 10_000, warning: 60_000)
        #expect(after.actions.isEmpty && after.next == nil, "closing: nothing more")
    }

    @Test func aTokenIsWarnedOnceThenClosedAtExpiry() {
        var m = M()
        m.tokenAccepted(expiresAt: 1_000)  // 1,000,000 ms
        let quiet = m.lifetimeCheck(now: 500_000, authDeadline: 0, warning: 60_000)
        #expect(quiet.actions.isEmpty && quiet.next == 940_000, "next look at the warning")
        let warn = m.lifetimeCheck(now: 940_000, authDeadline: 0, warning: 60_000)
        #expect(warn.actions == [.send(.tokenExpiring(expiresAtMilliseconds: 1_000_000))] && warn.next == 1_000_000)
        let again = m.lifetimeCheck(now: 950_000, authDeadline: 0, warning: 60_000)
        #expect(again.actions.isEmpty && again.next == 1_000_000, "warned once per expiry")
        let expired = m.lifetimeCheck(now: 1_000_000, authDeadline: 0, warning: 60_000)
        #expect(expired.actions == [.send(.tokenExpired), .startCleanup, .beginClose(M.Close(code: 4001, reason: "token expired", dropQueued: false))])
    }

    @Test func aRefreshedTokenMovesTheExpiryAndIsWarnedAgain() {
        var m = M()
        m.tokenAccepted(expiresAt: 1_000)
        _ = m.lifetimeCheck(now: 950_000, authDeadline: 0, warning: 60_000)
        m.tokenAccepted(expiresAt: 2_000)
        let after = m.lifetimeCheck(now: 1_000_000, authDeadline: 0, warning: 60_000)
        #expect(after.actions.isEmpty && after.next == 1_940_000, "the old expiry no longer closes")
        let warn = m.lifetimeCheck(now: 1_950_000, authDeadline: 0, warning: 60_000)
        #expect(warn.actions == [.send(.tokenExpiring(expiresAtMilliseconds: 2_000_000))])
    }

    @Test func theLargestExpiryATokenMayCarryDoesNotTrap() {
        var m = M()
        m.tokenAccepted(expiresAt: 253_402_300_799)
        let look = m.lifetimeCheck(now: Int64(Date().timeIntervalSince1970 * 1000), authDeadline: 0, warning: 60_000)
        #expect(look.actions.isEmpty && look.next == 253_402_300_799_000 - 60_000)
    }
}
