// Disk full, I/O errors, power cuts, read-only directories and a second process (reliability.md T6-T8, G6, G7).

import Foundation
import Glibc
import Testing
import TranscriptLog

@Suite struct FaultTests {
    /// Checks the log in `dir` holds exactly `acked` (per session, dense from 1) plus at most `maybe` after them.
    static func expectHolds(
        _ log: TranscriptLog, acked: [String: [AppendRequest]], maybe: [String: [AppendRequest]] = [:],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        for (session, events) in acked {
            let records = try readAll(log, session)
            #expect(records.map(\.seq) == (0..<UInt64(records.count)).map { $0 + 1 }, "dense", sourceLocation: sourceLocation)
            #expect(records.count >= events.count, "\(session): \(records.count) < \(events.count) acked", sourceLocation: sourceLocation)
            let allowed = events + (maybe[session] ?? [])
            #expect(records.count <= allowed.count, sourceLocation: sourceLocation)
            for (r, e) in zip(records, allowed) {
                #expect(r.id == e.id && r.data == e.data && r.sub == e.sub, "seq \(r.seq)", sourceLocation: sourceLocation)
            }
        }
    }

    /// Runs `body` with a fresh tmpfs of `megabytes` MiB mounted on a temporary directory (needs `canMount`).
    func withTmpfs(megabytes: Int, _ body: (String) throws -> Void) throws {
        try withTemporaryDirectory { dir in
            guard mount("tmpfs", dir, "tmpfs", 0, "size=\(megabytes)m") == 0 else {
                Issue.record("mount failed: errno \(errno)")
                return
            }
            defer { umount2(dir, Int32(MNT_DETACH)) }
            try body(dir)
        }
    }

    @Test(.enabled(if: canMount, "needs root to mount a 1 MiB tmpfs for a real ENOSPC"))
    func enospc() throws {
        try withTmpfs(megabytes: 1) { dir in
            let filler = dir + "/filler"
            writeBytes(filler, [UInt8](repeating: 1, count: 256 << 10))
            let logDir = dir + "/log"
            let o = testOptions(logDir, fsync: .always, segmentMaxBytes: 256 << 10)
            var log = try TranscriptLog.open(o)
            var acked: [String: [AppendRequest]] = [:]
            var n = 0
            var full: TranscriptError? = nil
            var refused: [AppendRequest] = []
            for _ in 0..<2000 {  // 1 MiB fills long before 2,000 batches of 8 x 600 B
                let batch = (0..<8).map { k in event("s\(k % 2)", n + k, dataBytes: 600) }
                refused = batch
                switch Result(catching: { () throws(TranscriptError) in try log.append(batch) }) {
                case .success:
                    for e in batch { acked[e.session, default: []].append(e) }
                    n += 8
                case .failure(let e):
                    full = e
                }
                if full != nil { break }
            }
            #expect(full?.code == .diskFull && full?.errno == ENOSPC, "\(String(describing: full))")
            // The file ends on a record boundary, and reads still work.
            let v = try TranscriptLog.verify(directory: logDir)
            #expect(v.damage.isEmpty && v.recovery.truncatedBytes == 0)
            try Self.expectHolds(log, acked: acked)
            expectError(.diskFull) { _ = try log.append(refused) }  // the publisher's retry: still full, still usable
            try FileManager.default.removeItem(atPath: filler)
            let out = try log.append([event("s0", 100_001)])
            acked["s0", default: []].append(event("s0", 100_001))
            #expect(out == [.appended(seq: UInt64(acked["s0"]!.count))])
            try log.close()
            log = try TranscriptLog.open(o)
            #expect(log.recovery.truncatedBytes == 0)
            try Self.expectHolds(log, acked: acked)
            try log.close()
        }
    }

    /// G18: retention frees a full disk. Idle sessions' last events are in the oldest segments (so deleting those
    /// needs head markers); the disk is filled until not even a one-byte event fits. Retention then still deletes
    /// (the markers go into the space the `RESERVE` file held), appends succeed again, and after a reopen every
    /// acked event that retention kept is there, no removed one is back, and no seq is reused.
    static func retentionFreesFullDisk(
        _ o: TranscriptLogOptions, fill: () -> Void, segmentCount: () throws -> Int
    ) throws {
        var log = try TranscriptLog.open(o)
        #expect(log.retentionReserveHeld == o.retentionReserveBytes)
        let idle = (0..<20).map { event("idle\($0)", $0 + 1) }
        _ = try log.append(idle)
        fill()
        var acked: [String: [AppendRequest]] = [:]
        var n = 100
        var full = false
        for _ in 0..<20_000 {  // bounded: the disk fills long before
            let batch = (0..<4).map { k in event("b\(k % 2)", n + k, dataBytes: 400) }
            switch Result(catching: { () throws(TranscriptError) in try log.append(batch) }) {
            case .success:
                for e in batch { acked[e.session, default: []].append(e) }
                n += 4
            case .failure(let e):
                #expect(e.code == .diskFull, "\(e)")
                full = true
            }
            if full { break }
        }
        #expect(full)
        for _ in 0..<20_000 {  // then single tiny events until not even one fits
            let e = event("b0", n, dataBytes: 1)
            guard (try? log.append([e])) != nil else { break }
            acked["b0", default: []].append(e)
            n += 1
        }
        expectError(.diskFull) { _ = try log.append([event("b1", n, dataBytes: 1)]) }
        let segments = try segmentCount()
        let deleted = try log.applyRetention(nowMs: 1_700_000_000_000 + 100_000_000)
        #expect(deleted == segments - 1)
        let next = event("b1", n + 1, dataBytes: 400)
        #expect(try log.append([next]) == [.appended(seq: UInt64(acked["b1", default: []].count + 1))])
        acked["b1", default: []].append(next)
        #expect(log.retentionReserveHeld == o.retentionReserveBytes)  // filled again from the space freed
        try log.close()
        log = try TranscriptLog.open(o)
        for i in 0..<20 {
            let s = try #require(log.summary(session: "idle\(i)"))
            #expect(s.head == 1 && s.firstHeld == 2)  // its head is kept; its removed event stays removed
        }
        for (session, events) in acked {
            let r = try readAll(log, session)
            #expect(log.head(session: session) == UInt64(events.count), "nothing acked after the cut is lost")
            let kept = Array(events.suffix(r.count))
            #expect(r.map(\.id) == kept.map(\.id) && r.first?.seq == UInt64(events.count - r.count + 1))
        }
        let again = try log.append([event("idle0", 99_999)])
        #expect(again == [.appended(seq: 2)])  // seq 1 is never reused
        try log.close()
    }

    @Test func retentionFreesAFullDiskInMemory() throws {
        let io = MemoryFileIO(directories: ["/mem"])
        var o = testOptions("/mem/log", fsync: .always, segmentMaxBytes: 16 << 10)
        o.io = io
        o.retentionMaxAgeSeconds = 3600
        o.retentionReserveBytes = 8 << 10
        try Self.retentionFreesFullDisk(o, fill: { io.setCapacity(io.usedBytes() + (160 << 10)) }) {
            try io.listDirectory("/mem/log").filter { $0.hasSuffix(".tlog") }.count
        }
    }

    @Test(.enabled(if: canMount, "needs root to mount a 1 MiB tmpfs for a real ENOSPC"))
    func retentionFreesAFullTmpfs() throws {
        try withTmpfs(megabytes: 1) { dir in
            var o = testOptions(dir + "/log", fsync: .always, segmentMaxBytes: 64 << 10)
            o.retentionMaxAgeSeconds = 3600
            o.retentionReserveBytes = 16 << 10
            try Self.retentionFreesFullDisk(o, fill: {}) { segmentFiles(o.directory).count }
        }
    }

    /// G7: an I/O error on write or fdatasync is never acknowledged, and the log refuses writes until reopened.
    @Test(arguments: ["pwrite", "fdatasync"])
    func eioOnWriteAndFsync(operation: String) throws {
        for failAt in 1...20 {
            let io = MemoryFileIO(directories: ["/mem"])
            var o = testOptions("/mem/log", fsync: .always, segmentMaxBytes: 4096)
            o.io = io
            o.indexCheckpoints = false  // every pwrite/fdatasync counted is the log's own (checkpoints: CheckpointTests)
            var log = try TranscriptLog.open(o)
            io.inject(operation, after: failAt, errno: EIO)
            var acked: [String: [AppendRequest]] = [:]
            var failed: [String: [AppendRequest]] = [:]
            var n = 0
            for _ in 0..<100 {
                let batch = (0..<3).map { event("s\($0 % 2)", n + $0, dataBytes: 200) }
                n += 3
                switch Result(catching: { () throws(TranscriptError) in try log.append(batch) }) {
                case .success:
                    for e in batch { acked[e.session, default: []].append(e) }
                case .failure(let error):
                    #expect(error.code == .ioError && error.errno == EIO, "\(error)")
                    for e in batch { failed[e.session, default: []].append(e) }
                }
                if !failed.isEmpty { break }
            }
            #expect(!failed.isEmpty, "fault \(operation) #\(failAt) never fired")
            // No retry that pretends: everything after the failure is refused, even though the disk now works.
            expectError(.failed) { _ = try log.append([event("s0", 9999)]) }
            expectError(.failed) { try log.sync() }
            try Self.expectHolds(log, acked: acked)  // reads keep working, without the failed batch
            try? log.close()
            // "Not stored" stays true: the failed batch was cut off the file (and the cut synced), so neither a
            // crash (the page cache stays) nor a power cut brings it back.
            io.processCrash()
            log = try TranscriptLog.open(o)
            try Self.expectHolds(log, acked: acked)
            for (session, events) in failed {
                #expect(log.head(session: session) == UInt64(acked[session]?.count ?? 0), "\(session): refused batch came back")
                for e in events { #expect(log.lookup(session: session, sub: e.sub, id: e.id) == nil) }
            }
            var rng = SeededGenerator(seed: UInt64(failAt))
            io.powerCut(tear: false, using: &rng)
            log = try TranscriptLog.open(o)
            try Self.expectHolds(log, acked: acked)
            _ = try log.append([event("s0", 10_000)])
            try log.close()
        }
    }

    /// A failed fdatasync whose cut-back fails too (the truncate, or the fdatasync that makes it durable): the
    /// batch may be in the file, so the log says `.outcomeUnknown` (never "not stored") and is failed.
    @Test(arguments: ["ftruncate", "fdatasync"])
    func failedCutBackIsOutcomeUnknown(operation: String) throws {
        let io = MemoryFileIO(directories: ["/mem"])
        var o = testOptions("/mem/log", fsync: .always)
        o.io = io
        var log = try TranscriptLog.open(o)
        _ = try log.append([event("s", 1)])
        io.inject("fdatasync", errno: EIO)
        io.inject(operation, errno: EIO)  // the cut's ftruncate, or its fdatasync (the second fault of the batch)
        expectError(.outcomeUnknown) { _ = try log.append([event("s", 2)]) }
        expectError(.failed) { _ = try log.append([event("s", 3)]) }
        #expect(log.head(session: "s") == 1, "nothing unsure is ever visible")
        try? log.close()
        io.processCrash()
        io.clearFaults()
        log = try TranscriptLog.open(o)
        // What the reopen finds decides, and nobody was told otherwise: after a failed truncate the page cache kept
        // the batch; after a truncate whose sync failed, a crash keeps the cut.
        #expect(log.head(session: "s") == (operation == "ftruncate" ? 2 : 1))
        try log.close()
    }

    /// T8: at a power cut everything not synced is lost (and the unsynced tail may be torn); every acked event survives.
    @Test func simulatedPowerCut() throws {
        var rng = SeededGenerator(seed: 0x5EED)
        let io = MemoryFileIO(directories: ["/mem"])
        var o = testOptions("/mem/log", fsync: .always, segmentMaxBytes: 8192)
        o.io = io
        var acked: [String: [AppendRequest]] = [:]
        var n = 0
        for round in 0..<40 {
            var log = try TranscriptLog.open(o)
            var pending: [String: [AppendRequest]] = [:]
            for _ in 0..<Int.random(in: 1...20, using: &rng) {
                let batch = (0..<Int.random(in: 1...10, using: &rng)).map { k in event("s\((n + k) % 3)", n + k, dataBytes: Int.random(in: 10...300, using: &rng)) }
                n += batch.count
                _ = try log.append(batch)
                for e in batch { acked[e.session, default: []].append(e) }
            }
            // The last batch is written but its fdatasync never happens: not acknowledged.
            io.inject("fdatasync", errno: EIO)
            let lost = (0..<5).map { k in event("s\((n + k) % 3)", n + k) }
            n += 5
            _ = try? log.append(lost)
            for e in lost { pending[e.session, default: []].append(e) }
            io.powerCut(tear: round % 2 == 0, using: &rng)
            io.clearFaults()
            log = try TranscriptLog.open(o)
            try Self.expectHolds(log, acked: acked, maybe: pending)
            // Un-acked events that survived whole are now part of the log: the model adopts them.
            for (s, events) in pending {
                let have = Int(log.head(session: s))
                let extra = have - (acked[s]?.count ?? 0)
                acked[s, default: []] += events.prefix(max(0, extra))
            }
            try log.close()
        }
    }

    /// The interval policy: acknowledged events since the last sync may vanish at a power cut, never on a crash.
    @Test func intervalPolicyLosesOnlyUnsyncedOnPowerCut() throws {
        var rng = SeededGenerator(seed: 11)
        let io = MemoryFileIO(directories: ["/mem"])
        var o = testOptions("/mem/log", fsync: .interval(milliseconds: 60_000))
        o.io = io
        var log = try TranscriptLog.open(o)
        _ = try log.append((1...5).map { event("s", $0) })
        try log.sync()
        _ = try log.append((6...9).map { event("s", $0) })
        io.processCrash()
        log = try TranscriptLog.open(o)
        #expect(log.head(session: "s") == 9)  // kill -9: the page cache keeps everything written
        _ = try log.append((10...12).map { event("s", $0) })
        io.powerCut(tear: false, using: &rng)
        log = try TranscriptLog.open(o)
        #expect(log.head(session: "s") == 9)  // power cut: back to the last sync (open truncated and synced 1...9)
        try log.close()
    }

    @Test(.enabled(if: geteuid() != 0 || canMount, "needs a read-only bind mount (root) or a non-root user"))
    func readOnlyDirectory() throws {
        try withTemporaryDirectory { dir in
            let logDir = dir + "/log"
            var log = try TranscriptLog.open(testOptions(logDir))
            _ = try log.append([event("s", 1)])
            try log.close()
            let empty = dir + "/empty"
            mkdir(empty, 0o755)
            if geteuid() == 0 {
                for d in [logDir, empty] {
                    #expect(mount(d, d, nil, UInt(MS_BIND), nil) == 0)
                    #expect(mount(nil, d, nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY), nil) == 0)
                }
            } else {
                chmod(logDir, 0o555)
                chmod(empty, 0o555)
            }
            defer {
                umount2(logDir, Int32(MNT_DETACH))
                umount2(empty, Int32(MNT_DETACH))
                chmod(logDir, 0o755)
                chmod(empty, 0o755)
            }
            expectError(.readOnly) { _ = try TranscriptLog.open(testOptions(logDir)) }
            expectError(.readOnly) { _ = try TranscriptLog.open(testOptions(empty)) }
            log = try TranscriptLog.openReadOnly(directory: logDir)  // offline tools still read it
            #expect(try log.read(session: "s", after: 0, limit: 10).records.map(\.seq) == [1])
            expectError(.notWritable) { _ = try log.append([event("s", 2)]) }
        }
    }

    @Test func twoProcessesOneDirectory() throws {
        try withTemporaryDirectory { dir in
            let log = try TranscriptLog.open(testOptions(dir))
            // In this process: a second open is a second open file description, so flock conflicts.
            expectError(.locked) { _ = try TranscriptLog.open(testOptions(dir)) }
            // Another process cannot take the lock while we hold it...
            #expect(try run("/usr/bin/flock", ["-n", dir + "/LOCK", "true"]) == 1)
            try log.close()
            #expect(try run("/usr/bin/flock", ["-n", dir + "/LOCK", "true"]) == 0)
            // ...and while another process holds it, open fails with .locked.
            let holder = Process()
            holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
            // The holder waits on its stdin; closing it ends the holder (and its shell child) at once.
            holder.arguments = ["-n", dir + "/LOCK", "-c", "echo held; read line"]
            let pipe = Pipe()
            let input = Pipe()
            holder.standardOutput = pipe
            holder.standardInput = input
            try holder.run()
            defer {
                try? input.fileHandleForWriting.close()
                holder.waitUntilExit()
            }
            let line = String(decoding: pipe.fileHandleForReading.availableData, as: UTF8.self)
            #expect(line.hasPrefix("held"))
            expectError(.locked) { _ = try TranscriptLog.open(testOptions(dir)) }
            // A reader needs no lock (G10).
            #expect(try TranscriptLog.openReadOnly(directory: dir).head(session: "s") == 0)
        }
    }

    func run(_ path: String, _ args: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }
}
