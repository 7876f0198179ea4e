// Recovery: the scan that rebuilds the index from the segment files and tells a torn tail from damage in
// the middle (docs/transcript-format.md, "Recovery"), in the manner of LevelDB's log_reader.cc.

import Glibc

/// What a scan does when it finds damage in the middle of the log.
enum DamagePolicy {
    /// Throw `.corrupted` at the first damage (default open).
    case fail
    /// Skip the damaged region, count it, continue (open with `skipDamagedRecords`, `verify`).
    case skip
}

/// A segment as the index sees it. Owned by `TranscriptLog.Shared`.
struct SegmentEntry: Sendable {
    let file: SegmentFile
    /// Committed (visible) bytes: readers never look past this.
    var size: Int
    /// Newest event time in the segment (nil while it holds none), for age-based retention.
    var newestEventMs: Int64?
    let createdMs: Int64
    let maxRecord: Int
}

/// Everything a directory scan found.
struct ScanResult {
    var segments: [SegmentEntry] = []
    var sessions: [String: SessionIndex] = [:]
    var report = RecoveryReport()
    var damage: [DamageReport] = []
    /// Where the unparseable tail of the last segment starts (== its size when there is none).
    var tailStart = 0
    /// The last segment's file size.
    var lastFileSize = 0
    /// Files to delete at writer open: a last segment that holds only a torn header.
    var tornSegments: [String] = []
    /// The epoch of the newest segment with a valid header ("" when none).
    var epoch = ""
    /// File size of every segment file seen, by number.
    var fileSizes: [UInt32: Int] = [:]
    /// The newest segment number seen on disk, valid or not (new segments must be numbered above it).
    var highestNumber: UInt32 = 0
    /// The summary of the last segment's records, for its checkpoint when the writer rolls (checkpoints on).
    var activeSummary: SegmentSummary? = nil
}

/// What a scan does with index checkpoints (docs/transcript-format.md, "Index checkpoints").
struct CheckpointUse: Sendable {
    /// Use a sealed segment's checkpoint instead of scanning it when the checkpoint is sound and matches.
    var read: Bool
    /// Write a checkpoint for every sealed segment that had to be scanned (a writer's open).
    var write: Bool
    /// fdatasync checkpoints and the directory (false under `never`).
    var sync: Bool

    /// Full scans: `verify`, `repair`, a read-only `refresh`, and any log opened with checkpoints off.
    static let off = CheckpointUse(read: false, write: false, sync: false)
}

/// Scans segments into a `ScanResult`. One per scan; owns the read buffer.
final class SegmentScanner {
    let io: any FileIO
    let directory: String
    let policy: DamagePolicy
    let dedupe: DedupePolicy
    let writable: Bool
    let checkpoints: CheckpointUse
    var result = ScanResult()
    /// The summary of the segment being scanned (nil when checkpoints are off).
    private var building: SegmentSummary? = nil
    private let reader = ChunkReader(capacity: 4 << 20)

    init(
        io: any FileIO, directory: String, policy: DamagePolicy, dedupe: DedupePolicy, writable: Bool,
        checkpoints: CheckpointUse = .off
    ) {
        self.io = io
        self.directory = directory
        self.policy = policy
        self.dedupe = dedupe
        self.writable = writable
        self.checkpoints = checkpoints
    }

    /// Segment numbers in the directory, ascending.
    static func listSegments(_ directory: String, io: any FileIO) throws(TranscriptError) -> [UInt32] {
        let names: [String]
        do throws(FileIOError) { names = try io.listDirectory(directory) } catch { throw TranscriptError.io(error, "list \(directory)") }
        return names.compactMap(TranscriptFormat.segmentNumber(fromName:)).sorted()
    }

    /// Opens a segment file and checks its header.
    func openSegment(_ number: UInt32) throws(TranscriptError) -> (file: SegmentFile, size: Int, reason: String) {
        let name = TranscriptFormat.segmentName(number)
        let path = directory + "/" + name
        let fd: Int32
        do throws(FileIOError) { fd = try io.open(path, flags: writable ? O_RDWR : O_RDONLY, mode: 0) } catch {
            throw TranscriptError.io(error, "open \(name)")
        }
        let size: Int
        var raw = [UInt8](repeating: 0, count: TranscriptFormat.segmentHeaderSize)
        var got = 0
        do throws(FileIOError) {
            size = Int(try io.fileSize(fd))
            // Bounded: each pread advances or returns 0.
            while got < raw.count {
                let n = try raw.withUnsafeMutableBytes { p in
                    Result { () throws(FileIOError) -> Int in
                        try io.pread(fd, UnsafeMutableRawBufferPointer(rebasing: p[got...]), offset: Int64(got))
                    }
                }.get()
                if n == 0 { break }
                got += n
            }
        } catch {
            io.close(fd)
            throw TranscriptError.io(error, "read header \(name)")
        }
        let (header, reason) = raw.withUnsafeBytes { SegmentHeader.decode(UnsafeRawBufferPointer(rebasing: $0[0..<got])) }
        var why = reason
        if let header, header.number != number { why = "segment number does not match file name" }
        let valid = why.isEmpty ? header : nil
        return (SegmentFile(number: number, name: name, path: path, fd: fd, io: io, header: valid), size, why)
    }

    /// Scans every segment of the directory.
    func scanAll() throws(TranscriptError) {
        let numbers = try Self.listSegments(directory, io: io)
        result.highestNumber = numbers.last ?? 0
        var opened: [(file: SegmentFile, size: Int, reason: String)] = []
        for number in numbers {
            let o = try openSegment(number)
            result.fileSizes[number] = o.size
            opened.append(o)
        }
        if let last = opened.last, last.file.header == nil, last.size <= TranscriptFormat.segmentHeaderSize {
            // A crash while creating the newest segment (possible only under `never`): it held no record.
            result.tornSegments.append(last.file.name)
            result.report.truncatedBytes += last.size
            opened.removeLast()
        }
        for (i, o) in opened.enumerated() {
            let isLast = i == opened.count - 1
            guard let header = o.file.header else {
                try damaged(DamageReport(segment: o.file.name, offset: 0, length: o.size, reason: o.reason))
                continue
            }
            result.epoch = header.epoch
            var entry = SegmentEntry(
                file: o.file, size: TranscriptFormat.segmentHeaderSize, newestEventMs: nil,
                createdMs: header.createdMs, maxRecord: header.maxRecord)
            // A sealed segment with a sound, matching checkpoint is not scanned; the last segment always is.
            if checkpoints.read && !isLast,
                let c = SegmentCheckpoint.load(
                    directory: directory, number: o.file.number, segmentSize: o.size, header: header, io: io),
                applyCheckpoint(c.summary, &entry, size: c.segmentSize)
            {
                result.report.segmentsFromCheckpoint += 1
                result.segments.append(entry)
                continue
            }
            result.report.segmentsScanned += 1
            let damageBefore = result.damage.count
            building = checkpoints.read || checkpoints.write ? SegmentSummary() : nil
            let tail = try scanRecords(&entry, from: TranscriptFormat.segmentHeaderSize, to: o.size, isLast: isLast)
            if var summary = building {
                building = nil
                if result.damage.count != damageBefore || entry.size != o.size { summary.regular = false }
                if isLast {
                    result.activeSummary = summary
                } else if checkpoints.write && summary.regular {
                    writeCheckpoint(SegmentCheckpoint(number: o.file.number, segmentSize: o.size, headerCRC: header.crc, summary: summary))
                }
            }
            if isLast {
                result.tailStart = tail
                result.lastFileSize = o.size
                result.report.truncatedBytes += o.size - tail
            }
            result.segments.append(entry)
        }
    }

    /// Writes the checkpoint of a sealed segment that had to be scanned. A failure costs only the next open's
    /// time (the segment is scanned again), so it is counted, not thrown.
    private func writeCheckpoint(_ c: SegmentCheckpoint) {
        do throws(TranscriptError) {
            try c.write(directory: directory, sync: checkpoints.sync, io: io)
            result.report.checkpointsWritten += 1
        } catch {
            result.report.checkpointWriteFailures += 1
        }
    }

    /// Applies a checkpoint's summary to the index exactly as scanning the segment's records would (`apply`).
    /// - Returns: false, changing nothing, if the summary does not fit the index built so far (a seq that scanning
    ///   would report as damage, an offset outside the segment): the caller then scans the segment, which reports
    ///   whatever is wrong with the offset of the record.
    func applyCheckpoint(_ s: SegmentSummary, _ entry: inout SegmentEntry, size: Int) -> Bool {
        for p in s.parts {
            var head = result.sessions[p.session]?.head ?? 0
            if let m = p.marker {
                guard m.seq >= head, Int(m.offset) >= TranscriptFormat.segmentHeaderSize, Int(m.offset) < size else {
                    return false
                }
                head = m.seq
            }
            guard let firstOffset = p.offsets.first else { continue }
            guard p.firstSeq != 0, head == 0 || p.firstSeq > head else { return false }
            if head > 0 && p.firstSeq != head + 1 && result.damage.isEmpty { return false }
            guard Int(firstOffset) >= TranscriptFormat.segmentHeaderSize, Int(p.offsets[p.offsets.count - 1]) < size,
                p.marker.map({ $0.offset < firstOffset }) ?? true
            else { return false }
            var previous = firstOffset
            for o in p.offsets.dropFirst() {  // bounded by the part's events
                guard o > previous else { return false }
                previous = o
            }
        }
        let number = entry.file.number
        for p in s.parts {
            if let m = p.marker {
                result.sessions[p.session, default: SessionIndex(dedupe: dedupe)]
                    .raiseHead(to: m.seq, timestampMs: m.timestampMs, location: makeLocation(segment: number, offset: Int(m.offset)))
            }
            if !p.offsets.isEmpty {
                result.sessions[p.session, default: SessionIndex(dedupe: dedupe)]
                    .addRun(firstSeq: p.firstSeq, segment: number, offsets: p.offsets, newestEventMs: p.newestEventMs)
            }
        }
        entry.size = size
        entry.newestEventMs = s.newestEventMs
        result.report.recordsScanned += s.records
        return true
    }

    /// Adds a record that was applied to the index to the summary of the segment being scanned.
    private func summarize(_ session: String, marker: Bool, seq: UInt64, offset: Int, timestampMs: Int64) {
        guard building != nil else { return }
        let slot = building!.slot(session)
        if marker {
            building!.addMarker(slot: slot, seq: seq, offset: offset, timestampMs: timestampMs)
        } else {
            building!.addEvent(slot: slot, seq: seq, offset: offset, timestampMs: timestampMs)
        }
    }

    /// Records the damage or throws, per policy.
    func damaged(_ d: DamageReport) throws(TranscriptError) {
        switch policy {
        case .fail:
            throw TranscriptError.corrupted(d.segment, d.offset, d.reason)
        case .skip:
            result.report.damagedRecords += 1
            result.report.skippedBytes += d.length
            result.damage.append(d)
        }
    }

    /// Scans records of one segment in [start, end) into the index. - Returns: where an unparseable tail starts
    /// (`end` if none). Only the last segment may have such a tail; elsewhere it is damage.
    func scanRecords(
        _ entry: inout SegmentEntry, from start: Int, to end: Int, isLast: Bool
    ) throws(TranscriptError) -> Int {
        let file = entry.file
        var offset = start
        // Bounded: every iteration advances `offset` by a record (>= 18 bytes) or to a later resync point.
        while offset < end {
            var view = try reader.bytes(file, offset: offset, count: TranscriptFormat.recordHeaderSize, limit: end)
            var parse = TranscriptFormat.parseRecord(view, fileRemaining: end - offset, maxRecord: entry.maxRecord)
            if case .needBytes(let n) = parse {
                view = try reader.bytes(file, offset: offset, count: n, limit: end)
                parse = TranscriptFormat.parseRecord(view, fileRemaining: view.count, maxRecord: entry.maxRecord)
            }
            switch parse {
            case .valid(let layout):
                try apply(layout, view, &entry, offset: offset)
                offset += layout.size
            case .invalid, .needBytes:
                let why: String
                if case .invalid(let r) = parse { why = r } else { why = "record shorter than its length" }
                guard let next = try resync(file, from: offset + 1, to: end, maxRecord: entry.maxRecord) else {
                    if isLast { return offset }
                    try damaged(
                        DamageReport(
                            segment: file.name, offset: offset, length: end - offset,
                            reason: "\(why) at the end of a non-final segment"))
                    return end
                }
                try damaged(DamageReport(segment: file.name, offset: offset, length: next - offset, reason: why))
                offset = next
            }
        }
        entry.size = offset
        return end
    }

    /// Applies one valid record to the index, checking per-session seq continuity.
    private func apply(
        _ layout: RecordLayout, _ view: UnsafeRawBufferPointer, _ entry: inout SegmentEntry, offset: Int
    ) throws(TranscriptError) {
        let session = String(decoding: UnsafeRawBufferPointer(rebasing: view[layout.session]), as: UTF8.self)
        let location = makeLocation(segment: entry.file.number, offset: offset)
        let name = entry.file.name
        let head = result.sessions[session]?.head ?? 0
        entry.size = offset + layout.size
        if layout.type == TranscriptFormat.typeHeadMarker {
            guard layout.seq >= head else {
                try damaged(DamageReport(segment: name, offset: offset, length: layout.size, reason: "head marker below head"))
                return
            }
            result.sessions[session, default: SessionIndex(dedupe: dedupe)]
                .raiseHead(to: layout.seq, timestampMs: layout.timestampMs, location: location)
            result.report.recordsScanned += 1
            summarize(session, marker: true, seq: layout.seq, offset: offset, timestampMs: layout.timestampMs)
            return
        }
        let seq = layout.seq
        if seq == 0 || (head > 0 && seq <= head) {
            // A repeated seq can only come from damage; indexing it would serve two events under one seq.
            let why = "seq \(seq) repeated (head \(head))"
            try damaged(DamageReport(segment: name, offset: offset, length: layout.size, reason: why))
            return
        }
        if head > 0 && seq != head + 1 && result.damage.isEmpty {
            // A gap with no damaged region before it: events were lost (e.g. a middle segment is missing).
            // After a skipped region the gap is that region's events, already counted.
            let why = "seq gap: expected \(head + 1), found \(seq)"
            try damaged(DamageReport(segment: name, offset: offset, length: 0, reason: why))
        }
        result.sessions[session, default: SessionIndex(dedupe: dedupe)]
            .add(seq: seq, location: location, timestampMs: layout.timestampMs)
        entry.newestEventMs = max(entry.newestEventMs ?? layout.timestampMs, layout.timestampMs)
        result.report.recordsScanned += 1
        summarize(session, marker: false, seq: seq, offset: offset, timestampMs: layout.timestampMs)
    }

    /// The next offset in [from, end) where a valid record starts, nil if none.
    private func resync(
        _ file: SegmentFile, from: Int, to end: Int, maxRecord: Int
    ) throws(TranscriptError) -> Int? {
        var pos = from
        // Bounded: `pos` strictly increases, by a window or past a rejected candidate.
        while pos + TranscriptFormat.recordHeaderSize <= end {
            let view = try reader.bytes(file, offset: pos, count: ChunkReader.chunkSize, limit: end)
            guard view.count >= 2 else { return nil }
            var candidate: Int? = nil
            var i = 0
            while i + 1 < view.count {
                if view[i] == TranscriptFormat.recordMagic && view[i + 1] == TranscriptFormat.recordVersion {
                    candidate = pos + i
                    break
                }
                i += 1
            }
            guard let c = candidate else {
                pos += view.count - 1  // keep the last byte: it may be the first of a magic pair
                continue
            }
            var v = try reader.bytes(file, offset: c, count: TranscriptFormat.recordHeaderSize, limit: end)
            var parse = TranscriptFormat.parseRecord(v, fileRemaining: end - c, maxRecord: maxRecord)
            if case .needBytes(let n) = parse {
                v = try reader.bytes(file, offset: c, count: n, limit: end)
                parse = TranscriptFormat.parseRecord(v, fileRemaining: v.count, maxRecord: maxRecord)
            }
            if case .valid = parse { return c }
            pos = c + 1
        }
        return nil
    }
}
