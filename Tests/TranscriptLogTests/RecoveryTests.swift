// Recovery, named for the failure each test proves (LevelDB log_test.cc style; reliability.md T2-T5, G2, G4, G5).

import Foundation
import Testing
import TranscriptLog

@Suite struct RecoveryTests {
    /// Writes `count` events of session "s" one per append and returns each record's start offset in segment 1.
    func writeLog(_ dir: String, count: Int, dataBytes: Int = 40) throws -> [Int] {
        let log = try TranscriptLog.open(testOptions(dir))
        var offsets: [Int] = []
        var offset = segmentHeaderSize
        for n in 1...count {
            let e = event("s", n, dataBytes: dataBytes)
            offsets.append(offset)
            offset += recordSize(e)
            #expect(try log.append([e]) == [.appended(seq: UInt64(n))])
        }
        try log.close()
        #expect(fileSize(dir + "/" + segmentFiles(dir)[0]) == offset)
        return offsets + [offset]
    }

    @Test func truncatedTrailingRecord() throws {
        try withTemporaryDirectory { dir in
            let bounds = try writeLog(dir, count: 5)
            let path = dir + "/" + segmentFiles(dir)[0]
            let original = readBytes(path)
            let lastStart = bounds[4]
            let epoch = try TranscriptLog.openReadOnly(directory: dir).epoch
            // Every cut inside the last record, from "header only partly written" to "one byte missing".
            for cut in lastStart..<bounds[5] {
                writeBytes(path, Array(original.prefix(cut)))
                let log = try TranscriptLog.open(testOptions(dir))
                #expect(log.recovery.truncatedBytes == cut - lastStart, "cut \(cut)")
                #expect(log.recovery.damagedRecords == 0)
                #expect(log.head(session: "s") == 4)
                #expect(log.epoch == epoch)
                #expect(fileSize(path) == lastStart)
                #expect(try log.append([event("s", 99)]) == [.appended(seq: 5)])
                try log.close()
            }
        }
    }

    @Test func checksumMismatchInMiddle() throws {
        try withTemporaryDirectory { dir in
            let bounds = try writeLog(dir, count: 10)
            let name = segmentFiles(dir)[0]
            let path = dir + "/" + name
            var bytes = readBytes(path)
            bytes[bounds[2] + 30] ^= 0x10  // one bit inside record 3's payload
            writeBytes(path, bytes)
            let error = expectError(.corrupted) { _ = try TranscriptLog.open(testOptions(dir)) }
            #expect(error?.segment == name && error?.offset == bounds[2])
            let report = try TranscriptLog.verify(directory: dir)
            #expect(report.damage.map(\.offset) == [bounds[2]])
            #expect(report.damage.first?.length == bounds[3] - bounds[2])
            // Skipping is the operator's explicit choice: the damaged record is never served.
            var o = testOptions(dir)
            o.skipDamagedRecords = true
            let log = try TranscriptLog.open(o)
            #expect(log.recovery.damagedRecords == 1)
            #expect(log.recovery.skippedBytes == bounds[3] - bounds[2])
            let seqs = try readAll(log, "s").map(\.seq)
            #expect(seqs == [1, 2, 4, 5, 6, 7, 8, 9, 10])
            #expect(try log.append([event("s", 11)]) == [.appended(seq: 11)])
            try log.close()
        }
    }

    @Test func bitFlipInLengthField() throws {
        try withTemporaryDirectory { dir in
            let bounds = try writeLog(dir, count: 6)
            let path = dir + "/" + segmentFiles(dir)[0]
            let original = readBytes(path)
            // Middle record: length 0xFFFFFFFF is corruption, and nothing of that size is allocated.
            var bytes = original
            for i in 0..<4 { bytes[bounds[3] + 2 + i] = 0xFF }
            writeBytes(path, bytes)
            let e = expectError(.corrupted) { _ = try TranscriptLog.open(testOptions(dir)) }
            #expect(e?.offset == bounds[3])
            // Single flipped bit of the length in the middle: also detected.
            bytes = original
            bytes[bounds[1] + 3] ^= 0x01
            writeBytes(path, bytes)
            expectError(.corrupted) { _ = try TranscriptLog.open(testOptions(dir)) }
            // Last record: same damage is a torn tail, truncated.
            bytes = original
            for i in 0..<4 { bytes[bounds[5] + 2 + i] = 0xFF }
            writeBytes(path, bytes)
            let log = try TranscriptLog.open(testOptions(dir))
            #expect(log.head(session: "s") == 5)
            #expect(log.recovery.truncatedBytes == bounds[6] - bounds[5])
            try log.close()
        }
    }

    @Test(arguments: [1, 17, 4096])
    func zeroFilledTail(zeros: Int) throws {
        try withTemporaryDirectory { dir in
            let bounds = try writeLog(dir, count: 4)
            let path = dir + "/" + segmentFiles(dir)[0]
            writeBytes(path, readBytes(path) + [UInt8](repeating: 0, count: zeros))
            let log = try TranscriptLog.open(testOptions(dir))
            #expect(log.recovery.truncatedBytes == zeros)
            #expect(fileSize(path) == bounds[4])
            #expect(try log.append([event("s", 5)]) == [.appended(seq: 5)])
            try log.close()
        }
    }

    @Test func garbageTail() throws {
        try withTemporaryDirectory { dir in
            let bounds = try writeLog(dir, count: 4)
            let path = dir + "/" + segmentFiles(dir)[0]
            let original = readBytes(path)
            var rng = SeededGenerator(seed: 42)
            for round in 0..<20 {
                let count = Int.random(in: 1...4096, using: &rng)
                var garbage = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if round % 2 == 0 { garbage[0] = 0xA7 }  // starts like a record, then nonsense
                if round % 4 == 0 && count > 1 { garbage[1] = 0x01 }
                writeBytes(path, original + garbage)
                let log = try TranscriptLog.open(testOptions(dir))
                #expect(log.recovery.truncatedBytes == count, "round \(round)")
                #expect(fileSize(path) == bounds[4])
                #expect(log.head(session: "s") == 4)
                try log.close()
            }
        }
    }

    @Test func segmentRollBoundary() throws {
        try withTemporaryDirectory { dir in
            var o = testOptions(dir, segmentMaxBytes: 4096)
            o.fsync = .always
            var log = try TranscriptLog.open(o)
            var n = 0
            for size in [1, 7, 1, 30, 2, 1, 64, 5] {  // batches of mixed sizes, 120-byte events
                let batch = (0..<size).map { k in event("s", n + k + 1, dataBytes: 60) }
                #expect(try log.append(batch).map(\.seq) == (n + 1...n + size).map { UInt64($0) })
                n += size
            }
            let files = segmentFiles(dir)
            #expect(files.count >= 4)
            #expect(files.first == "0000000000000001.tlog")
            // A batch never straddles segments; a segment exceeds the limit by at most one batch.
            for f in files.dropLast() { #expect(fileSize(dir + "/" + f) <= 4096 + 64 * 200) }
            #expect(try readAll(log, "s").map(\.seq) == (1...n).map { UInt64($0) })
            try log.close()
            log = try TranscriptLog.open(o)
            #expect(try readAll(log, "s").map(\.seq) == (1...n).map { UInt64($0) })
            try log.close()
            // A crash while creating the next segment (header torn) loses nothing acknowledged.
            let next = String(format: "%016x.tlog", files.count + 1)
            writeBytes(dir + "/" + next, Array(readBytes(dir + "/" + files[0]).prefix(40)))
            log = try TranscriptLog.open(o)
            #expect(log.head(session: "s") == UInt64(n))
            #expect(log.recovery.truncatedBytes == 40)
            #expect(try log.append([event("s", 1000)]) == [.appended(seq: UInt64(n + 1))])
            try log.close()
            // A damaged header on a middle segment is corruption.
            let middle = dir + "/" + files[1]
            var bytes = readBytes(middle)
            bytes[20] ^= 0x04
            writeBytes(middle, bytes)
            let e = expectError(.corrupted) { _ = try TranscriptLog.open(o) }
            #expect(e?.segment == files[1] && e?.offset == 0)
        }
    }

    @Test func reopenAndAppendContinuesSeq() throws {
        try withTemporaryDirectory { dir in
            var log = try TranscriptLog.open(testOptions(dir, segmentMaxBytes: 4096))
            for n in 0..<60 { _ = try log.append([event("s\(n % 3)", n)]) }
            #expect(log.head(session: "s0") == 20)
            try log.close()
            for round in 1...3 {
                log = try TranscriptLog.open(testOptions(dir, segmentMaxBytes: 4096))
                #expect(log.sessions().map(\.head) == [UInt64](repeating: UInt64(19 + round), count: 3))
                let out = try log.append((0..<3).map { event("s\($0)", 1000 * round + $0) })
                #expect(out == [UInt64](repeating: UInt64(20 + round), count: 3).map { .appended(seq: $0) })
                try log.close()
            }
            log = try TranscriptLog.open(testOptions(dir))
            for s in ["s0", "s1", "s2"] { #expect(try readAll(log, s).map(\.seq) == (1...23).map { UInt64($0) }) }
            try log.close()
        }
    }

    @Test func epochSurvivesReopenAndTornTail() throws {
        try withTemporaryDirectory { dir in
            var log = try TranscriptLog.open(testOptions(dir))
            let epoch = log.epoch
            #expect(epoch.count == 16 && epoch.allSatisfy { $0.isHexDigit && !$0.isUppercase })
            _ = try log.append([event("s", 1), event("s", 2)])
            try log.close()
            log = try TranscriptLog.open(testOptions(dir))
            #expect(log.epoch == epoch)
            try log.close()
            let path = dir + "/" + segmentFiles(dir)[0]
            writeBytes(path, readBytes(path).dropLast(5))  // tear the last record
            log = try TranscriptLog.open(testOptions(dir))
            #expect(log.epoch == epoch && log.head(session: "s") == 1)
            try log.close()
            // A log created anew gets a new epoch.
            for f in segmentFiles(dir) { try FileManager.default.removeItem(atPath: dir + "/" + f) }
            log = try TranscriptLog.open(testOptions(dir))
            #expect(log.epoch != epoch && log.head(session: "s") == 0)
            try log.close()
        }
    }

    @Test func epochChangesOnRepair() throws {
        try withTemporaryDirectory { dir in
            let o = testOptions(dir, segmentMaxBytes: 4096)
            var log = try TranscriptLog.open(o)
            for n in 1...100 { _ = try log.append([event("s", n, dataBytes: 100)]) }
            let epoch = log.epoch
            try log.close()
            #expect(try TranscriptLog.repair(directory: dir).repaired == false)  // sound log: nothing changes
            let files = segmentFiles(dir)
            #expect(files.count > 3)
            let damaged = dir + "/" + files[1]
            var bytes = readBytes(damaged)
            bytes[segmentHeaderSize + 25] ^= 0x80  // first record of segment 2
            writeBytes(damaged, bytes)
            let firstInSegment2 = UInt64(recordOffsets(dir + "/" + files[0]).count + 1)
            var scan = o
            scan.indexCheckpoints = false
            expectError(.corrupted) { _ = try TranscriptLog.open(scan) }
            // With checkpoints open does not re-read sealed segments (G17), but the altered record is never served.
            let checkpointed = try TranscriptLog.open(o)
            expectError(.corrupted) { _ = try readAll(checkpointed, "s") }
            try checkpointed.close()
            let report = try TranscriptLog.repair(directory: dir)
            #expect(report.repaired && report.oldEpoch == epoch && report.newEpoch != epoch)
            #expect(report.cutSegment == files[1] && report.cutOffset == segmentHeaderSize)
            log = try TranscriptLog.open(o)
            #expect(log.epoch == report.newEpoch)
            #expect(log.head(session: "s") == firstInSegment2 - 1)
            #expect(try readAll(log, "s").map(\.seq) == (1..<firstInSegment2).map { UInt64($0) })
            #expect(try log.append([event("s", 500)]) == [.appended(seq: firstInSegment2)])
            try log.close()
            log = try TranscriptLog.open(o)
            #expect(log.epoch == report.newEpoch)
            try log.close()
        }
    }
}
