// Index checkpoints of sealed segments (docs/transcript-format.md, "Index checkpoints"; reliability.md G17):
// open uses them instead of scanning, and a damaged, stale or missing one never changes what is recovered.

import Foundation
import Glibc
import Testing
import TranscriptLog

@Suite struct CheckpointTests {
    /// Everything open rebuilds, as the API shows it: every session's summary, every record, the dedupe window.
    struct State: Equatable {
        var sessions: [SessionSummary]
        var records: [String: [String]]
        var duplicates: [String: [UInt64?]]
        var recordsRecovered: Int
    }

    static func state(_ log: TranscriptLog, ids: [String: [String]]) throws -> State {
        var records: [String: [String]] = [:]
        var duplicates: [String: [UInt64?]] = [:]
        for s in log.sessions() {
            records[s.session] = try readAll(log, s.session).map { "\($0.seq) \($0.id) \($0.timestampMs) \($0.data.count)" }
            duplicates[s.session] = (ids[s.session] ?? []).map { log.lookup(session: s.session, sub: "agent-1", id: $0) }
        }
        return State(
            sessions: log.sessions(), records: records, duplicates: duplicates, recordsRecovered: log.recovery.recordsScanned)
    }

    /// A log of many small segments: 7 sessions at different rates, an idle one, head markers from retention
    /// inside sealed segments, then more events. - Returns: the ids published per session.
    static func build(_ dir: String) throws -> [String: [String]] {
        var o = testOptions(dir, segmentMaxBytes: 8 << 10)
        o.retentionMaxTotalBytes = 48 << 10
        o.dedupeWindowPerSession = 50
        o.dedupeMinWindowSeconds = 0
        let log = try TranscriptLog.open(o)
        var ids: [String: [String]] = [:]
        var n = 0
        for round in 0..<200 {
            var batch: [AppendRequest] = []
            for k in 0..<7 where round % (k + 1) == 0 || k == 0 {
                n += 1
                batch.append(event("s\(k)", n, dataBytes: 60 + (n % 90)))
            }
            if round < 3 { batch.append(event("idle", n + 1000)) }
            for e in batch { ids[e.session, default: []].append(e.id) }
            _ = try log.append(batch)
            if round % 50 == 49 { _ = try log.applyRetention(nowMs: 0) }  // head markers for "idle" and slow sessions
        }
        try log.close()
        return ids
    }

    static func fullScan(_ dir: String) throws -> TranscriptLog {
        var o = testOptions(dir)
        o.indexCheckpoints = false
        o.dedupeWindowPerSession = 50
        o.dedupeMinWindowSeconds = 0
        return try TranscriptLog.open(o)
    }

    static func withCheckpoints(_ dir: String) throws -> TranscriptLog {
        var o = testOptions(dir)
        o.dedupeWindowPerSession = 50
        o.dedupeMinWindowSeconds = 0
        return try TranscriptLog.open(o)
    }

    static func checkpointFiles(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".tidx") }.sorted()
    }

    /// Every sealed segment gets a checkpoint when it is rolled, and open then scans only the active segment,
    /// recovering exactly what a full scan recovers (head markers included).
    @Test func openUsesCheckpointsAndRecoversWhatAScanRecovers() throws {
        try withTemporaryDirectory { dir in
            let ids = try Self.build(dir)
            let segments = segmentFiles(dir)
            #expect(segments.count > 4)
            #expect(Self.checkpointFiles(dir) == segments.dropLast().map { $0.replacingOccurrences(of: ".tlog", with: ".tidx") })
            let scan = try Self.fullScan(dir)
            #expect(scan.recovery.segmentsScanned == segments.count && scan.recovery.segmentsFromCheckpoint == 0)
            let expected = try Self.state(scan, ids: ids)
            try scan.close()
            #expect(expected.sessions.contains { $0.session == "idle" && $0.head == 3 && $0.firstHeld == 4 })
            let log = try Self.withCheckpoints(dir)
            #expect(log.recovery.segmentsScanned == 1 && log.recovery.segmentsFromCheckpoint == segments.count - 1)
            #expect(try Self.state(log, ids: ids) == expected)
            // And the recovered log goes on like the scanned one: seqs continue, retries are duplicates.
            let head = log.head(session: "s0")
            let retry = event("s0", 0, dataBytes: 10)
            let last = try #require(ids["s0"]?.last)
            let out = try log.append([AppendRequest(
                session: "s0", id: last, kind: retry.kind, sub: "agent-1", role: retry.role, timestampMs: retry.timestampMs,
                data: retry.data), retry])
            #expect(out == [.duplicate(seq: head), .appended(seq: head + 1)])
            try log.close()
        }
    }

    /// A checkpoint with any byte altered, cut short, missing, emptied, or describing another segment is not used:
    /// that segment is scanned, the recovered state is the full scan's, and the checkpoint is written again.
    @Test(arguments: ["flip-first", "flip-middle", "flip-last", "truncate", "delete", "empty", "stale"])
    func damagedOrMissingCheckpointChangesNothing(damage: String) throws {
        try withTemporaryDirectory { dir in
            let ids = try Self.build(dir)
            let scan = try Self.fullScan(dir)
            let expected = try Self.state(scan, ids: ids)
            try scan.close()
            let files = Self.checkpointFiles(dir)
            try #require(files.count >= 3)
            let victim = dir + "/" + files[1]
            var bytes = readBytes(victim)
            switch damage {
            case "flip-first": bytes[0] ^= 0x01
            case "flip-middle": bytes[bytes.count / 2] ^= 0x40
            case "flip-last": bytes[bytes.count - 1] ^= 0x80
            case "truncate": bytes.removeLast(5)
            case "empty": bytes = []
            case "stale": bytes = readBytes(dir + "/" + files[2])  // sound, but another segment's
            default: break
            }
            if damage == "delete" { unlink(victim) } else { writeBytes(victim, bytes) }
            let log = try Self.withCheckpoints(dir)
            #expect(log.recovery.segmentsScanned == 2 && log.recovery.checkpointsWritten == 1)
            #expect(try Self.state(log, ids: ids) == expected)
            try log.close()
            // The rewritten checkpoint is sound: the next open scans only the active segment.
            let again = try Self.withCheckpoints(dir)
            #expect(again.recovery.segmentsScanned == 1 && again.recovery.checkpointsWritten == 0)
            #expect(try Self.state(again, ids: ids) == expected)
            try again.close()
        }
    }

    /// A log written before checkpoints existed (or with them off) gets them at its first open with them on.
    @Test func missingCheckpointsAreWrittenAtOpen() throws {
        try withTemporaryDirectory { dir in
            var o = testOptions(dir, segmentMaxBytes: 8 << 10)
            o.indexCheckpoints = false
            let log = try TranscriptLog.open(o)
            for n in 1...300 { _ = try log.append([event("s\(n % 3)", n)]) }
            try log.close()
            #expect(Self.checkpointFiles(dir).isEmpty)
            let segments = segmentFiles(dir).count
            o.indexCheckpoints = true
            let first = try TranscriptLog.open(o)
            #expect(first.recovery.checkpointsWritten == segments - 1 && first.recovery.segmentsScanned == segments)
            try first.close()
            let second = try TranscriptLog.open(o)
            #expect(second.recovery.segmentsFromCheckpoint == segments - 1 && second.recovery.segmentsScanned == 1)
            #expect(try readAll(second, "s1").map(\.seq) == (1...100).map { UInt64($0) })
            try second.close()
        }
    }

    /// Retention removes a segment's checkpoint with it; an orphaned checkpoint or a half-written one is removed at
    /// open.
    @Test func retentionAndOpenRemoveCheckpointsOfRemovedSegments() throws {
        try withTemporaryDirectory { dir in
            var o = testOptions(dir, segmentMaxBytes: 8 << 10)
            o.retentionMaxAgeSeconds = 1
            let log = try TranscriptLog.open(o)
            for n in 1...400 { _ = try log.append([event("s", n)]) }
            let deleted = try log.applyRetention(nowMs: 1_700_000_000_000 + 1_000_000_000)
            #expect(deleted > 0)
            try log.close()
            #expect(Self.checkpointFiles(dir).isEmpty)  // only the active segment is left
            writeBytes(dir + "/0000000000000001.tidx", [1, 2, 3])
            writeBytes(dir + "/00000000000000ff.tidx.tmp", [1, 2, 3])
            let again = try TranscriptLog.open(o)
            #expect(Self.checkpointFiles(dir).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: dir + "/00000000000000ff.tidx.tmp"))
            try again.close()
        }
    }

    /// A checkpoint that cannot be written (here its rename fails with EIO) costs nothing but time: the append that
    /// rolled succeeds, the failure is counted, no temporary file stays, and the next open scans that segment.
    @Test func failedCheckpointWriteIsCountedAndHarmless() throws {
        let io = MemoryFileIO(directories: ["/mem"])
        var o = testOptions("/mem/log", fsync: .always, segmentMaxBytes: 4096)
        o.io = io
        let log = try TranscriptLog.open(o)  // rename 1: segment 1
        io.inject("rename", after: 1, errno: EIO)  // next renames: segment 2, then the checkpoint of segment 1
        var n = 0
        // Bounded: 60 events of ~110 bytes fill more than two 4 KiB segments.
        while log.checkpointWriteFailures == 0 && n < 60 {
            n += 1
            #expect(try log.append([event("s", n)]) == [.appended(seq: UInt64(n))])
        }
        #expect(log.checkpointWriteFailures == 1)
        for _ in 0..<60 { n += 1; _ = try log.append([event("s", n)]) }
        try log.close()
        let names = try io.listDirectory("/mem/log")
        #expect(!names.contains { $0.hasSuffix(".tmp") })
        #expect(!names.contains("0000000000000001.tidx") && names.contains("0000000000000002.tidx"))
        let again = try TranscriptLog.open(o)
        #expect(again.recovery.segmentsScanned == 2 && again.recovery.checkpointsWritten == 1)
        #expect(try readAll(again, "s").map(\.seq) == (1...n).map { UInt64($0) })
        try again.close()
    }
}
