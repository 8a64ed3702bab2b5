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
    /// Read byte by byte: every message read from Redis carries one, so this is on the fan-out path.
    public init?(_ text: some StringProtocol) {
        var numbers: (UInt64, UInt64) = (0, 0)
        var part = 0
        var digits = 0
        for byte in text.utf8 {
            if byte == UInt8(ascii: "-") {
                guard part == 0, digits > 0 else { return nil }
                part = 1
                digits = 0
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let value = part == 0 ? numbers.0 : numbers.1
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            guard !o1, !o2 else { return nil }
            if part == 0 { numbers.0 = sum } else { numbers.1 = sum }
            digits += 1
        }
        guard digits > 0 else { return nil }
        self.init(milliseconds: numbers.0, sequence: numbers.1)
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
