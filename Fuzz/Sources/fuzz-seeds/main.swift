// Writes the seed corpora of the fuzz targets (run by hand after a format change; scripts/fuzz.sh does not):
//   swift run --package-path Fuzz --scratch-path .build-fuzz-seeds fuzz-seeds Fuzz/corpus
// fuzz-frame-decoder: valid client frames of every type, plus a few near-misses.
// fuzz-log-reader: segment files written by TranscriptLog itself (one and two segments, head markers via
// retention, a torn tail), each seed the concatenation of a log's segment files (see fuzz-log-reader/main.swift).
import Foundation
import GatewayProtocol
import TranscriptLog

let root = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "Fuzz/corpus"
let fm = FileManager.default
let frameDir = root + "/fuzz-frame-decoder"
let logDir = root + "/fuzz-log-reader"
try fm.createDirectory(atPath: frameDir, withIntermediateDirectories: true)
try fm.createDirectory(atPath: logDir, withIntermediateDirectories: true)

let frames: [(String, String)] = [
    ("hello", #"{"type":"hello","token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln"}"#),
    ("hello-null", #"{"type":"hello","token":null}"#),
    ("hello-empty", #"{"type":"hello"}"#),
    ("join", #"{"type":"join","session":"proj-42:chat"}"#),
    ("join-since", #"{"type":"join","session":"s.1","since":18446744073709551615,"epoch":"5f0c2a9e13b47d68"}"#),
    ("join-since0", #"{"type":"join","session":"s","since":0}"#),
    ("leave", #"{"type":"leave","session":"a:b"}"#),
    ("publish", #"{"type":"publish","session":"proj-42","id":"m-1","kind":"chat.message","data":{"text":"hi"}}"#),
    ("publish-nested", #"{"type":"publish","session":"s","id":"i","kind":"progress","data":{"a":[1,2.5e3,-0,null,true,false,{"b":[[[]]]}]}}"#),
    ("publish-escapes", #"{"type":"publish","session":"s","id":"\u00e9\ud83d\ude00","kind":"chat.delta","data":"t\"\\\u00e9\ud83d\ude00\u2028","ephemeral":true}"#),
    ("publish-ephemeral-false", #"{"type":"publish","session":"s","id":"x","kind":"tool.output","data":null,"ephemeral":false}"#),
    ("publish-whitespace", "{ \"type\" : \"publish\" ,\n\t\"session\":\"s\",\"id\":\"i\",\"kind\":\"k\",\"data\": [ 1 , \"two\" ] }"),
    ("publish-unicode", #"{"type":"publish","session":"s","id":"é😀","kind":"chat.message","data":{"text":"привет 😀 \u0000"}}"#),
    ("publish-number", #"{"type":"publish","session":"s","id":"n","kind":"metric","data":-1.25e-7}"#),
    ("publish-unknown-field", #"{"type":"publish","session":"s","id":"u","kind":"k","data":1,"extra":{"x":[{}]}}"#),
    ("ping", #"{"type":"ping","id":"p1"}"#),
    ("ping-bare", #"{"type":"ping"}"#),
    ("bad-unknown-type", #"{"type":"subscribe","session":"s"}"#),
    ("bad-duplicate-key", #"{"type":"join","type":"leave","session":"s"}"#),
    ("bad-since-negative", #"{"type":"join","session":"s","since":-1}"#),
    ("bad-since-fraction", #"{"type":"join","session":"s","since":1.0}"#),
    ("bad-session", #"{"type":"join","session":"../etc"}"#),
    ("bad-deep", #"{"type":"publish","session":"s","id":"d","kind":"k","data":"# + String(repeating: "[", count: 70) + String(repeating: "]", count: 70) + "}"),
    ("bad-lone-surrogate", #"{"type":"ping","id":"\ud800"}"#),
    ("bad-truncated", #"{"type":"publish","session":"s","id":"i","kind":"k","data":{"a":"#),
]
for (name, text) in frames {
    try Data(text.utf8).write(to: URL(fileURLWithPath: frameDir + "/" + name + ".json"))
}

/// Writes a log with `body`, returns the concatenation of its segment files.
func makeLog(_ name: String, maxSegment: Int = 1 << 20, _ body: (TranscriptLog) throws -> Void) throws {
    let dir = NSTemporaryDirectory() + "fuzz-seed-\(UUID().uuidString.prefix(8))"
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? fm.removeItem(atPath: dir) }
    var options = TranscriptLogOptions(directory: dir)
    options.fsync = .never
    options.segmentMaxBytes = maxSegment
    options.maxRecordBytes = 4096
    let log = try TranscriptLog.open(options)
    try body(log)
    try log.close()
    let segments = try fm.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".tlog") }.sorted()
    var bytes = Data()
    for s in segments { bytes.append(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + s))) }
    try bytes.write(to: URL(fileURLWithPath: logDir + "/" + name + ".seg"))
}

func event(_ session: String, _ id: String, kind: String = "chat.message", data: String = #"{"text":"hi"}"#, ts: Int64 = 1_767_225_600_123) -> AppendRequest {
    AppendRequest(session: session, id: id, kind: kind, sub: "u42", role: "user", timestampMs: ts, data: Array(data.utf8))
}

try makeLog("empty") { _ in }
try makeLog("one-event") { log in _ = try log.append([event("s1", "m-1")]) }
try makeLog("three-sessions") { log in
    _ = try log.append([event("a", "1"), event("b", "1"), event("a", "2")])
    _ = try log.append([event("c", "x", kind: "progress", data: #"{"n":[1,2,3],"s":"\u00e9"}"#), event("b", "2")])
}
try makeLog("duplicate-id") { log in
    _ = try log.append([event("s", "same")])
    _ = try log.append([event("s", "same"), event("s", "other")])
}
try makeLog("unicode") { log in
    _ = try log.append([AppendRequest(session: "проект:чат", id: "é😀", kind: "chat.message", sub: "пользователь", role: "user", timestampMs: 0, data: Array(#"{"t":"😀"}"#.utf8))])
}
try makeLog("many-small") { log in
    for i in 0..<40 { _ = try log.append([event("s\(i % 3)", "m\(i)", data: "\(i)")]) }
}
// CRC32C (Castagnoli), bitwise: only for re-stamping segment headers below.
func crc32c(_ bytes: some Collection<UInt8>) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c >> 1) ^ (0x82F6_3B78 & (0 &- (c & 1))) }
    }
    return c ^ 0xFFFF_FFFF
}

/// A copy of a 64-byte segment header with another segment number (and its header CRC recomputed).
func header(_ h: [UInt8], number: UInt64) -> [UInt8] {
    var h = h
    for i in 0..<8 { h[16 + i] = UInt8(truncatingIfNeeded: number >> (8 * UInt64(i))) }
    let crc = crc32c(h[0..<60])
    for i in 0..<4 { h[60 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
    return h
}

/// Splits a one-segment log into `parts` segments at record boundaries (segment rolls need 1 MiB segments,
/// too big for seeds; records are self-checking, so moving them to a new segment with a valid header is exactly
/// what a roll produces).
func split(_ seg: [UInt8], parts: Int, firstNumber: UInt64 = 1) -> [[UInt8]] {
    let h = Array(seg[0..<64])
    var records: [ArraySlice<UInt8>] = []
    var off = 64
    while off + 18 <= seg.count {
        let len = Int(seg[off + 2]) | Int(seg[off + 3]) << 8 | Int(seg[off + 4]) << 16 | Int(seg[off + 5]) << 24
        records.append(seg[off..<(off + 18 + len)])
        off += 18 + len
    }
    let per = max(1, (records.count + parts - 1) / parts)
    return (0..<parts).map { k in
        header(h, number: firstNumber + UInt64(k)) + records.dropFirst(k * per).prefix(per).flatMap { $0 }
    }
}

func read(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: logDir + "/" + name + ".seg"))) }
func write(_ name: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: logDir + "/" + name + ".seg")) }

let many = try read("many-small")
try write("two-segments", split(many, parts: 2).flatMap { $0 })
try write("three-segments", split(many, parts: 3).flatMap { $0 })
try write("segments-2-5", split(many, parts: 2, firstNumber: 2).enumerated().map { $0.offset == 0 ? $0.element : header(Array($0.element[0..<64]), number: 5) + $0.element[64...] }.flatMap { $0 })
let one = try read("one-event")
try write("torn-tail", Array(one.prefix(one.count - 5)))
try write("torn-header", Array(one.prefix(40)))
var flipped = many
flipped[64 + 200] ^= 0x10
try write("bit-flip-middle", flipped)
var badLength = one
badLength[66] = 0xFF; badLength[67] = 0xFF; badLength[68] = 0xFF; badLength[69] = 0xFF
try write("length-ffffffff", badLength)

// Head markers: retention removes segment 1 of a two-segment log and writes a marker per session into segment 2.
do {
    let dir = NSTemporaryDirectory() + "fuzz-seed-markers-\(UUID().uuidString.prefix(8))"
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? fm.removeItem(atPath: dir) }
    let parts = split(many, parts: 2)
    for (k, p) in parts.enumerated() {
        try Data(p).write(to: URL(fileURLWithPath: dir + "/" + String(format: "%016x.tlog", k + 1)))
    }
    var options = TranscriptLogOptions(directory: dir)
    options.fsync = .never
    options.retentionMaxTotalBytes = 1
    let log = try TranscriptLog.open(options)
    let removed = try log.applyRetention(nowMs: 1_767_225_700_000)
    try log.close()
    let rest = try fm.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".tlog") }.sorted()
    var bytes: [UInt8] = []
    for s in rest { bytes += [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + s))) }
    try write("head-markers", bytes)
    print("head-markers: retention removed \(removed) segment(s), kept \(rest)")
}
print("wrote \(frames.count) frame seeds to \(frameDir), log seeds to \(logDir)")
