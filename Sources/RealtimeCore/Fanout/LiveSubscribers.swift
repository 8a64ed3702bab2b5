import NIOCore

/// A channel's live subscribers, kept grouped by event loop as they join.
///
/// A message then costs one task per loop, queued under the channel's shard lock in a pass over
/// the loops, not over the subscribers; each loop writes the frame to its own sinks, in parallel
/// with the other loops. A task captures its loop's sink array as it is (copy on write: a
/// subscriber leaving while tasks are queued copies the group, never what the tasks see).
struct LiveSubscribers {
    struct Group {
        let loop: (any EventLoop)?
        let batch: FlushBatch?
        /// Subscription ids, parallel to `sinks`.
        var ids: [UInt64] = []
        var sinks: [any SubscriberSink] = []
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
