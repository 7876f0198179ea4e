// libFuzzer target: the gateway's client frame decoder (ClientFrame.decode), the JSON scanner under it, and the
// event encoder (ServerFrame.appendEvent) fed with what the decoder accepted.
//
// Properties checked on every input (a violation traps, so libFuzzer reports it and keeps the input):
//   1. decode never traps, whatever the bytes and limits (ASan catches out-of-bounds reads and writes).
//   2. An input over maxMessageBytes is `too_large`, never parsed.
//   3. Tighter limits never accept what the defaults refuse, and accept it as the same frame.
//   4. A decoded frame, written back with JSONWriter, decodes to the same frame (fields are validated, so
//      re-escaping must round-trip).
//   5. A decoded publish, encoded as an event with appendEvent, is a JSON object whose `data` member is the
//      publish's data byte for byte and whose strings decode to the fields that went in.
//   6. Every member of a scanned object: string values decode (decodeString) and numbers either give a UInt64 or
//      an explicit error.
import FuzzDriver
import GatewayProtocol

#if canImport(Glibc)
    import Glibc
#endif

@inline(never)
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        let text = Array("fuzz-frame-decoder: property violated: \(message())\n".utf8)
        _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        abort()
    }
}

let defaultLimits = FrameLimits()
let tightLimits = FrameLimits(maxMessageBytes: 512, maxDepth: 4, maxMembers: 8)

/// Writes a client frame back as JSON, the way a client would send it.
func reencode(_ frame: ClientFrame) -> [UInt8] {
    var out: [UInt8] = []
    func key(_ k: String) {
        if out.count > 1 { out.append(UInt8(ascii: ",")) }
        JSONWriter.appendString(k, to: &out)
        out.append(UInt8(ascii: ":"))
    }
    func string(_ k: String, _ v: String) {
        key(k)
        JSONWriter.appendString(v, to: &out)
    }
    out.append(UInt8(ascii: "{"))
    switch frame {
    case .hello(let h):
        string("type", "hello")
        if let t = h.token { string("token", t) }
    case .join(let j):
        string("type", "join")
        string("session", j.session)
        if let s = j.since {
            key("since")
            out.append(contentsOf: Array(String(s).utf8))
        }
        if let e = j.epoch { string("epoch", e) }
        if let n = j.last {
            key("last")
            out.append(contentsOf: Array(String(n).utf8))
        }
        if j.presence {
            key("presence")
            out.append(contentsOf: Array("true".utf8))
        }
    case .refresh(let r):
        string("type", "refresh")
        string("token", r.token)
    case .history(let h):
        string("type", "history")
        string("session", h.session)
        if let b = h.before {
            key("before")
            out.append(contentsOf: Array(String(b).utf8))
        }
        key("limit")
        out.append(contentsOf: Array(String(h.limit).utf8))
        if let id = h.id { string("id", id) }
    case .leave(let l):
        string("type", "leave")
        string("session", l.session)
    case .publish(let p):
        string("type", "publish")
        string("session", p.session)
        string("id", p.id)
        string("kind", p.kind)
        key("data")
        out.append(contentsOf: p.data)
        key("ephemeral")
        out.append(contentsOf: Array((p.ephemeralFlag ? "true" : "false").utf8))
    case .ping(let p):
        string("type", "ping")
        if let id = p.id { string("id", id) }
    }
    out.append(UInt8(ascii: "}"))
    return out
}

/// Property 5: the event frame built from a publish.
func checkEvent(_ p: ClientFrame.Publish) {
    var buffer: [UInt8] = Array(repeating: 0, count: 16)  // headroom, as the gateway uses
    let n = ServerFrame.appendEvent(
        into: &buffer, session: p.session, seq: p.isEphemeral ? nil : UInt64(p.data.count) &* 7919, id: p.id,
        kind: p.kind, sub: p.id, role: "agent", timestampMs: Int64(p.data.count) * 1_000_003, data: p.data)
    check(n == buffer.count - 16, "appendEvent returned \(n), appended \(buffer.count - 16)")
    check(buffer[0..<16].allSatisfy { $0 == 0 }, "headroom overwritten")
    let frame = Array(buffer[16...])
    // The event nests data one level deeper than the publish did (and `from` is depth 2).
    let scanner = JSONScanner(maxDepth: defaultLimits.maxDepth + 1, maxMembers: 16)
    frame.withUnsafeBytes { raw in
        switch scanner.scanObject(raw) {
        case .failure(let e):
            check(false, "event frame is not a JSON object: \(e): \(String(decoding: frame, as: UTF8.self))")
        case .success(let object):
            func str(_ k: String) -> String? {
                object.member(k, in: raw).flatMap { JSONScanner.decodeString(raw, range: $0.range) }
            }
            check(str("type") == "event", "type")
            check(str("session") == p.session, "session round trip")
            check(str("id") == p.id, "id round trip")
            check(str("kind") == p.kind, "kind round trip")
            guard let data = object.member("data", in: raw) else { return check(false, "no data member") }
            check(raw[data.range].elementsEqual(p.data), "data not spliced byte for byte")
        }
    }
}

func fuzzOne(_ bytes: UnsafeRawBufferPointer) {
    let full = ClientFrame.decode(bytes, limits: defaultLimits)
    let tight = ClientFrame.decode(bytes, limits: tightLimits)
    if bytes.count > defaultLimits.maxMessageBytes {
        if case .failure(let e) = full { check(e.code == .tooLarge, "oversized input not too_large") } else { check(false, "oversized accepted") }
    }
    if case .success(let t) = tight {
        guard case .success(let f) = full else { return check(false, "tight limits accepted what the defaults refused") }
        check(t == f, "tight and default limits disagree on the frame")
    }
    if case .success(let frame) = full {
        let again = reencode(frame)
        switch ClientFrame.decode(again, limits: FrameLimits(maxMessageBytes: 8 << 20)) {
        case .success(let f2):
            check(f2 == frame, "re-encoded frame decodes differently: \(String(decoding: again, as: UTF8.self))")
        case .failure(let e):
            check(false, "re-encoded frame refused: \(e): \(String(decoding: again, as: UTF8.self))")
        }
        if case .publish(let p) = frame { checkEvent(p) }
    }
    // Property 6: the scanner alone, and the value helpers on whatever it found.
    if case .success(let object) = JSONScanner().scanObject(bytes) {
        for m in object.members {
            _ = m.key(in: bytes)
            switch m.type {
            case .string:
                check(JSONScanner.decodeString(bytes, range: m.range) != nil, "a scanned string does not decode")
            case .number:
                _ = JSONScanner.decodeUInt64(bytes, range: m.range)
            default:
                // Arbitrary ranges must be refused, not trusted.
                _ = JSONScanner.decodeString(bytes, range: m.range)
            }
        }
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
