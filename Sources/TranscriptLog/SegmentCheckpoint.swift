// The index checkpoint of a sealed segment (docs/transcript-format.md, "Index checkpoints"): what recovery
// would rebuild from the segment's records, so open reads one small file instead of scanning the segment.

import Glibc

/// What one segment contributes to the index, per session, in the shape a checkpoint can hold: per session at
/// most one head marker, before any event of the session in the segment, and one run of consecutive event seqs.
///
/// Built record by record while a segment is scanned or written; anything of another shape (damage skipped, a
/// repeated seq, a second marker) makes the summary `irregular` and the segment is then never checkpointed, only
/// scanned. Owned by the scanner or by `TranscriptLog.Writer` (the active segment's).
struct SegmentSummary: Sendable {
    /// One session's records in the segment.
    struct Part: Sendable, Equatable {
        var session: String
        /// A head marker (seq, event time, offset), before the events.
        var marker: (seq: UInt64, timestampMs: Int64, offset: UInt32)?
        /// Seq of the first event (meaningless while `offsets` is empty).
        var firstSeq: UInt64 = 0
        /// Offsets of the events, seqs `firstSeq`, `firstSeq + 1`, ...
        var offsets: [UInt32] = []
        /// Newest event time of the session's events in the segment.
        var newestEventMs: Int64 = .min

        static func == (a: Part, b: Part) -> Bool {
            a.session == b.session && a.marker?.seq == b.marker?.seq && a.marker?.timestampMs == b.marker?.timestampMs
                && a.marker?.offset == b.marker?.offset && a.firstSeq == b.firstSeq && a.offsets == b.offsets
                && a.newestEventMs == b.newestEventMs
        }
    }

    var parts: [Part] = []
    private var slots: [String: Int] = [:]
    /// False once a record did not fit the checkpoint's shape, or damage was skipped in the segment.
    var regular = true
    /// Records (events and head markers) of the segment.
    private(set) var records = 0
    /// Newest event time of the segment (nil while it holds none).
    private(set) var newestEventMs: Int64? = nil

    /// The part of `session`, created on first use. - Returns: its index in `parts`.
    mutating func slot(_ session: String) -> Int {
        if let s = slots[session] { return s }
        parts.append(Part(session: session))
        slots[session] = parts.count - 1
        return parts.count - 1
    }

    /// Adds an event of the part at `slot`.
    mutating func addEvent(slot: Int, seq: UInt64, offset: Int, timestampMs: Int64) {
        records += 1
        newestEventMs = max(newestEventMs ?? timestampMs, timestampMs)
        if parts[slot].offsets.isEmpty {
            parts[slot].firstSeq = seq
        } else if seq != parts[slot].firstSeq &+ UInt64(parts[slot].offsets.count) {
            regular = false
        }
        parts[slot].offsets.append(UInt32(truncatingIfNeeded: offset))
        parts[slot].newestEventMs = max(parts[slot].newestEventMs, timestampMs)
    }

    /// Adds a head marker of the part at `slot`.
    mutating func addMarker(slot: Int, seq: UInt64, offset: Int, timestampMs: Int64) {
        records += 1
        if parts[slot].marker != nil || !parts[slot].offsets.isEmpty { regular = false }
        parts[slot].marker = (seq, timestampMs, UInt32(truncatingIfNeeded: offset))
    }
}

/// A checkpoint file: the summary of one sealed segment and the identity of the segment it describes.
struct SegmentCheckpoint: Sendable {
    /// The segment's number.
    var number: UInt32
    /// The segment file's size, which is where its last record ends.
    var segmentSize: Int
    /// The segment header's `header_crc` (covers number, created_ms, max_record and epoch).
    var headerCRC: UInt32
    var summary: SegmentSummary

    static let magic: [UInt8] = [0x53, 0x4B, 0x54, 0x52, 0x49, 0x44, 0x58, 0x0A]  // "SKTRIDX\n"
    static let version: UInt32 = 1
    /// magic + version + segment_number + segment_size + header_crc + has_newest + newest_event_ms + records + sessions.
    static let headerSize = 8 + 4 + 8 + 8 + 4 + 4 + 8 + 8 + 4
    static let flagMarker: UInt8 = 1
    static let flagEvents: UInt8 = 2

    /// The file's bytes, CRC last (docs: "Index checkpoints").
    func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(Self.headerSize + summary.records * 4 + summary.parts.count * 64 + 4)
        b.append(contentsOf: Self.magic)
        b.appendLE(Self.version)
        b.appendLE(UInt64(number))
        b.appendLE(UInt64(segmentSize))
        b.appendLE(headerCRC)
        b.appendLE(UInt32(summary.newestEventMs == nil ? 0 : 1))
        b.appendLE(UInt64(bitPattern: summary.newestEventMs ?? 0))
        b.appendLE(UInt64(summary.records))
        b.appendLE(UInt32(summary.parts.count))
        for p in summary.parts {
            b.appendLE(UInt16(p.session.utf8.count))
            b.append((p.marker == nil ? 0 : Self.flagMarker) | (p.offsets.isEmpty ? 0 : Self.flagEvents))
            b.append(contentsOf: p.session.utf8)
            if let m = p.marker {
                b.appendLE(m.seq)
                b.appendLE(UInt64(bitPattern: m.timestampMs))
                b.appendLE(m.offset)
            }
            if !p.offsets.isEmpty {
                b.appendLE(p.firstSeq)
                b.appendLE(UInt64(bitPattern: p.newestEventMs))
                b.appendLE(UInt32(p.offsets.count))
                for o in p.offsets { b.appendLE(o) }
            }
        }
        b.appendLE(CRC32C.checksum(b))
        return b
    }

    /// Decodes and checks a checkpoint; nil if anything is wrong (then the segment is scanned instead).
    static func decode(_ p: UnsafeRawBufferPointer) -> SegmentCheckpoint? {
        guard p.count >= headerSize + 4, p.prefix(8).elementsEqual(magic) else { return nil }
        let body = UnsafeRawBufferPointer(rebasing: p[0..<(p.count - 4)])
        guard CRC32C.checksum(body) == p.loadLE(UInt32.self, at: p.count - 4) else { return nil }
        guard p.loadLE(UInt32.self, at: 8) == version else { return nil }
        let number = p.loadLE(UInt64.self, at: 12)
        let size = p.loadLE(UInt64.self, at: 20)
        guard number <= UInt64(UInt32.max), size <= UInt64(TranscriptFormat.maxSegmentBytes) * 2 else { return nil }
        var summary = SegmentSummary()
        let hasNewest = p.loadLE(UInt32.self, at: 32) != 0
        let newest = Int64(bitPattern: p.loadLE(UInt64.self, at: 36))
        let records = p.loadLE(UInt64.self, at: 44)
        let count = Int(p.loadLE(UInt32.self, at: 52))
        var at = headerSize
        let end = body.count
        // Bounded by the session count read, and every step checks it stays inside the file.
        for _ in 0..<count {
            guard at + 3 <= end else { return nil }
            let len = Int(p.loadLE(UInt16.self, at: at))
            let flags = p[at + 2]
            at += 3
            guard at + len <= end, flags & ~(flagMarker | flagEvents) == 0 else { return nil }
            let session = String(decoding: UnsafeRawBufferPointer(rebasing: p[at..<(at + len)]), as: UTF8.self)
            at += len
            let slot = summary.slot(session)
            guard slot == summary.parts.count - 1 else { return nil }  // a session listed twice
            if flags & flagMarker != 0 {
                guard at + 20 <= end else { return nil }
                let seq = p.loadLE(UInt64.self, at: at)
                let ts = Int64(bitPattern: p.loadLE(UInt64.self, at: at + 8))
                summary.addMarker(slot: slot, seq: seq, offset: Int(p.loadLE(UInt32.self, at: at + 16)), timestampMs: ts)
                at += 20
            }
            if flags & flagEvents != 0 {
                guard at + 20 <= end else { return nil }
                let first = p.loadLE(UInt64.self, at: at)
                let ts = Int64(bitPattern: p.loadLE(UInt64.self, at: at + 8))
                let n = Int(p.loadLE(UInt32.self, at: at + 16))
                at += 20
                guard n > 0, n <= (end - at) / 4, first > 0, first <= UInt64.max - UInt64(n) else { return nil }
                summary.setEvents(slot: slot, firstSeq: first, newestEventMs: ts, offsets: UnsafeRawBufferPointer(rebasing: p[at..<(at + 4 * n)]))
                at += 4 * n
            }
        }
        guard at == end, summary.regular, UInt64(summary.records) == records,
            (summary.newestEventMs != nil) == hasNewest, !hasNewest || summary.newestEventMs == newest
        else { return nil }
        return SegmentCheckpoint(
            number: UInt32(number), segmentSize: Int(size), headerCRC: p.loadLE(UInt32.self, at: 28), summary: summary)
    }

    // MARK: Files

    /// `<16 hex digits>.tidx`: the checkpoint of the segment of that number.
    static func fileName(_ number: UInt32) -> String {
        String(TranscriptFormat.segmentName(number).dropLast(TranscriptFormat.segmentSuffix.count))
            + TranscriptFormat.checkpointSuffix
    }

    /// Writes the checkpoint under a temporary name, syncs it, renames it into place and syncs the directory
    /// (fsyncs skipped when `sync` is false, as for segments under `never`). A failure leaves no temporary file
    /// behind and no checkpoint under the final name that was not complete.
    func write(directory: String, sync: Bool, io: any FileIO) throws(TranscriptError) {
        let name = Self.fileName(number)
        let path = directory + "/" + name
        let temporary = path + TranscriptFormat.checkpointTemporaryTail
        let fd: Int32
        do throws(FileIOError) { fd = try io.open(temporary, flags: O_RDWR | O_CREAT | O_TRUNC, mode: 0o644) } catch {
            throw TranscriptLog.openError(error, "create \(name)")
        }
        var step = "write"
        do throws(FileIOError) {
            defer { io.close(fd) }
            try TranscriptLog.writeAll(io, fd, encoded(), at: 0)
            if sync {
                step = "fdatasync"
                try io.fdatasync(fd)
            }
        } catch {
            try? io.unlink(temporary)
            throw TranscriptError.io(error, "\(step) \(name)")
        }
        do throws(FileIOError) {
            step = "rename"
            try io.rename(temporary, to: path)
            if sync {
                step = "fsync directory for"
                try io.fsyncDirectory(directory)
            }
        } catch {
            try? io.unlink(temporary)
            throw TranscriptError.io(error, "\(step) \(name)")
        }
    }

    /// Reads the checkpoint of segment `number` if there is one that is sound and describes exactly this segment
    /// file (`segmentSize` bytes, this header). Any failure (missing, unreadable, damaged, stale) is nil: the
    /// caller scans the segment, so a checkpoint can only ever save work, never change what is recovered.
    static func load(
        directory: String, number: UInt32, segmentSize: Int, header: SegmentHeader, io: any FileIO
    ) -> SegmentCheckpoint? {
        let path = directory + "/" + fileName(number)
        guard let fd = try? io.open(path, flags: O_RDONLY, mode: 0) else { return nil }
        defer { io.close(fd) }
        guard let size = try? io.fileSize(fd), size >= Int64(headerSize + 4),
            size <= Int64(segmentSize) + Int64(headerSize) + 4
        else { return nil }
        var raw = [UInt8](repeating: 0, count: Int(size))
        var got = 0
        // Bounded: each pread advances or returns 0 (then the size check below fails).
        while got < raw.count {
            let n = raw.withUnsafeMutableBytes { b in
                try? io.pread(fd, UnsafeMutableRawBufferPointer(rebasing: b[got...]), offset: Int64(got))
            }
            guard let n, n > 0 else { break }
            got += n
        }
        guard got == raw.count,
            let c = raw.withUnsafeBytes({ decode($0) }),
            c.number == number, c.segmentSize == segmentSize, c.headerCRC == header.crc
        else { return nil }
        return c
    }
}

extension SegmentSummary {
    /// Sets the events of a part from a checkpoint's little-endian offsets (bulk, for `SegmentCheckpoint.decode`).
    mutating func setEvents(slot: Int, firstSeq: UInt64, newestEventMs newest: Int64, offsets raw: UnsafeRawBufferPointer) {
        let n = raw.count / 4
        var offsets = [UInt32](repeating: 0, count: n)
        offsets.withUnsafeMutableBytes { $0.copyMemory(from: raw) }
        if UInt32(littleEndian: 1) != 1 { for i in 0..<n { offsets[i] = UInt32(littleEndian: offsets[i]) } }
        if !parts[slot].offsets.isEmpty { regular = false }
        parts[slot].firstSeq = firstSeq
        parts[slot].offsets = offsets
        parts[slot].newestEventMs = newest
        records += n
        newestEventMs = max(newest, newestEventMs ?? newest)
    }
}
