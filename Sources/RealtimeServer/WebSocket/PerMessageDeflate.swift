import CompressNIO
import Foundation
import NIOCore

/// `permessage-deflate` (RFC 7692), receive side only: the server accepts compressed frames from
/// clients that offer the extension, and sends its own frames uncompressed (RSV1 clear), so one
/// encoding of a message serves every subscriber. Not compressing also makes every
/// server-side parameter a client may ask for (`server_no_context_takeover`,
/// `server_max_window_bits`) free to accept.
enum PerMessageDeflate {
    static let name = "permessage-deflate"

    /// The response header value for the first acceptable offer in `Sec-WebSocket-Extensions`
    /// values, or nil when the client offers none we accept.
    static func negotiate(_ headerValues: [String]) -> String? {
        for offer in headerValues.flatMap({ $0.split(separator: ",") }) {
            var parts = offer.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.first == name else { continue }
            parts.removeFirst()
            var response = name
            var seen: Set<String> = []
            var acceptable = true
            for parameter in parts {
                let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                // An empty parameter (`permessage-deflate; ;`) is malformed: the offer is refused.
                guard let key = pair.first, !key.isEmpty else { acceptable = false; break }
                let value = pair.count > 1 ? pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")) : nil
                guard seen.insert(key).inserted else { acceptable = false; break }
                switch key {
                case "server_no_context_takeover", "client_no_context_takeover":
                    guard value == nil else { acceptable = false; break }
                    response += "; " + key
                case "server_max_window_bits":
                    guard let value, let bits = Int(value), (8...15).contains(bits) else { acceptable = false; break }
                    response += "; server_max_window_bits=\(bits)"
                case "client_max_window_bits":
                    // Inflating with the largest window reads any smaller one; nothing to answer.
                    if let value {
                        guard let bits = Int(value), (8...15).contains(bits) else { acceptable = false; break }
                    }
                default:
                    acceptable = false
                }
                if !acceptable { break }
            }
            if acceptable { return response }
        }
        return nil
    }

    /// Inflates a client's compressed messages, frame by frame, within a byte budget.
    final class Inflater {
        private let decompressor: ZlibDecompressor

        init() throws { decompressor = try ZlibDecompressor(algorithm: .deflate, windowSize: 15) }

        enum Failure: Error { case tooLarge, corrupt }

        /// Inflates one frame's payload of a compressed message; `final` for the message's last
        /// frame. Throws `tooLarge` when the output would exceed `budget` bytes.
        func inflate(_ payload: ByteBuffer, final: Bool, budget: Int) throws(Failure) -> ByteBuffer {
            var input = payload
            // The sender removed the empty stored block's tail (RFC 7692 section 7.2.1).
            if final { input.writeBytes([0, 0, 0xFF, 0xFF]) }
            do {
                // Room for one byte past the budget, so a message of exactly `budget` bytes
                // fits; one that fills that byte too is over (found by the deflate fuzz target:
                // the library may return all `maxSize` bytes without an overflow error).
                let output = try input.decompressStream(with: decompressor, maxSize: budget + 1)
                guard output.readableBytes <= budget else { throw CompressNIOError.bufferOverflow }
                return output
            } catch let error as CompressNIOError where error == .bufferOverflow {
                throw .tooLarge
            } catch {
                throw .corrupt
            }
        }
    }
}
