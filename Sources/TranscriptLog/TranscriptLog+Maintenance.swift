// Retention, the read-only mode for offline tools, verify and repair (docs/transcript-format.md,
// "Recovery" and "Retention and head markers").

import Glibc
import Synchronization

extension TranscriptLog {
    // MARK: Retention

    /// Deletes whole segments, oldest first, never the active one, per `retentionMaxAgeSeconds` and
    /// `retentionMaxTotalBytes`. One segment at a time: the sessions whose newest record is in it get a head marker
    /// first (synced), so their seqs are never reused after a restart, then the segment and its checkpoint are
    /// unlinked and the directory synced. If the disk is too full for the markers, the `RESERVE` file is released
    /// and the markers written once more into the space it held; it is filled again after the unlinks.
    /// - Parameter nowMs: the current time (Unix ms) that ages are measured against.
    /// - Returns: the number of segments deleted.
    /// - Throws: `.failed`, `.closed`, `.notWritable`, or the error of the marker write / unlink (segments deleted
    ///   before the error stay deleted). `.diskFull` only if even the reserve did not hold one segment's markers.
    public func applyRetention(nowMs: Int64) throws(TranscriptError) -> Int {
        let maxAgeMs = options.retentionMaxAgeSeconds.map { Int64($0) * 1000 }
        let maxTotal = options.retentionMaxTotalBytes
        guard maxAgeMs != nil || maxTotal != nil else { return 0 }
        return try writer.withLock { (w: inout Writer) throws(TranscriptError) -> Int in
            try checkWritable(w)
            let victims = shared.withLock { (s: inout Shared) -> [SegmentEntry] in
                var total = s.segments.reduce(0) { $0 + $1.size }
                var cut = 0
                // Bounded by the segment count; stops at the active segment.
                while cut < s.segments.count - 1 {
                    let seg = s.segments[cut]
                    let tooOld = maxAgeMs.map { nowMs - (seg.newestEventMs ?? seg.createdMs) > $0 } ?? false
                    let tooBig = maxTotal.map { total > $0 } ?? false
                    guard tooOld || tooBig else { break }
                    total -= seg.size
                    cut += 1
                }
                return Array(s.segments[0..<cut])
            }
            defer { if w.reserveReleased { fillReserve(&w) } }
            // Oldest first, each unlink made durable before the next, so a crash leaves a prefix removed, never a hole.
            var removed = 0
            for v in victims {
                // Every older segment is gone already, so these are the sessions whose newest record is in `v`.
                let cutoff = UInt64(v.file.number &+ 1) << 32
                let markers = shared.withLock { s in
                    s.sessions.compactMap { name, index in
                        index.head > 0 && index.headLocation < cutoff ? (name, index.head, index.lastTimestampMs) : nil
                    }
                }
                if !markers.isEmpty { try writeHeadMarkers(markers, &w) }
                let checkpoint = SegmentCheckpoint.fileName(v.file.number)
                for (path, name) in [(options.directory + "/" + checkpoint, checkpoint), (v.file.path, v.file.name)] {
                    do throws(FileIOError) {
                        try io.unlink(path)
                    } catch where error.errno == ENOENT {
                    } catch {
                        throw TranscriptError.io(error, "unlink \(name)")
                    }
                }
                if options.fsync != .never { try Self.syncDirectory(options.directory, io: io) }
                removed += 1
                let keepFrom = v.file.number &+ 1
                shared.withLock { s in
                    s.segments.removeAll { $0.file.number < keepFrom }
                    for i in s.sessions.indices { s.sessions.values[i].dropRecords(beforeSegment: keepFrom) }
                }
            }
            return removed
        }
    }

    /// Appends and syncs head markers (session, head, last event time) and publishes them. On `.diskFull` the
    /// reserve is released and the write tried once more (the failed write was cut back, so nothing is doubled).
    private func writeHeadMarkers(_ markers: [(String, UInt64, Int64)], _ w: inout Writer) throws(TranscriptError) {
        w.buffer.removeAll(keepingCapacity: true)
        w.offsets.removeAll(keepingCapacity: true)
        for m in markers {
            w.offsets.append(w.buffer.count)
            TranscriptFormat.appendHeadMarker(session: m.0, head: m.1, timestampMs: m.2, to: &w.buffer)
        }
        // The markers must be durable before the segment they replace is unlinked.
        let base: Int
        do throws(TranscriptError) {
            base = try commitBuffer(&w, forceSync: true)
        } catch {
            guard error.code == .diskFull, releaseReserve(&w) else { throw error }
            base = try commitBuffer(&w, forceSync: true)
        }
        let number = w.active?.number ?? 0
        let offsets = w.offsets
        let size = w.activeSize
        if w.activeSummary != nil {
            for (k, m) in markers.enumerated() {
                let slot = w.activeSummary!.slot(m.0)
                w.activeSummary!.addMarker(slot: slot, seq: m.1, offset: base + offsets[k], timestampMs: m.2)
            }
        }
        shared.withLock { s in
            for (k, m) in markers.enumerated() {
                s.sessions[m.0]?.raiseHead(
                    to: m.1, timestampMs: m.2, location: makeLocation(segment: number, offset: base + offsets[k]))
            }
            if !s.segments.isEmpty { s.segments[s.segments.count - 1].size = size }
        }
    }

    // MARK: Retention reserve

    /// Whether this log keeps a reserve: writable, retention configured, `retentionReserveBytes` > 0.
    var keepsReserve: Bool {
        writable && options.retentionReserveBytes > 0
            && (options.retentionMaxAgeSeconds != nil || options.retentionMaxTotalBytes != nil)
    }

    /// Bytes the `RESERVE` file holds now for retention's head markers (less than `retentionReserveBytes` while the
    /// disk is too full to fill it; 0 without retention).
    public var retentionReserveHeld: Int { writer.withLock { $0.reserveHeld } }

    /// Fills the `RESERVE` file up to `retentionReserveBytes` with zeros (real blocks, not a hole) and syncs it
    /// (except under `never`). A full disk leaves it partly filled: it is filled again after the next retention
    /// that released it.
    func fillReserve(_ w: inout Writer) {
        guard keepsReserve else { return }
        let target = options.retentionReserveBytes
        if w.reserveFD < 0 {
            guard let fd = try? io.open(options.directory + "/" + TranscriptFormat.reserveFileName, flags: O_RDWR | O_CREAT, mode: 0o644)
            else { return }
            w.reserveFD = fd
            w.reserveHeld = Int((try? io.fileSize(fd)) ?? 0)
        }
        let zeros = [UInt8](repeating: 0, count: 64 << 10)
        // Bounded: each pass writes a chunk toward the target or stops.
        while w.reserveHeld < target {
            let chunk = Array(zeros.prefix(target - w.reserveHeld))
            do throws(FileIOError) {
                try Self.writeAll(io, w.reserveFD, chunk, at: w.reserveHeld)
            } catch {
                // A partial chunk may be in the file: trust only what the size says.
                w.reserveHeld = Int((try? io.fileSize(w.reserveFD)) ?? Int64(w.reserveHeld))
                break
            }
            w.reserveHeld += chunk.count
        }
        if w.reserveHeld > target {
            try? io.ftruncate(w.reserveFD, length: Int64(target))
            w.reserveHeld = target
        }
        if options.fsync != .never { try? io.fdatasync(w.reserveFD) }
        w.reserveReleased = false
    }

    /// Gives the reserve's space back to the file system (truncate, and a sync so the blocks are free now, not at
    /// the next journal commit). - Returns: whether any space was released.
    func releaseReserve(_ w: inout Writer) -> Bool {
        guard w.reserveFD >= 0, w.reserveHeld > 0 else { return false }
        do throws(FileIOError) {
            try io.ftruncate(w.reserveFD, length: 0)
            try io.fdatasync(w.reserveFD)
        } catch {
            return false
        }
        w.reserveHeld = 0
        w.reserveReleased = true
        return true
    }

    // MARK: Read-only mode

    /// Opens a log for reading without taking its lock or changing any file (operator CLI, G10). A tail that
    /// does not parse is treated as a write in progress; `refresh()` picks up what the writer appends later.
    /// - Parameter options: directory, `skipDamagedRecords`, `io` (other fields are ignored).
    /// - Returns: a log whose `append` throws `.notWritable`.
    /// - Throws: `.corrupted` on mid-log damage (unless skipping), `.ioError`.
    public static func openReadOnly(_ options: TranscriptLogOptions) throws(TranscriptError) -> TranscriptLog {
        try validate(options)
        let started = ContinuousClock.now
        let scanner = SegmentScanner(
            io: options.io, directory: options.directory, policy: options.skipDamagedRecords ? .skip : .fail,
            dedupe: DedupePolicy(options), writable: false,
            checkpoints: CheckpointUse(read: options.indexCheckpoints, write: false, sync: false))
        try scanner.scanAll()
        var result = scanner.result
        try rebuildDedupe(&result)
        result.report.durationNanoseconds = nanoseconds(ContinuousClock.now - started)
        var writer = Writer()
        writer.readOnlyTailStart = result.tailStart
        return TranscriptLog(
            options: options, writable: false, epoch: result.epoch, recovery: result.report,
            shared: Shared(sessions: result.sessions, segments: result.segments), writer: writer)
    }

    /// `openReadOnly` with default options.
    /// - Parameter directory: the log's directory.
    /// - Returns: the read-only log.
    /// - Throws: as `openReadOnly(_:)`.
    public static func openReadOnly(directory: String) throws(TranscriptError) -> TranscriptLog {
        try openReadOnly(TranscriptLogOptions(directory: directory))
    }

    /// Read-only logs: scans records appended (and segments created) since open or the last refresh.
    /// Readers are blocked while it runs. Segments removed by the writer's retention stay readable here.
    /// - Returns: the number of new records; 0 for a writable log.
    /// - Throws: `.corrupted` (unless skipping), `.ioError`.
    @discardableResult
    public func refresh() throws(TranscriptError) -> Int {
        guard !writable else { return 0 }
        return try writer.withLock { (w: inout Writer) throws(TranscriptError) -> Int in
            try shared.withLock { (s: inout Shared) throws(TranscriptError) -> Int in
                let scanner = SegmentScanner(
                    io: io, directory: options.directory, policy: options.skipDamagedRecords ? .skip : .fail,
                    dedupe: DedupePolicy(options), writable: false)
                swap(&scanner.result.sessions, &s.sessions)
                defer { swap(&scanner.result.sessions, &s.sessions) }
                let numbers = try SegmentScanner.listSegments(options.directory, io: io)
                let lastNumber = s.segments.last?.file.number ?? 0
                let newer = numbers.filter { $0 > lastNumber }
                if !s.segments.isEmpty {
                    var entry = s.segments[s.segments.count - 1]
                    let size: Int
                    do throws(FileIOError) { size = Int(try io.fileSize(entry.file.fd)) } catch { throw TranscriptError.io(error, "fstat") }
                    w.readOnlyTailStart = try scanner.scanRecords(
                        &entry, from: entry.size, to: size, isLast: newer.isEmpty)
                    s.segments[s.segments.count - 1] = entry
                }
                for (i, number) in newer.enumerated() {
                    let (file, size, reason) = try scanner.openSegment(number)
                    guard let header = file.header else {
                        // The writer may be creating it right now (its header is written before the rename, so
                        // this means damage or a foreign file): stop here and look again next time.
                        if i == newer.count - 1 && size <= TranscriptFormat.segmentHeaderSize { break }
                        throw TranscriptError.corrupted(file.name, 0, reason)
                    }
                    var entry = SegmentEntry(
                        file: file, size: TranscriptFormat.segmentHeaderSize, newestEventMs: nil,
                        createdMs: header.createdMs, maxRecord: header.maxRecord)
                    w.readOnlyTailStart = try scanner.scanRecords(
                        &entry, from: TranscriptFormat.segmentHeaderSize, to: size, isLast: i == newer.count - 1)
                    s.segments.append(entry)
                }
                return scanner.result.report.recordsScanned
            }
        }
    }

    // MARK: Verify and repair (offline)

    /// Scans a log read-only (no lock, nothing modified) and lists every damaged region.
    /// - Parameters:
    ///   - directory: the log's directory.
    ///   - io: the I/O layer.
    /// - Returns: the report; `damage` is empty when the log is sound (a torn tail is reported in `recovery`).
    /// - Throws: `.ioError` if files cannot be read.
    public static func verify(directory: String, io: any FileIO = PosixFileIO()) throws(TranscriptError) -> VerifyReport {
        let started = ContinuousClock.now
        let scanner = SegmentScanner(io: io, directory: directory, policy: .skip, dedupe: DedupePolicy(minIDs: 0), writable: false)
        try scanner.scanAll()
        var r = scanner.result
        r.report.durationNanoseconds = nanoseconds(ContinuousClock.now - started)
        let sessions = r.sessions.map { summary($0.key, $0.value) }.sorted { $0.session < $1.session }
        return VerifyReport(epoch: r.epoch, recovery: r.report, damage: r.damage, sessions: sessions)
    }

    /// Keeps the valid prefix of a damaged log and gives it a new epoch (G5; offline, takes the lock).
    ///
    /// Order: a new segment with the new epoch is created first (synced), then the damaged segment is cut at
    /// the first damage and every later segment deleted. A crash in between leaves the damage under the new
    /// epoch, and repair can run again. Without mid-log damage nothing changes and the epoch stays.
    /// - Parameters:
    ///   - directory: the log's directory.
    ///   - io: the I/O layer.
    /// - Returns: what was cut and the epochs.
    /// - Throws: `.locked` if a writer has it open, `.readOnly`, `.ioError`.
    public static func repair(directory: String, io: any FileIO = PosixFileIO()) throws(TranscriptError) -> RepairReport {
        let lockFD = try takeLock(directory, io: io)
        defer { io.close(lockFD) }
        let scanner = SegmentScanner(io: io, directory: directory, policy: .skip, dedupe: DedupePolicy(minIDs: 0), writable: true)
        try scanner.scanAll()
        let r = scanner.result
        guard let first = r.damage.first, let cutNumber = TranscriptFormat.segmentNumber(fromName: first.segment) else {
            return RepairReport(
                repaired: false, oldEpoch: r.epoch, newEpoch: r.epoch, cutSegment: "", cutOffset: 0, bytesDropped: 0,
                segmentsDeleted: 0)
        }
        let epoch = newEpoch()
        let maxRecord = r.segments.last?.maxRecord ?? TranscriptLogOptions(directory: directory).maxRecordBytes
        _ = try createSegment(
            directory: directory, number: r.highestNumber &+ 1, epoch: epoch, maxRecord: maxRecord, sync: true, io: io)
        var dropped = 0
        var deleted = 0
        let cutPath = directory + "/" + first.segment
        if first.offset < TranscriptFormat.segmentHeaderSize {
            do throws(FileIOError) { try io.unlink(cutPath) } catch { throw TranscriptError.io(error, "unlink \(first.segment)") }
            dropped += r.fileSizes[cutNumber] ?? 0
            deleted += 1
        } else if let seg = r.segments.first(where: { $0.file.number == cutNumber }) {
            do throws(FileIOError) {
                try io.ftruncate(seg.file.fd, length: Int64(first.offset))
                try io.fdatasync(seg.file.fd)
            } catch {
                throw TranscriptError.io(error, "truncate \(first.segment)")
            }
            dropped += (r.fileSizes[cutNumber] ?? first.offset) - first.offset
        }
        for number in r.fileSizes.keys.sorted() where number > cutNumber {
            let name = TranscriptFormat.segmentName(number)
            do throws(FileIOError) { try io.unlink(directory + "/" + name) } catch { throw TranscriptError.io(error, "unlink \(name)") }
            dropped += r.fileSizes[number] ?? 0
            deleted += 1
        }
        // Checkpoints of the cut and the deleted segments no longer describe them (open would ignore them anyway).
        for number in r.fileSizes.keys where number >= cutNumber {
            try? io.unlink(directory + "/" + SegmentCheckpoint.fileName(number))
        }
        try syncDirectory(directory, io: io)
        return RepairReport(
            repaired: true, oldEpoch: r.epoch, newEpoch: epoch, cutSegment: first.segment, cutOffset: first.offset,
            bytesDropped: dropped, segmentsDeleted: deleted)
    }
}
