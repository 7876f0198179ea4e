// Append, dedupe, read and retention: G2 (seqs), G8 (dedupe), G9 (trimmed reads), and the visibility rule
// (a reader never sees a batch before `append` returned).

import Foundation
import Glibc
import Synchronization
import Testing
import TranscriptLog
import TranscriptLogTesting

@Suite struct AppendReadTests {
    @Test func dedupeWithinBatch() throws {
        try withTemporaryDirectory { dir in
            let log = try TranscriptLog.open(testOptions(dir))
            let x = event("s", 1)
            let y = event("s", 2)
            let otherSub = event("s", 1, sub: "agent-2")  // same id, another publisher: a new event
            let otherSession = event("t", 1)
            let out = try log.append([x, y, x, otherSub, otherSession, y])
            #expect(out == [.appended(seq: 1), .appended(seq: 2), .duplicate(seq: 1), .appended(seq: 3), .appended(seq: 1), .duplicate(seq: 2)])
            #expect(try readAll(log, "s").map(\.id) == ["m-1", "m-2", "m-1"])
            #expect(try log.append([x]) == [.duplicate(seq: 1)])  // all duplicates: nothing written
            #expect(log.head(session: "s") == 3)
            #expect(log.lookup(session: "s", sub: "agent-2", id: "m-1") == 3)
            try log.close()
        }
    }

    @Test func dedupeAfterReopen() throws {
        try withTemporaryDirectory { dir in
            var o = Self.dedupeOptions(dir, ids: 3, seconds: 0)  // the count alone (the time window has its own test)
            var log = try TranscriptLog.open(o)
            for n in 1...5 { _ = try log.append([event("s", n)]) }
            try log.close()
            log = try TranscriptLog.open(o)
            // The window holds the last 3 ids (m-3, m-4, m-5), rebuilt from the log.
            #expect(try log.append([event("s", 5), event("s", 3)]) == [.duplicate(seq: 5), .duplicate(seq: 3)])
            #expect(log.lookup(session: "s", sub: "agent-1", id: "m-2") == nil)
            #expect(try log.append([event("s", 2)]) == [.appended(seq: 6)])  // evicted: a new event
            try log.close()
            o.dedupeWindowPerSession = 10_000
            log = try TranscriptLog.open(o)
            #expect(try log.append([event("s", 1)]) == [.duplicate(seq: 1)])
            try log.close()
        }
    }

    /// Dedupe that does not depend on speed: beyond the count window, an id within `dedupeMinWindowSeconds` of the
    /// session's newest event still answers its original seq, also after a reopen; once older, it is forgotten.
    @Test func dedupeKeepsTheTimeWindowBeyondTheCount() throws {
        try withTemporaryDirectory { dir in
            let o = Self.dedupeOptions(dir, ids: 3, seconds: 300, segmentMaxBytes: 8192)
            let t0: Int64 = 1_700_000_000_000
            func at(_ n: Int, _ ms: Int64) -> AppendRequest { TranscriptSeed.event("s", n, timestampMs: ms) }
            var log = try TranscriptLog.open(o)
            // 200 events in one second: far beyond the 3-id count window, all inside the 300 s window.
            for n in 1...200 { _ = try log.append([at(n, t0 + Int64(n))]) }
            #expect(try log.append([at(1, t0 + 500)]) == [.duplicate(seq: 1)], "a retry inside the time window")
            #expect(try log.append([at(150, t0 + 500)]) == [.duplicate(seq: 150)])
            try log.close()
            log = try TranscriptLog.open(o)
            #expect(try log.append([at(2, t0 + 600)]) == [.duplicate(seq: 2)], "rebuilt from the log with its times")
            // 301 s later the old ids are outside the time window, and the count window holds only the newest 3.
            for n in 201...203 { _ = try log.append([at(n, t0 + 301_000 + Int64(n))]) }
            #expect(try log.append([at(3, t0 + 301_300)]) == [.appended(seq: 204)], "forgotten: a new event")
            #expect(try log.append([at(202, t0 + 301_300)]) == [.duplicate(seq: 202)])
            try log.close()
            log = try TranscriptLog.open(o)
            #expect(log.lookup(session: "s", sub: "agent-1", id: "m-4") == nil)
            #expect(log.lookup(session: "s", sub: "agent-1", id: "m-201") == 201)
            try log.close()
        }
    }

    /// Options with a dedupe window of at least `ids` ids and `seconds` seconds, at most `cap` ids.
    static func dedupeOptions(
        _ dir: String, ids: Int, seconds: Int, cap: Int = 1 << 20, segmentMaxBytes: Int = 64 << 20
    ) -> TranscriptLogOptions {
        var o = testOptions(dir, segmentMaxBytes: segmentMaxBytes)
        o.dedupeWindowPerSession = ids
        o.dedupeMinWindowSeconds = seconds
        o.dedupeMaxPerSession = cap
        return o
    }

    /// The per-session cap: at `dedupeMaxPerSession` the oldest id is forgotten even inside the time window.
    @Test func dedupeCapForgetsTheOldestInsideTheTimeWindow() throws {
        try withTemporaryDirectory { dir in
            let log = try TranscriptLog.open(Self.dedupeOptions(dir, ids: 3, seconds: 300, cap: 50))
            for n in 1...100 { _ = try log.append([event("s", n)]) }
            #expect(log.lookup(session: "s", sub: "agent-1", id: "m-50") == nil)
            #expect(log.lookup(session: "s", sub: "agent-1", id: "m-51") == 51)
            try log.close()
        }
    }

    @Test func readIsOrderedAndBounded() throws {
        try withTemporaryDirectory { dir in
            let log = try TranscriptLog.open(testOptions(dir, segmentMaxBytes: 8192))
            var expected: [String: [AppendRequest]] = [:]
            for n in 0..<300 {
                let e = event("s\(n % 3)", n, dataBytes: 20 + n % 90)
                expected[e.session, default: []].append(e)
                _ = try log.append([e])
            }
            let page = try log.read(session: "s1", after: 0, limit: 50)
            #expect(page.records.map(\.seq) == (1...50).map { UInt64($0) })
            #expect(page.head == 100 && page.firstHeld == 1)
            for (i, r) in page.records.enumerated() {
                let e = try #require(expected["s1"]?[i])
                #expect(r == TranscriptRecord(session: "s1", seq: UInt64(i + 1), id: e.id, kind: e.kind, sub: e.sub, role: e.role, timestampMs: e.timestampMs, data: e.data))
            }
            #expect(try log.read(session: "s1", after: 95, limit: 50).records.map(\.seq) == [96, 97, 98, 99, 100])
            #expect(try log.read(session: "s1", after: 100, limit: 50).records.isEmpty)
            #expect(try log.read(session: "s1", after: 500, limit: 50).records.isEmpty)
            #expect(try log.read(session: "s1", after: 10, limit: 0).records.isEmpty)
            let small = try log.read(session: "s1", after: 0, limit: 50, maxBytes: 1)
            #expect(small.records.map(\.seq) == [1])  // at least one record, so a reader always progresses
            let some = try log.read(session: "s1", after: 0, limit: 100, maxBytes: 1000)
            #expect(some.records.count > 1 && some.records.count < 100)
            let unknown = try log.read(session: "nope", after: 0, limit: 10)
            #expect(unknown.records.isEmpty && unknown.head == 0 && unknown.firstHeld == 1)
            try log.close()
            expectError(.closed) { _ = try log.read(session: "s1", after: 0, limit: 1) }
            expectError(.closed) { _ = try log.append([event("s1", 1)]) }
        }
    }

    /// G10: an offline reader takes no lock, ignores a write in progress, and picks up later appends and rolls.
    @Test func readOnlyReaderFollowsAGrowingLog() throws {
        try withTemporaryDirectory { dir in
            let log = try TranscriptLog.open(testOptions(dir, segmentMaxBytes: 4096))
            _ = try log.append((1...3).map { event("s", $0) })
            let path = dir + "/" + segmentFiles(dir)[0]
            let size = fileSize(path)
            // A record being written, in place (the log holds the file open, so no replace-by-rename here).
            let fd = Glibc.open(path, O_WRONLY | O_APPEND)
            #expect(Glibc.write(fd, [UInt8]([0xA7, 0x01, 0x20]), 3) == 3)
            Glibc.close(fd)
            let reader = try TranscriptLog.openReadOnly(directory: dir)
            #expect(reader.head(session: "s") == 3 && reader.recovery.truncatedBytes == 3)
            #expect(fileSize(path) > 0 && readBytes(path).suffix(3) == [0xA7, 0x01, 0x20])  // nothing modified
            #expect(truncate(path, off_t(size)) == 0)
            _ = try log.append((4...60).map { event("s", $0, dataBytes: 100) })  // rolls several segments
            #expect(try reader.refresh() == 57)
            #expect(try readAll(reader, "s").map(\.seq) == (1...60).map { UInt64($0) })
            expectError(.notWritable) { _ = try reader.append([event("s", 61)]) }
            try log.close()
        }
    }

    @Test func recordTooLargeIsRefusedWithoutWriting() throws {
        try withTemporaryDirectory { dir in
            var o = testOptions(dir)
            o.maxRecordBytes = 4096
            let log = try TranscriptLog.open(o)
            expectError(.recordTooLarge) { _ = try log.append([event("s", 1), event("s", 2, dataBytes: 5000)]) }
            #expect(log.head(session: "s") == 0)
            #expect(fileSize(dir + "/" + segmentFiles(dir)[0]) == segmentHeaderSize)
            #expect(try log.append([event("s", 1)]) == [.appended(seq: 1)])
            try log.close()
        }
    }

    @Test func retentionBoundary() throws {
        try withTemporaryDirectory { dir in
            var o = testOptions(dir, segmentMaxBytes: 4096)
            o.retentionMaxTotalBytes = 10_000
            var log = try TranscriptLog.open(o)
            _ = try log.append((1...5).map { event("idle", $0) })  // only in the first segment
            for n in 1...200 { _ = try log.append([event("busy", n, dataBytes: 100)]) }
            let before = segmentFiles(dir)
            let deleted = try log.applyRetention(nowMs: 0)
            #expect(deleted > 0 && deleted == before.count - segmentFiles(dir).count)
            #expect(segmentFiles(dir).last == before.last)  // never the active segment
            let busy = try #require(log.summary(session: "busy"))
            #expect(busy.head == 200 && busy.firstHeld > 1)
            let r = try log.read(session: "busy", after: 0, limit: 1000)
            #expect(r.firstHeld == busy.firstHeld && r.records.first?.seq == busy.firstHeld)
            #expect(r.records.map(\.seq) == (busy.firstHeld...200).map { $0 })
            // A session whose every event was removed keeps its head, so its seqs are never reused.
            let idle = try #require(log.summary(session: "idle"))
            #expect(idle.head == 5 && idle.firstHeld == 6)
            try log.close()
            log = try TranscriptLog.open(o)
            #expect(log.summary(session: "idle")?.head == 5)
            #expect(log.summary(session: "busy")?.firstHeld == busy.firstHeld)
            #expect(try log.append([event("idle", 6)]) == [.appended(seq: 6)])
            #expect(try log.read(session: "idle", after: 0, limit: 10).records.map(\.seq) == [6])
            try log.close()
        }
    }

    @Test func retentionByAge() throws {
        try withTemporaryDirectory { dir in
            var o = testOptions(dir, segmentMaxBytes: 4096)
            o.retentionMaxAgeSeconds = 60
            let log = try TranscriptLog.open(o)
            for n in 1...100 { _ = try log.append([event("s", n, dataBytes: 100)]) }  // times 1_700_000_000_001...
            let t0: Int64 = 1_700_000_000_000
            #expect(try log.applyRetention(nowMs: t0 + 60_000) == 0)  // nothing older than 60 s yet
            let files = segmentFiles(dir).count
            #expect(try log.applyRetention(nowMs: t0 + 1_000_000) == files - 1)  // all but the active one
            #expect(segmentFiles(dir).count == 1)
            try log.close()
        }
    }

    /// A reader never sees a batch whose fdatasync has not returned (design.md: fan-out after commit).
    @Test func concurrentReadsDuringAppend() throws {
        try withTemporaryDirectory { dir in
            let gate = GatedFileIO()
            var o = testOptions(dir, fsync: .always, segmentMaxBytes: 16 << 10)
            o.io = gate
            let log = try TranscriptLog.open(o)
            _ = try log.append([event("s", 1)])
            gate.hold()
            let writer = Thread { _ = try? log.append([event("s", 2), event("s", 3)]) }
            writer.start()
            #expect(gate.waitUntilBlocked())
            #expect(log.head(session: "s") == 1)
            #expect(try log.read(session: "s", after: 0, limit: 10).records.map(\.seq) == [1])
            #expect(log.lookup(session: "s", sub: "agent-1", id: "m-2") == nil)
            gate.release()
            for _ in 0..<1000 where log.head(session: "s") != 3 { usleep(1000) }
            #expect(try log.read(session: "s", after: 0, limit: 10).records.map(\.seq) == [1, 2, 3])

            // Stress: a reader thread checks order, density and bytes while batches and rolls go on.
            let done = Atomic<Bool>(false)
            let problems = Mutex<[String]>([])
            let reader = Thread {
                var reads = 0
                while !done.load(ordering: .acquiring) && reads < 1_000_000 {
                    reads += 1
                    guard let r = try? log.read(session: "s", after: 0, limit: 5000) else {
                        problems.withLock { $0.append("read threw") }
                        return
                    }
                    let seqs = r.records.map(\.seq)
                    if seqs != (0..<UInt64(seqs.count)).map({ $0 + 1 }) || UInt64(seqs.count) > r.head {
                        problems.withLock { $0.append("not dense/ordered: \(seqs.prefix(5))... head \(r.head)") }
                        return
                    }
                    if let bad = r.records.first(where: { $0.data != eventData(Int($0.id.dropFirst(2)) ?? -1, 40) }) {
                        problems.withLock { $0.append("bytes differ at seq \(bad.seq)") }
                        return
                    }
                }
            }
            reader.start()
            var n = 4
            for _ in 0..<300 {
                let size = (n % 7) + 1
                _ = try log.append((n..<(n + size)).map { event("s", $0) })
                n += size
            }
            done.store(true, ordering: .releasing)
            for _ in 0..<5000 where !reader.isFinished { usleep(1000) }
            #expect(reader.isFinished)
            #expect(problems.withLock { $0 } == [])
            #expect(log.head(session: "s") == UInt64(n - 1))
            try log.close()
        }
    }
}

/// Posix I/O whose fdatasync can be held (to observe the log between write and sync).
final class GatedFileIO: FileIO {
    let posix = PosixFileIO()
    let holding = Atomic<Bool>(false)
    let blocked = Atomic<Bool>(false)

    func hold() { holding.store(true, ordering: .releasing) }
    func release() { holding.store(false, ordering: .releasing) }

    func waitUntilBlocked() -> Bool {
        for _ in 0..<5000 {  // up to 5 s
            if blocked.load(ordering: .acquiring) { return true }
            usleep(1000)
        }
        return false
    }

    func fdatasync(_ fd: Int32) throws(FileIOError) {
        var waited = 0
        while holding.load(ordering: .acquiring) && waited < 10_000 {  // bounded: 10 s
            blocked.store(true, ordering: .releasing)
            usleep(1000)
            waited += 1
        }
        blocked.store(false, ordering: .releasing)
        try posix.fdatasync(fd)
    }

    func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 { try posix.open(path, flags: flags, mode: mode) }
    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, offset: Int64) throws(FileIOError) -> Int { try posix.pwrite(fd, bytes, offset: offset) }
    func pread(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(FileIOError) -> Int { try posix.pread(fd, buffer, offset: offset) }
    func ftruncate(_ fd: Int32, length: Int64) throws(FileIOError) { try posix.ftruncate(fd, length: length) }
    func fileSize(_ fd: Int32) throws(FileIOError) -> Int64 { try posix.fileSize(fd) }
    func fsyncDirectory(_ path: String) throws(FileIOError) { try posix.fsyncDirectory(path) }
    func unlink(_ path: String) throws(FileIOError) { try posix.unlink(path) }
    func rename(_ from: String, to: String) throws(FileIOError) { try posix.rename(from, to: to) }
    func makeDirectory(_ path: String) throws(FileIOError) { try posix.makeDirectory(path) }
    func listDirectory(_ path: String) throws(FileIOError) -> [String] { try posix.listDirectory(path) }
    func lockExclusive(_ fd: Int32) throws(FileIOError) { try posix.lockExclusive(fd) }
    func close(_ fd: Int32) { posix.close(fd) }
}
