// Helpers shared by the transcript log tests: temporary directories, events, raw file access, a seeded PRNG.

import Foundation
import Glibc
import Testing
import TranscriptLog
import TranscriptLogTesting

/// Runs `body` with a new empty directory and removes it afterwards (also when `body` throws).
func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
    var template = Array("/tmp/transcript-test-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { p -> String? in
        guard let r = mkdtemp(p.baseAddress!) else { return nil }
        return String(cString: r)
    }
    let dir = try #require(path)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

/// Options for a test log: small segments unless told otherwise, no fsync (tmp is not what these tests prove).
func testOptions(_ dir: String, fsync: FsyncPolicy = .never, segmentMaxBytes: Int = 64 << 20) -> TranscriptLogOptions {
    var o = TranscriptLogOptions(directory: dir)
    o.fsync = fsync
    o.segmentMaxBytes = segmentMaxBytes
    return o
}

/// A deterministic event: n selects id, data and time (``TranscriptSeed/event(_:_:id:kind:sub:role:timestampMs:data:dataBytes:)``).
func event(_ session: String, _ n: Int, sub: String = "agent-1", dataBytes: Int = 40) -> AppendRequest {
    TranscriptSeed.event(session, n, sub: sub, dataBytes: dataBytes)
}

func eventData(_ n: Int, _ bytes: Int) -> [UInt8] { TranscriptSeed.data(n, bytes: bytes) }

/// Bytes a record of `r` takes on disk (docs/transcript-format.md: 18-byte header, 19 fixed payload bytes).
func recordSize(_ r: AppendRequest) -> Int {
    18 + 19 + r.session.utf8.count + r.id.utf8.count + r.kind.utf8.count + r.sub.utf8.count + r.role.utf8.count
        + r.data.count
}

let segmentHeaderSize = 64

func segmentFiles(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".tlog") }.sorted()
}

func readBytes(_ path: String) -> [UInt8] {
    [UInt8](FileManager.default.contents(atPath: path) ?? Data())
}

func writeBytes(_ path: String, _ bytes: [UInt8]) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

func fileSize(_ path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : -1
}

/// Asserts the error's code, returning the error for more checks.
@discardableResult
func expectError(
    _ code: TranscriptError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> TranscriptError? {
    do {
        try body()
        Issue.record("expected \(code), nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let e as TranscriptError {
        #expect(e.code == code, "got \(e)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Every record of a session, read in small pages (exercises `after`).
func readAll(_ log: TranscriptLog, _ session: String, page: Int = 97) throws -> [TranscriptRecord] {
    var out: [TranscriptRecord] = []
    var after: UInt64 = 0
    for _ in 0..<100_000 {  // bounded: each page advances `after` or ends the loop
        let r = try log.read(session: session, after: after, limit: page)
        guard let last = r.records.last else { break }
        out += r.records
        after = last.seq
    }
    return out
}

/// SplitMix64: a tiny seeded generator so randomized tests replay from their printed seed.
struct SeededGenerator: RandomNumberGenerator {
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

/// True when this process may mount file systems (root in a namespace that allows it).
let canMount: Bool = {
    guard geteuid() == 0 else { return false }
    var template = Array("/tmp/transcript-mountprobe-XXXXXX".utf8CString)
    guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { return false }
    let dir = String(cString: p)
    defer { rmdir(dir) }
    guard mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0 else { return false }
    umount2(dir, 0)
    return true
}()

/// Start offsets of the records in a segment file, walking the length fields (the file must be sound).
func recordOffsets(_ path: String) -> [Int] {
    let b = readBytes(path)
    var out: [Int] = []
    var o = segmentHeaderSize
    while o + 18 <= b.count {  // bounded: advances by at least 18 bytes
        let len = Int(b[o + 2]) | Int(b[o + 3]) << 8 | Int(b[o + 4]) << 16 | Int(b[o + 5]) << 24
        out.append(o)
        o += 18 + len
    }
    return out
}
