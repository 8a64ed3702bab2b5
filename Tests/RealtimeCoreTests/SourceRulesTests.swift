import Foundation
import Testing

/// Rules about the sources that a compiler bug makes necessary (not style): checked over every
/// Swift file under Sources/.
@Suite struct SourceRulesTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources")

    /// A closure kept directly in a `Mutex` (or our `Locked`) gains one reabstraction thunk per
    /// `withLock { $0 }` in optimized builds until calling it overflows the stack; keep such
    /// closures in a class (`EventHandler`) or a struct field instead (see EngineTypes.swift).
    @Test func noClosureIsKeptDirectlyInALock() throws {
        let files = FileManager.default.enumerator(at: Self.sources, includingPropertiesForKeys: nil)!
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        #expect(files.count > 50)
        let pattern = try Regex(#"(Mutex|Locked)<\(*\s*(@Sendable\s*)?\([^)]*\)\s*(async\s*)?(throws\s*)?->"#)
        var offenders: [String] = []
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where !line.trimmingCharacters(in: .whitespaces).hasPrefix("///") && line.contains(pattern) {
                offenders.append("\(file.lastPathComponent):\(n + 1): \(line.trimmingCharacters(in: .whitespaces))")
            }
        }
        #expect(offenders == [])
    }
}
