// Retention, the read-only mode for offline tools, verify and repair (docs/transcript-format.md,
// "Recovery" and "Retention and head markers").

import Glibc
import Synchronization

extension TranscriptLog {
    // MARK: Retention

    /// Deletes whole segments, oldest first, never the active one, per `retentionMaxAgeSeconds` and
    /// `retentionMaxTotalBytes`. Sessions whose newest record would go get a head marker first, so their seqs
    /// are never reused after a restart.
    /// - Parameter nowMs: the current time (Unix ms) that ages are measured against.
    /// - Returns: the number of segments deleted.
    /// - Throws: `.failed`, `.closed`, `.notWritable`, or the error of the marker write / unlink.
    public func applyRetention(nowMs: Int64) throws(TranscriptError) -> Int {
        let maxAgeMs = options.retentionMaxAgeSeconds.map { Int64($0) * 1000 }
        let maxTotal = options.retentionMaxTotalBytes
        guard maxAgeMs != nil || maxTotal != nil else { return 0 }
        return try writer.withLock { (w: inout Writer) throws(TranscriptError) -> Int in
            try checkWritable(w)
            let (victims, markers) = shared.withLock {
                (s: inout Shared) -> ([SegmentEntry], [(String, UInt64, Int64)]) in
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
                guard cut > 0 else { return ([SegmentEntry](), [(String, UInt64, Int64)]()) }
                let cutoff = UInt64(s.segments[cut].file.number) << 32
                var markers: [(String, UInt64, Int64)] = []
                for (name, index) in s.sessions where index.head > 0 && index.headLocation < cutoff {
                    markers.append((name, index.head, index.lastTimestampMs))
                }
                return (Array(s.segments[0..<cut]), markers)
            }
            guard !victims.isEmpty else { return 0 }
            if !markers.isEmpty {
                w.buffer.removeAll(keepingCapacity: true)
                w.offsets.removeAll(keepingCapacity: true)
                for m in markers {
                    w.offsets.append(w.buffer.count)
                    TranscriptFormat.appendHeadMarker(session: m.0, head: m.1, timestampMs: m.2, to: &w.buffer)
                }
                // The markers must be durable before the segments they replace are unlinked.
                let base = try commitBuffer(&w, forceSync: true)
                let number = w.active?.number ?? 0
                let offsets = w.offsets
                let size = w.activeSize
                shared.withLock { s in
                    for (k, m) in markers.enumerated() {
                        s.sessions[m.0]?.raiseHead(
                            to: m.1, timestampMs: m.2, location: makeLocation(segment: number, offset: base + offsets[k]))
                    }
                    if !s.segments.isEmpty { s.segments[s.segments.count - 1].size = size }
                }
            }
            // Oldest first, each unlink made durable before the next, so a crash leaves a prefix removed, never a hole.
            var removed = 0
            defer {
                if removed > 0 {
                    let keepFrom = victims[removed - 1].file.number &+ 1
                    shared.withLock { s in
                        s.segments.removeAll { $0.file.number < keepFrom }
                        for i in s.sessions.indices { s.sessions.values[i].dropRecords(beforeSegment: keepFrom) }
                    }
                }
            }
            for v in victims {
                do throws(FileIOError) {
                    try io.unlink(v.file.path)
                } catch where error.errno == ENOENT {
                } catch {
                    throw TranscriptError.io(error, "unlink \(v.file.name)")
                }
                if options.fsync != .never { try Self.syncDirectory(options.directory, io: io) }
                removed += 1
            }
            return removed
        }
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
            dedupe: DedupePolicy(options), writable: false)
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
        try syncDirectory(directory, io: io)
        return RepairReport(
            repaired: true, oldEpoch: r.epoch, newEpoch: epoch, cutSegment: first.segment, cutOffset: first.offset,
            bytesDropped: dropped, segmentsDeleted: deleted)
    }
}
