// libFuzzer target: GatewayAuth's StrictJSON (the parser every JWT header and payload goes through before its
// signature is verified) and its Base64URL codec. StrictJSON.swift is the root package's file (a symlink), compiled
// into this executable so its internal types are reachable.
//
// Properties checked on every input (a violation traps, so libFuzzer reports it and keeps the input):
//   1. parse never traps, whatever the bytes (ASan catches out-of-bounds reads; depth is bounded).
//   2. A parsed value, written back as JSON, parses to the same value (nothing is lost or invented).
//   3. What parse accepts is valid UTF-8 and has no duplicate member names (checked on the re-parse: equal values).
//   4. Base64URL: decode(encode(x)) == x for the input bytes; a decodable input is the canonical encoding of what it
//      decodes to (encode(decode(s)) == s), so no token has two spellings.
import FuzzDriver

#if canImport(Glibc)
    import Glibc
#endif

@inline(never)
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        let text = Array("fuzz-strict-json: property violated: \(message())\n".utf8)
        _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        abort()
    }
}

/// JSON text of a value (member order sorted; numbers in Swift's shortest round-tripping form).
func write(_ v: JSONValue, into out: inout [UInt8]) {
    switch v {
    case .null: out += Array("null".utf8)
    case .bool(let b): out += Array((b ? "true" : "false").utf8)
    case .number(let d): out += Array("\(d)".utf8)
    case .string(let s): writeString(s, into: &out)
    case .array(let a):
        out.append(UInt8(ascii: "["))
        for (i, e) in a.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            write(e, into: &out)
        }
        out.append(UInt8(ascii: "]"))
    case .object(let o):
        out.append(UInt8(ascii: "{"))
        for (i, k) in o.keys.sorted().enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            writeString(k, into: &out)
            out.append(UInt8(ascii: ":"))
            write(o[k]!, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }
}

func writeString(_ s: String, into out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "\""): out += Array("\\\"".utf8)
        case UInt8(ascii: "\\"): out += Array("\\\\".utf8)
        case 0..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            out += Array("\\u00".utf8)
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 15)])
        default: out.append(b)
        }
    }
    out.append(UInt8(ascii: "\""))
}

func depth(_ v: JSONValue) -> Int {
    switch v {
    case .array(let a): return 1 + (a.map(depth).max() ?? 0)
    case .object(let o): return 1 + (o.values.map(depth).max() ?? 0)
    default: return 0
    }
}

func fuzzOne(_ input: UnsafeRawBufferPointer) {
    let bytes = Array(input)
    let size = bytes.count
    // 1-3.
    if let value = try? StrictJSON.parse(bytes) {
        check(String(validating: bytes, as: UTF8.self) != nil, "accepted invalid UTF-8")
        check(depth(value) <= StrictJSON.maxDepth + 1, "nesting beyond maxDepth accepted")
        var text: [UInt8] = []
        write(value, into: &text)
        guard let again = try? StrictJSON.parse(text) else {
            check(false, "re-encoded value does not parse: \(String(decoding: text.prefix(200), as: UTF8.self))")
            return
        }
        check(again == value, "re-encoded value parses differently")
    }
    // 4.
    let encoded = Base64URL.encode(bytes)
    check(Base64URL.decode(encoded.utf8[...]) == bytes, "base64url does not round-trip \(size) bytes")
    if let text = String(validating: bytes, as: UTF8.self), let decoded = Base64URL.decode(text.utf8[...]) {
        check(Base64URL.encode(decoded) == text, "base64url accepted a non-canonical spelling")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

exit(fuzz_driver_main(CommandLine.argc, CommandLine.unsafeArgv) { data, size in
    fuzzOne(UnsafeRawBufferPointer(start: data, count: size))
    return 0
})
