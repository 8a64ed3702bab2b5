import NIOCore
import Synchronization

/// A channel's live subscribers, kept grouped by event loop as they join.
///
/// A message then costs at most one task per loop, queued under the channel's shard lock in a
/// pass over the loops, not over the subscribers; each loop writes the frame to its own sinks,
/// in parallel with the other loops. Frames that arrive while a loop's task is still waiting
/// join that task (``Outbox``): a busy loop writes them to each sink as one buffer.
struct LiveSubscribers {
    struct Group {
        let loop: (any EventLoop)?
        let batch: FlushBatch?
        /// Subscription ids, parallel to `sinks`.
        var ids: [UInt64] = []
        var sinks: [any SubscriberSink] = []
        /// Collects frames for these very sinks; replaced whenever they change, so a frame
        /// never joins a task for another set of sinks.
        var outbox = Outbox()
    }

    private(set) var groups: [Group] = []
    /// The last id a sink got before going live, for the sinks that resumed (from another node)
    /// ahead of this node's live stream and must not get those messages again.
    var floors: [UInt64: MessageID] = [:]
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Every sink, in no particular order.
    var sinks: [any SubscriberSink] { groups.flatMap(\.sinks) }

    /// The only sink, when there is exactly one.
    var single: (any SubscriberSink)? { count == 1 ? groups.first?.sinks.first : nil }

    mutating func insert(id: UInt64, sink: any SubscriberSink, loop: (any EventLoop)?, batch: FlushBatch?, floor: MessageID?) {
        if let i = groups.firstIndex(where: { $0.loop === loop }) {
            groups[i].ids.append(id)
            groups[i].sinks.append(sink)
            groups[i].outbox = Outbox()
        } else {
            groups.append(Group(loop: loop, batch: batch, ids: [id], sinks: [sink]))
        }
        if let floor { floors[id] = floor }
        count += 1
    }

    /// Removes a subscription; false when it is not live here.
    mutating func remove(id: UInt64) -> Bool {
        for g in groups.indices {
            guard let i = groups[g].ids.firstIndex(of: id) else { continue }
            if groups[g].ids.count == 1 {
                groups.remove(at: g)
            } else {
                groups[g].ids.remove(at: i)
                groups[g].sinks.remove(at: i)
                groups[g].outbox = Outbox()
            }
            floors[id] = nil
            count -= 1
            return true
        }
        return false
    }

    mutating func removeAll() {
        self = LiveSubscribers()
    }

    /// Makes every later frame start new tasks: needed after frames went to some of the sinks
    /// by another way (``behind(_:)``), which later frames must not overtake.
    mutating func renewOutboxes() {
        for g in groups.indices { groups[g].outbox = Outbox() }
    }

    /// The groups with only the sinks whose floor is below `id` (those that do not have the
    /// message yet).
    func behind(_ id: MessageID) -> [Group] {
        groups.compactMap { group in
            var kept = Group(loop: group.loop, batch: group.batch)
            for (i, sid) in group.ids.enumerated() where floors[sid].map({ id > $0 }) ?? true {
                kept.ids.append(sid)
                kept.sinks.append(group.sinks[i])
            }
            return kept.sinks.isEmpty ? nil : kept
        }
    }
}

/// The frames waiting for one task on a loop that writes them to one group's sinks.
///
/// The first frame posted queues the task (with the sinks as they are then); frames posted
/// before it runs join it, and it writes them all as one ``WireFrameRun``: under load, when
/// the loop falls behind the publisher, each sink gets one write for several messages instead
/// of one per message. Posts come under the channel's shard lock, so in channel order; the lock
/// here is shared only by that poster and the one loop.
final class Outbox: Sendable {
    private struct Waiting {
        var frames: [WireFrame] = []
        var sinks: [any SubscriberSink] = []
        /// Some frame is written by other loops too.
        var acrossLoops = false
    }

    private let waiting = Mutex(Waiting())

    func post(_ frame: WireFrame, to sinks: [any SubscriberSink], on loop: any EventLoop, batch: FlushBatch, acrossLoops: Bool) {
        let idle = waiting.withLock { w -> Bool in
            w.frames.append(frame)
            w.acrossLoops = w.acrossLoops || acrossLoops
            guard w.frames.count == 1 else { return false }
            w.sinks = sinks
            return true
        }
        if idle { loop.execute { self.write(batch: batch, on: loop) } }
    }

    private func write(batch: FlushBatch, on loop: any EventLoop) {
        let (frames, sinks, acrossLoops) = waiting.withLock { w in
            defer { w = Waiting() }
            return (w.frames, w.sinks, w.acrossLoops)
        }
        let run = WireFrameRun(frames, ownCopy: acrossLoops)
        for s in sinks where s.write(run) { batch.dirty.append(s) }
        batch.schedule(on: loop)
    }
}
