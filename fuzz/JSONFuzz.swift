// libFuzzer target: the strict JSON parser every REST body and WebSocket frame goes through.
// Built by fuzz/run.sh with the parser's own sources (no package needed):
//   swiftc -sanitize=fuzzer,address -parse-as-library fuzz/JSONFuzz.swift Sources/RealtimeCore/Wire/JSON*.swift
// Checks, beyond "no crash": the decoder accepts only what the validator accepts, and what it
// decodes writes back as valid JSON that decodes to the same value (or that the fast decoder
// leaves to Foundation, as it does for numbers whose two readings could differ: found by this
// target with an 82-digit integer, whose written form is `1.1e+81`).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let valid = JSONParser.isValid(bytes)
    guard let value = JSONParser.parse(bytes) else { return 0 }
    precondition(valid, "parse accepted what isValid refused")
    let again = Array(value.jsonText.utf8)
    precondition(JSONParser.isValid(again), "written JSON is not valid")
    if let back = JSONParser.parse(again) { precondition(back == value, "round trip changed the value") }
    return 0
}
