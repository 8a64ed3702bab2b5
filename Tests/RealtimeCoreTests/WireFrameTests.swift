import NIOCore
import Testing
@testable import RealtimeCore

@Suite struct WireFrameTests {
    /// RFC 6455 5.2: FIN + text, no mask, length in 7 bits, or 126 + 16 bits, or 127 + 64 bits.
    @Test(arguments: [0, 1, 125, 126, 65_535, 65_536, 200_000])
    func framesCarryTheShortestLengthFormAndThePayload(length: Int) {
        let text = String(repeating: "a", count: length)
        let frame = WireFrame(text: text)
        let b = frame.bytes
        #expect(b.getInteger(at: b.readerIndex, as: UInt8.self) == 0x81)
        let second = b.getInteger(at: b.readerIndex + 1, as: UInt8.self)!
        #expect(second & 0x80 == 0, "server frames are not masked")
        switch length {
        case ..<126:
            #expect(Int(second) == length)
            #expect(b.readableBytes == length + 2)
        case ...0xFFFF:
            #expect(second == 126)
            #expect(Int(b.getInteger(at: b.readerIndex + 2, as: UInt16.self)!) == length)
            #expect(b.readableBytes == length + 4)
        default:
            #expect(second == 127)
            #expect(Int(b.getInteger(at: b.readerIndex + 2, as: UInt64.self)!) == length)
            #expect(b.readableBytes == length + 10)
        }
        #expect(String(buffer: frame.text) == text)
        #expect(String(buffer: WireFrame(text: ByteBuffer(string: text)).text) == text)
    }
}
