/// A message id: the channel's stream id `"<unix-ms>-<seq>"`, strictly increasing per channel.
///
/// It is the same value Redis assigns with `XADD *`, so ids read from history, received live and
/// sent back as `since_id` compare the same way on every node and in every engine.
public struct MessageID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var milliseconds: UInt64
    public var sequence: UInt64

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    /// Parses `"<ms>-<seq>"`; a bare `"<ms>"` means `"<ms>-0"`, as in Redis.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let ms = parts.first.flatMap({ UInt64($0) }) else { return nil }
        if parts.count == 2 {
            guard let seq = UInt64(parts[1]) else { return nil }
            self.init(milliseconds: ms, sequence: seq)
        } else {
            self.init(milliseconds: ms, sequence: 0)
        }
    }

    public static let zero = MessageID(milliseconds: 0, sequence: 0)
    public static let max = MessageID(milliseconds: .max, sequence: .max)

    /// The id `XADD *` would assign after `self` at wall-clock `now` milliseconds.
    public func next(atMilliseconds now: UInt64) -> MessageID {
        if now > milliseconds { return MessageID(milliseconds: now, sequence: 0) }
        return MessageID(milliseconds: milliseconds, sequence: sequence + 1)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }
}

extension MessageID {
    /// The greatest id below this one (for inclusive upper bounds when paging backwards).
    public var predecessor: MessageID {
        if sequence > 0 { return MessageID(milliseconds: milliseconds, sequence: sequence - 1) }
        if milliseconds == 0 { return .zero }
        return MessageID(milliseconds: milliseconds - 1, sequence: .max)
    }
}
