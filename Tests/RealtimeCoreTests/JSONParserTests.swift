import Foundation
import Testing
@testable import RealtimeCore

/// The fast parser must read every document exactly as the Foundation path does (same compact
/// text out), and hand back nil, never a different value, for anything it does not accept.
@Suite struct JSONParserTests {
    static func foundation(_ text: String) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    @Test(arguments: [
        #"{"channel":"orders:eu","event":"created","data":{"id":42,"items":[1,2.5,-3e2,true,false,null]}}"#,
        #"  { "a" : [ ] , "b" : { } , "c" : "" }  "#,
        #"{"text":"tab\there \"quoted\" back\\slash \/ \u00e9\u4e2d \ud83d\ude00 \b\f\n\r"}"#,
        #"{"unicode":"é中😀","zero":0,"negzero":-0,"big":9223372036854775807,"small":-9223372036854775808}"#,
        #"{"over":9223372036854775808,"frac":0.1,"exp":1E+2,"tiny":1e-7,"onepoint":1.0,"neg":-12.75}"#,
        #"[1,[2,[3,[4]]],{"k":{"k":{"k":"v"}}}]"#,
        #""just a string""#, "123", "true", "null",
        #"{"dup":1,"dup":2}"#,
        #"{"ctl":"\u0001\u001f"}"#,
    ])
    func readsValidJSONAsFoundationDoes(_ text: String) throws {
        let fast = try #require(JSONParser.parse(Array(text.utf8)))
        let slow = try #require(Self.foundation(text))
        #expect(fast.jsonText == slow.jsonText)
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{'a':1}", "[01]", "[1.]", "[.5]", "[1e]", "[+1]",
        "tru", "nul", "[1] x", "{\"a\":\"\u{01}\"}", #"{"a":"\x"}"#, #"{"a":"\u12"}"#, #"{"a":"\ud800"}"#,
        #"{"a":"\udc00x"}"#, "[1e400]", "NaN", "[Infinity]", "\"unterminated",
    ])
    func refusesInvalidJSON(_ text: String) {
        #expect(JSONParser.parse(Array(text.utf8)) == nil)
    }

    @Test func refusesInvalidUTF8AndTooDeepNesting() {
        #expect(JSONParser.parse([UInt8(ascii: "\""), 0xC3, 0x28, UInt8(ascii: "\"")]) == nil)
        let deep = String(repeating: "[", count: JSONGuard.maxDepth + 1) + String(repeating: "]", count: JSONGuard.maxDepth + 1)
        #expect(JSONParser.parse(Array(deep.utf8)) == nil)
        let ok = String(repeating: "[", count: JSONGuard.maxDepth) + String(repeating: "]", count: JSONGuard.maxDepth)
        #expect(JSONParser.parse(Array(ok.utf8)) != nil)
    }

    /// Random documents written with random spacing and escapes read the same both ways.
    @Test func randomDocumentsReadTheSameBothWays() throws {
        var rng = SplitMix(seed: 0x5EED)
        for _ in 0..<500 {
            let text = Self.document(depth: 0, &rng)
            let fast = try #require(JSONParser.parse(Array(text.utf8)), "\(text)")
            let slow = try #require(Self.foundation(text), "\(text)")
            #expect(fast.jsonText == slow.jsonText, "\(text)")
        }
    }

    static func document(depth: Int, _ rng: inout SplitMix) -> String {
        let space = [" ", "", "\n", "\t", "\r\n "][Int(rng.next() % 5)]
        switch rng.next() % (depth > 3 ? 4 : 6) {
        case 0: return ["null", "true", "false"][Int(rng.next() % 3)]
        case 1:
            let i = Int64(bitPattern: rng.next()) >> Int64(rng.next() % 64)
            return String(i)
        case 2:
            let d = Double(Int64(bitPattern: rng.next()) % 1_000_000) / [1, 10, 1000, 7][Int(rng.next() % 4)]
            return rng.next() % 2 == 0 ? "\(d)" : String(format: "%.3e", d)
        case 3: return quoted(&rng)
        case 4:
            let n = Int(rng.next() % 4)
            return "[" + space + (0..<n).map { _ in document(depth: depth + 1, &rng) }.joined(separator: "," + space) + space + "]"
        default:
            let n = Int(rng.next() % 4)
            return "{" + space + (0..<n).map { _ in quoted(&rng) + space + ":" + document(depth: depth + 1, &rng) }.joined(separator: ",") + "}"
        }
    }

    static func quoted(_ rng: inout SplitMix) -> String {
        let pieces = ["a", "Z", "é", "中", "😀", "\\n", "\\\"", "\\\\", "\\u00e9", "\\ud83d\\ude00", "\\/", " ", "\\t", "\\u0000"]
        return "\"" + (0..<Int(rng.next() % 6)).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined() + "\""
    }
}

/// A small deterministic generator, so a failure reproduces.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
