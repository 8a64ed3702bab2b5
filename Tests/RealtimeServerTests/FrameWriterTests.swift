import NIOCore
import NIOEmbedded
import RealtimeCore
import Testing
@testable import RealtimeServer

/// The frame writer on an `EmbeddedChannel`: pre-encoded frames reach the socket as the exact
/// bytes given, queue only while the channel is not writable, and a connection over its byte
/// budget is stopped (the caller closes it with 4008).
@Suite struct FrameWriterTests {
    func frame(_ text: String) -> WireFrame { WireFrame(text: text) }

    func written(_ channel: EmbeddedChannel) throws -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        while let b = try channel.readOutbound(as: ByteBuffer.self) { out.append(b) }
        return out
    }

    @Test func framesGoOutAsTheExactBytesOnFlush() throws {
        let writer = FrameWriter(budget: 1 << 20)
        let channel = EmbeddedChannel(handler: writer)
        let hello = frame(#"{"type":"message","id":"1-0"}"#)
        guard case .written(firstUnflushed: true) = writer.write(hello) else { Issue.record("not written"); return }
        guard case .written(firstUnflushed: false) = writer.write(hello) else { Issue.record("not written"); return }
        #expect(try written(channel).isEmpty, "nothing leaves before the flush")
        #expect(writer.flush() == 2)
        let out = try written(channel)
        #expect(out == [hello.bytes, hello.bytes])
        // An unmasked text frame: FIN + opcode 1, the length, then the JSON.
        #expect(Array(out[0].readableBytesView.prefix(2)) == [0x81, UInt8(#"{"type":"message","id":"1-0"}"#.utf8.count)])
    }

    @Test func framesQueueWhileNotWritableAndLeaveInOrderWhenItIs() throws {
        let writer = FrameWriter(budget: 1 << 20)
        let channel = EmbeddedChannel(handler: writer)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        let frames = (0..<3).map { frame(#"{"n":\#($0)}"#) }
        for f in frames {
            guard case .queued = writer.write(f) else { Issue.record("not queued"); return }
        }
        _ = writer.flush()
        #expect(try written(channel).isEmpty)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(try written(channel) == frames.map(\.bytes))
    }

    @Test func aConnectionOverItsByteBudgetIsStopped() throws {
        let writer = FrameWriter(budget: 100_000)
        let channel = EmbeddedChannel(handler: writer)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        let big = frame("{\"d\":\"" + String(repeating: "x", count: 30_000) + "\"}")
        for _ in 0..<3 {
            guard case .queued = writer.write(big) else { Issue.record("not queued"); return }
        }
        guard case .overflowed = writer.write(big) else { Issue.record("budget not enforced"); return }
        guard case .stopped = writer.write(frame("{}")) else { Issue.record("still writing"); return }
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(try written(channel).isEmpty, "the queue was dropped")
    }

    @Test func oneFrameLargerThanTheWholeBudgetIsRefusedEvenWhenWritable() throws {
        let writer = FrameWriter(budget: 65_536)
        _ = EmbeddedChannel(handler: writer)
        guard case .overflowed = writer.write(frame("\"" + String(repeating: "y", count: 70_000) + "\"")) else {
            Issue.record("a frame over the budget was written")
            return
        }
    }
}
