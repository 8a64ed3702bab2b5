import Foundation
import RealtimeTestSupport
import Testing
@testable import RealtimeCore

/// Our strict parser against Foundation's `JSONSerialization` on fixed, random and mutated
/// documents. They must agree, except where Foundation is known to be lenient or narrow, and
/// each such case is checked for being exactly that:
/// - Foundation accepts trailing commas (`[1,]`, `{"a":1,}`); RFC 8259 does not, nor do we.
/// - Foundation skips a leading byte order mark; RFC 8259 lets a parser do so, we refuse it.
/// - Foundation refuses numbers out of `Double`'s range (`1e400`), which are valid syntax; our
///   validator accepts them and our decoder (`parse`) refuses them.
@Suite struct JSONDifferentialTests {
    static let fixed = [
        "{}", "[]", "0", "-0", "1.5e3", "\"a\"", "true", "null", #"{"a":[1,2,{"b":null}],"c":"\u00e9\ud83d\ude00"}"#,
        "{\"a\":1,}", "[1,]", "01", "NaN", "{'a':1}", "[1] //c", "\"\\u0001\"", "\"\u{01}\"", "1e400", "[1e5]",
        "\"\\ud800\"", "[", "{\"a\"}", "\"\\x\"", " [1 , 2 ] ", "-", "1.", ".5", "+1", "[1 2]", "{\"a\":1 \"b\":2}",
        "\u{FEFF}{}", "[\"\\/\"]", "1E+2", "tru", "nul", "[-01]", "\"\u{7F}\"",
    ]

    @Test func agreesWithFoundationOnFixedRandomAndMutatedDocuments() {
        var rng = SeededGenerator(seed: 0x5eed)
        var documents = Self.fixed.map { Array($0.utf8) }
        for _ in 0..<400 {
            let doc = Array(Self.randomJSON(&rng, depth: 0).utf8)
            documents.append(doc)
            for _ in 0..<4 { documents.append(Self.mutate(doc, &rng)) }
        }
        for bytes in documents { check(bytes) }
    }

    /// Inputs the fuzzer found (fuzz/regressions/json), kept as tests.
    @Test func fuzzerFindingsStayFixed() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fuzz/regressions/json")
        let files = try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
        #expect(!files.isEmpty)
        for file in files {
            let bytes = Array(try Data(contentsOf: file))
            check(bytes)
            if let value = JSONParser.parse(bytes), let back = JSONParser.parse(Array(value.jsonText.utf8)) {
                #expect(back == value, "\(file.lastPathComponent)")
            }
        }
    }

    func check(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let ours = JSONParser.isValid(bytes)
        let foundation = (try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed)) != nil
        if ours, !foundation {
            // Only for numbers Foundation cannot hold, which our decoder refuses too.
            #expect(JSONParser.parse(bytes) == nil, "we accept, Foundation refuses: \(text.prefix(80))")
        } else if !ours, foundation {
            // Only for trailing commas or a byte order mark: without them we accept.
            let bare = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? Array(bytes.dropFirst(3)) : bytes
            #expect(JSONParser.isValid(Self.withoutTrailingCommas(bare)), "Foundation accepts, we refuse: \(text.prefix(80))")
        } else if ours, let value = JSONParser.parse(bytes) {
            let decoded = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
            #expect(decoded == value, "different values for \(text.prefix(80))")
        }
    }

    /// The document with every comma that precedes `]` or `}` (outside strings) removed.
    static func withoutTrailingCommas(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var inString = false
        var escaped = false
        var pendingComma: [UInt8]?
        for b in bytes {
            if inString {
                out.append(b)
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            if var pending = pendingComma {
                if [0x20, 0x09, 0x0A, 0x0D].contains(b) {
                    pending.append(b)
                    pendingComma = pending
                    continue
                }
                if b != UInt8(ascii: "]"), b != UInt8(ascii: "}") { out += pending }
                pendingComma = nil
            }
            if b == UInt8(ascii: ",") {
                pendingComma = [b]
                continue
            }
            if b == UInt8(ascii: "\"") { inString = true }
            out.append(b)
        }
        if let pending = pendingComma { out += pending }
        return out
    }

    static func randomJSON(_ rng: inout SeededGenerator, depth: Int) -> String {
        switch Int.random(in: 0..<(depth > 3 ? 5 : 7), using: &rng) {
        case 0: return "null"
        case 1: return Bool.random(using: &rng) ? "true" : "false"
        case 2: return String(Int.random(in: -1_000_000...1_000_000, using: &rng))
        case 3: return String(Double.random(in: -1e6...1e6, using: &rng))
        case 4:
            let pool = ["a", "é", "\\n", "\\\"", "\\u00e9", "😀", " ", "\\\\", "x"]
            return "\"" + (0..<Int.random(in: 0...6, using: &rng)).map { _ in pool.randomElement(using: &rng)! }.joined() + "\""
        case 5:
            return "[" + (0..<Int.random(in: 0...4, using: &rng)).map { _ in randomJSON(&rng, depth: depth + 1) }.joined(separator: ",") + "]"
        default:
            return "{" + (0..<Int.random(in: 0...4, using: &rng)).map { i in "\"k\(i)\":" + randomJSON(&rng, depth: depth + 1) }.joined(separator: ",") + "}"
        }
    }

    static func mutate(_ doc: [UInt8], _ rng: inout SeededGenerator) -> [UInt8] {
        var d = doc
        let tokens: [UInt8] = Array(",:[]{}\"\\0e-+.tn ".utf8) + [0x01, 0xFF, 0xC3]
        switch Int.random(in: 0..<3, using: &rng) {
        case 0 where !d.isEmpty: d.remove(at: Int.random(in: 0..<d.count, using: &rng))
        case 1: d.insert(tokens.randomElement(using: &rng)!, at: Int.random(in: 0...d.count, using: &rng))
        default: if !d.isEmpty { d[Int.random(in: 0..<d.count, using: &rng)] = tokens.randomElement(using: &rng)! }
        }
        return d
    }
}
