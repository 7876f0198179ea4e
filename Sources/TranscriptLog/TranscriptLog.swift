// The append-only, crash-safe transcript log (issue 2). Format: ../../docs/transcript-format.md.

import Glibc
import Synchronization

/// The transcript log: per-session sequenced events in checksummed segment files, with group commit,
/// crash recovery, an in-memory per-session index, a dedupe window, an epoch and retention.
///
/// Threading: `append`, `sync`, `applyRetention` and `close` come from one thread (the gateway's storage
/// thread); `read`, `head`, `summary`, `sessions` and `lookup` may run concurrently on other threads.
/// The class is `Sendable` without `@unchecked` because every mutable field lives in one of two Mutexes:
/// - `writer`: held for a whole append/sync/retention/close, fdatasync included. Readers never take it.
/// - `shared`: the index, segment table and heads. Held only to plan a batch and to publish it after it is
///   durable, never across a write or an fdatasync; readers copy what they need and `pread` outside it.
/// Lock order is `writer` then `shared`. A batch becomes visible only when it is published, after `append`'s
/// write and fdatasync succeeded, so a reader never sees a record that could still be taken back.
public final class TranscriptLog: Sendable {
    struct Shared {
        var sessions: [String: SessionIndex]
        /// Ascending by number; the last is the active segment of a writer.
        var segments: [SegmentEntry]
        var closed = false
        /// Checkpoints of sealed segments the writer could not write (each costs a scan of its segment at open).
        var checkpointFailures = 0
        /// Sessions whose dedupe window is evicted (`SessionIndex.dedupeEvicted`): appends skip the check when 0.
        var evictedWindows = 0

        func segment(_ number: UInt32) -> SegmentEntry? {
            var lo = 0
            var hi = segments.count
            while lo < hi {  // bounded binary search
                let mid = (lo + hi) / 2
                if segments[mid].file.number < number { lo = mid + 1 } else { hi = mid }
            }
            return lo < segments.count && segments[lo].file.number == number ? segments[lo] : nil
        }
    }

    enum WriterState {
        case open
        case failed(TranscriptError)
        case closed
    }

    struct Planned {
        var index: Int
        var seq: UInt64
        var slot: Int
        var key: DedupeKey
    }

    struct Writer {
        var state: WriterState = .open
        /// The batch being encoded; reused so the append path does not allocate per record.
        var buffer: [UInt8] = []
        /// Per batch: the requests that are written (request index, seq, batch-local session slot, dedupe key),
        /// and their offsets in `buffer`.
        var planned: [Planned] = []
        var offsets: [Int] = []
        /// Per batch: the session name of each slot.
        var slotSessions: [String] = []
        var active: SegmentFile?
        var activeSize = 0
        var activeMaxRecord = 0
        var nextSegment: UInt32 = 1
        var lastSync = ContinuousClock.now
        var lockFD: Int32 = -1
        /// Read-only logs: where `refresh()` continues.
        var readOnlyTailStart = 0
        /// The active segment's records as its checkpoint will describe them when it is sealed (nil: checkpoints off).
        var activeSummary: SegmentSummary? = nil
        /// The `RESERVE` file (-1 when none), the bytes it holds, and whether retention released it.
        var reserveFD: Int32 = -1
        var reserveHeld = 0
        var reserveReleased = false
    }

    let options: TranscriptLogOptions
    let writable: Bool
    /// The log's epoch: 16 lowercase hex characters, random at creation, new only on create or repair.
    public let epoch: String
    /// What recovery did at open.
    public let recovery: RecoveryReport
    let shared: Mutex<Shared>
    let writer: Mutex<Writer>

    var io: any FileIO { options.io }

    init(options: TranscriptLogOptions, writable: Bool, epoch: String, recovery: RecoveryReport, shared: Shared, writer: Writer) {
        self.options = options
        self.writable = writable
        self.epoch = epoch
        self.recovery = recovery
        self.shared = Mutex(shared)
        self.writer = Mutex(writer)
    }

    deinit {
        writer.withLock { w in
            if w.lockFD >= 0 { io.close(w.lockFD) }
            w.lockFD = -1
            if w.reserveFD >= 0 { io.close(w.reserveFD) }
            w.reserveFD = -1
        }
    }

    // MARK: Open

    /// Opens (or creates) the log in `options.directory`, taking its lock and running recovery.
    /// - Parameter options: directory, fsync policy, bounds, I/O layer.
    /// - Returns: the open log.
    /// - Throws: `.locked`, `.readOnly`, `.corrupted` (mid-log damage without `skipDamagedRecords`), `.ioError`,
    ///   `.diskFull`, `.invalidOptions`.
    public static func open(_ options: TranscriptLogOptions) throws(TranscriptError) -> TranscriptLog {
        try validate(options)
        let io = options.io
        let dir = options.directory
        try ensureDirectory(dir, io: io)
        let lockFD = try takeLock(dir, io: io)
        do throws(TranscriptError) {
            return try recover(options, lockFD: lockFD)
        } catch {
            io.close(lockFD)
            throw error
        }
    }

    private static func recover(_ options: TranscriptLogOptions, lockFD: Int32) throws(TranscriptError) -> TranscriptLog {
        let io = options.io
        let dir = options.directory
        let started = ContinuousClock.now
        var dirtyDirectory = try removeTemporaries(dir, io: io)
        let checkpoints = CheckpointUse(
            read: options.indexCheckpoints, write: options.indexCheckpoints, sync: options.fsync != .never)
        let scanner = SegmentScanner(
            io: io, directory: dir, policy: options.skipDamagedRecords ? .skip : .fail,
            dedupe: DedupePolicy(options), writable: true, checkpoints: checkpoints)
        try scanner.scanAll()
        var result = scanner.result
        for name in result.tornSegments {
            do throws(FileIOError) { try io.unlink(dir + "/" + name) } catch { throw TranscriptError.io(error, "unlink \(name)") }
            dirtyDirectory = true
        }
        // Torn tail (G4): cut the last segment back to its last valid record. Then fdatasync it even without a
        // tail: records written before a crash but never synced are served from now on, so they must be durable.
        if let last = result.segments.last {
            do throws(FileIOError) {
                if result.tailStart < result.lastFileSize {
                    try io.ftruncate(last.file.fd, length: Int64(result.tailStart))
                }
                if options.fsync != .never || result.tailStart < result.lastFileSize { try io.fdatasync(last.file.fd) }
            } catch {
                throw TranscriptError.io(error, "recover \(last.file.name)")
            }
        }
        if dirtyDirectory { try syncDirectory(dir, io: io) }
        var writer = Writer()
        writer.lockFD = lockFD
        writer.nextSegment = result.highestNumber &+ 1
        writer.activeSummary = result.activeSummary
        var epoch = result.epoch
        // A new segment when there is none, or when the newest file was unusable (skipped damage): appends never
        // go into a damaged file or below a higher-numbered one.
        if result.segments.last.map({ $0.file.number != result.highestNumber }) ?? true {
            if result.segments.isEmpty { epoch = newEpoch() }
            let file = try createSegment(
                directory: dir, number: writer.nextSegment, epoch: epoch, maxRecord: options.maxRecordBytes,
                sync: options.fsync != .never, io: io)
            writer.nextSegment &+= 1
            writer.activeSummary = options.indexCheckpoints ? SegmentSummary() : nil
            result.segments.append(
                SegmentEntry(
                    file: file, size: TranscriptFormat.segmentHeaderSize, newestEventMs: nil,
                    createdMs: file.header?.createdMs ?? 0, maxRecord: options.maxRecordBytes))
        }
        guard let active = result.segments.last else {
            throw TranscriptError(.ioError, operation: "open", reason: "no active segment")
        }
        writer.active = active.file
        writer.activeSize = active.size
        writer.activeMaxRecord = active.maxRecord
        let evicted = try rebuildDedupe(&result, idleBeforeMs: idleCutoff(options, nowMs: wallClockMs()))
        result.report.durationNanoseconds = nanoseconds(ContinuousClock.now - started)
        var shared = Shared(sessions: result.sessions, segments: result.segments)
        shared.evictedWindows = evicted
        let log = TranscriptLog(
            options: options, writable: true, epoch: epoch, recovery: result.report, shared: shared, writer: writer)
        log.writer.withLock { log.fillReserve(&$0) }
        return log
    }

    static func validate(_ o: TranscriptLogOptions) throws(TranscriptError) {
        func bad(_ why: String) -> TranscriptError { TranscriptError(.invalidOptions, reason: why) }
        guard !o.directory.isEmpty else { throw bad("directory is empty") }
        guard o.segmentMaxBytes >= 4096, o.segmentMaxBytes <= TranscriptFormat.maxSegmentBytes else {
            throw bad("segmentMaxBytes must be in 4096...\(TranscriptFormat.maxSegmentBytes)")
        }
        guard o.maxRecordBytes >= 1024, o.maxRecordBytes <= TranscriptFormat.maxRecordLimit else {
            throw bad("maxRecordBytes must be in 1024...\(TranscriptFormat.maxRecordLimit)")
        }
        guard o.dedupeWindowPerSession >= 0 else { throw bad("dedupeWindowPerSession must be >= 0") }
        guard o.dedupeMinWindowSeconds >= 0 else { throw bad("dedupeMinWindowSeconds must be >= 0") }
        guard o.dedupeMaxPerSession >= o.dedupeWindowPerSession else {
            throw bad("dedupeMaxPerSession must be >= dedupeWindowPerSession")
        }
        if case .interval(let ms) = o.fsync, ms <= 0 { throw bad("fsync interval must be > 0 ms") }
        if let age = o.retentionMaxAgeSeconds, age <= 0 { throw bad("retentionMaxAgeSeconds must be > 0") }
        if let total = o.retentionMaxTotalBytes, total <= 0 { throw bad("retentionMaxTotalBytes must be > 0") }
    }

    /// Creates the directory if it is missing (one level) and makes the creation durable.
    static func ensureDirectory(_ dir: String, io: any FileIO) throws(TranscriptError) {
        do throws(FileIOError) {
            _ = try io.listDirectory(dir)
            return
        } catch where error.errno == ENOENT {
            do throws(FileIOError) {
                try io.makeDirectory(dir)
            } catch where error.errno != EEXIST {
                throw openError(error, "mkdir \(dir)")
            } catch {}
            let parent = dir.contains("/") ? String(dir[..<(dir.lastIndex(of: "/") ?? dir.endIndex)]) : "."
            try syncDirectory(parent.isEmpty ? "/" : parent, io: io)
        } catch {
            throw openError(error, "list \(dir)")
        }
    }

    /// Takes the directory's exclusive lock (flock on an open file description: also excludes a second open in
    /// this process). - Returns: the lock's descriptor.
    static func takeLock(_ dir: String, io: any FileIO) throws(TranscriptError) -> Int32 {
        let fd: Int32
        do throws(FileIOError) {
            fd = try io.open(dir + "/" + TranscriptFormat.lockFileName, flags: O_RDWR | O_CREAT, mode: 0o644)
        } catch {
            throw openError(error, "open lock file")
        }
        do throws(FileIOError) {
            try io.lockExclusive(fd)
        } catch {
            io.close(fd)
            if error.errno == EWOULDBLOCK || error.errno == EAGAIN {
                throw TranscriptError(.locked, errno: error.errno, operation: "flock", reason: "another process holds \(dir)")
            }
            throw TranscriptError.io(error, "flock")
        }
        return fd
    }

    /// Errors opening or creating files: permission and read-only file system both mean "cannot write here".
    static func openError(_ error: FileIOError, _ op: String) -> TranscriptError {
        switch error.errno {
        case EROFS, EACCES, EPERM: return TranscriptError(.readOnly, errno: error.errno, operation: op)
        default: return TranscriptError.io(error, op)
        }
    }

    /// Removes what a crash can leave behind: segments and checkpoints being created, and checkpoints whose
    /// segment is gone (retention or repair removed it). - Returns: whether anything was removed.
    static func removeTemporaries(_ dir: String, io: any FileIO) throws(TranscriptError) -> Bool {
        let names: [String]
        do throws(FileIOError) { names = try io.listDirectory(dir) } catch { throw TranscriptError.io(error, "list \(dir)") }
        var removed = false
        let segments = Set(names.compactMap(TranscriptFormat.segmentNumber(fromName:)))
        let checkpointTemporary = TranscriptFormat.checkpointSuffix + TranscriptFormat.checkpointTemporaryTail
        for name in names
        where name.hasSuffix(TranscriptFormat.temporarySuffix) || name.hasSuffix(checkpointTemporary)
            || TranscriptFormat.checkpointNumber(fromName: name).map({ !segments.contains($0) }) ?? false
        {
            do throws(FileIOError) { try io.unlink(dir + "/" + name) } catch { throw openError(error, "unlink \(name)") }
            removed = true
        }
        return removed
    }

    static func syncDirectory(_ dir: String, io: any FileIO) throws(TranscriptError) {
        do throws(FileIOError) { try io.fsyncDirectory(dir) } catch { throw TranscriptError.io(error, "fsync directory") }
    }

    /// Writes a new segment's header under a temporary name, syncs it, renames it into place and syncs the
    /// directory (G10), so a segment file with its final name always has a complete header.
    static func createSegment(
        directory: String, number: UInt32, epoch: String, maxRecord: Int, sync: Bool, io: any FileIO
    ) throws(TranscriptError) -> SegmentFile {
        let name = TranscriptFormat.segmentName(number)
        let path = directory + "/" + name
        let temporary = directory + "/" + TranscriptFormat.segmentName(number).dropLast(TranscriptFormat.segmentSuffix.count)
            + TranscriptFormat.temporarySuffix
        let header = SegmentHeader(number: number, createdMs: wallClockMs(), maxRecord: maxRecord, epoch: epoch)
        let bytes = header.encoded()
        let fd: Int32
        do throws(FileIOError) { fd = try io.open(temporary, flags: O_RDWR | O_CREAT | O_TRUNC, mode: 0o644) } catch {
            throw openError(error, "create \(name)")
        }
        var step = "write header"
        do throws(FileIOError) {
            try writeAll(io, fd, bytes, at: 0)
            if sync {
                step = "fdatasync header"
                try io.fdatasync(fd)
            }
            step = "rename"
            try io.rename(temporary, to: path)
        } catch {
            io.close(fd)
            try? io.unlink(temporary)
            throw TranscriptError.io(error, "\(step) \(name)")
        }
        if sync {
            do throws(FileIOError) { try io.fsyncDirectory(directory) } catch {
                io.close(fd)
                throw TranscriptError.io(error, "fsync directory")
            }
        }
        return SegmentFile(number: number, name: name, path: path, fd: fd, io: io, header: header)
    }

    /// `pwrite` until everything is written. A zero-byte write is reported as ENOSPC (no progress possible).
    static func writeAll(_ io: any FileIO, _ fd: Int32, _ bytes: [UInt8], at offset: Int) throws(FileIOError) {
        var failure: FileIOError? = nil
        bytes.withUnsafeBytes { raw in
            var written = 0
            // Bounded: each pass writes at least one byte or stops.
            while written < raw.count {
                do throws(FileIOError) {
                    let n = try io.pwrite(
                        fd, UnsafeRawBufferPointer(rebasing: raw[written...]), offset: Int64(offset + written))
                    guard n > 0 else { throw FileIOError(errno: ENOSPC) }
                    written += n
                } catch {
                    failure = error
                    return
                }
            }
        }
        if let failure { throw failure }
    }

    /// Re-reads the records each session's dedupe window needs to rebuild it (cheaper than building it during
    /// the scan, which would create two strings per record of the whole log): the last `dedupeWindowPerSession`,
    /// and before them those of segments with an event inside the time window (`dedupeMinWindowSeconds` before the
    /// session's newest event), at most `dedupeMaxPerSession`. Inserted in seq order with their event times, the
    /// window keeps exactly what it kept before the restart.
    ///
    /// One pass in log order over the union of those records: sessions interleave in the log, so walking the
    /// records session by session would re-read every chunk once per session (O(sessions × log size); 100
    /// sessions over a 400 MB log read 40 GB). Sorted by location each chunk is read once, and each session's
    /// records still arrive in its seq order (a session's locations grow with its seqs).
    ///
    /// Sessions whose newest event is older than `idleBeforeMs` are not rebuilt: their window is marked evicted
    /// (rebuilt by their next publish, `warmDedupe`). - Returns: how many were marked.
    @discardableResult
    static func rebuildDedupe(_ result: inout ScanResult, idleBeforeMs: Int64? = nil) throws(TranscriptError) -> Int {
        var byNumber: [UInt32: SegmentEntry] = [:]
        for s in result.segments { byNumber[s.file.number] = s }
        var names: [String] = []
        var wanted: [(location: RecordLocation, slot: Int32)] = []
        var idle: [String] = []
        defer { for name in idle { result.sessions[name]?.dedupeEvicted = true } }
        for (name, index) in result.sessions where !index.dedupe.policy.isOff {
            if let before = idleBeforeMs, index.lastTimestampMs < before {
                idle.append(name)
                continue
            }
            let from = windowStart(index) { byNumber[$0]?.newestEventMs }
            let count = index.locations.count
            guard from < count else { continue }
            let slot = Int32(names.count)
            names.append(name)
            for i in from..<count { wanted.append((index.locations[i], slot)) }
        }
        guard !wanted.isEmpty else { return idle.count }
        wanted.sort { $0.location < $1.location }
        var indexes: [SessionIndex] = []
        indexes.reserveCapacity(names.count)
        for name in names {
            guard let index = result.sessions.removeValue(forKey: name) else { continue }
            indexes.append(index)
        }
        // Put the indexes back whatever happens below (a read error leaves windows partly rebuilt; open fails).
        defer { for (i, name) in names.enumerated() where i < indexes.count { result.sessions[name] = indexes[i] } }
        let reader = ChunkReader(capacity: 256 << 10)
        for w in wanted {
            guard let seg = byNumber[UInt32(w.location >> 32)] else { continue }
            try insertRecord(reader, seg, offset: Int(w.location & 0xFFFF_FFFF), into: &indexes[Int(w.slot)].dedupe)
        }
        return idle.count
    }

    /// Index (in `index.locations`) of the oldest record the session's dedupe window holds: the last `minIDs`, and
    /// before them those of segments with an event inside the time window (`minSeconds` before the session's
    /// newest event), at most `maxIDs`. `newestEventMs` gives a segment's newest event time by number.
    static func windowStart(_ index: SessionIndex, newestEventMs: (UInt32) -> Int64?) -> Int {
        let policy = index.dedupe.policy
        let count = index.locations.count
        var from = max(0, count - policy.minIDs)
        let cutoff = index.lastTimestampMs - Int64(policy.minSeconds) * 1000
        // Bounded by the cap: each step takes one more record.
        while from > 0 && count - from < policy.maxIDs
            && (newestEventMs(UInt32(index.locations[from - 1] >> 32)) ?? .min) >= cutoff
        {
            from -= 1
        }
        return from
    }

    /// Reads the event at `offset` and inserts its (sub, id) into `window` with its seq and time.
    static func insertRecord(
        _ reader: ChunkReader, _ seg: SegmentEntry, offset: Int, into window: inout DedupeWindow
    ) throws(TranscriptError) {
        let (layout, view) = try fetch(reader, seg, offset: offset)
        let key = DedupeKey(
            sub: String(decoding: UnsafeRawBufferPointer(rebasing: view[layout.sub]), as: UTF8.self),
            id: String(decoding: UnsafeRawBufferPointer(rebasing: view[layout.id]), as: UTF8.self))
        window.insert(key, seq: layout.seq, timestampMs: layout.timestampMs)
    }

    /// The time before which a session counts as idle for `dedupeIdleEvictionSeconds` (nil: eviction off).
    static func idleCutoff(_ o: TranscriptLogOptions, nowMs: Int64) -> Int64? {
        o.dedupeIdleEvictionSeconds > 0 ? nowMs - Int64(o.dedupeIdleEvictionSeconds) * 1000 : nil
    }

    /// A session's dedupe window rebuilt from the log (for an evicted one): its records, read through the index in
    /// seq order, inserted as they were when they were appended, so it holds exactly what it held before.
    /// Called under the `shared` lock (as `verifiedDuplicate` is): O(window) reads.
    static func rebuiltWindow(_ s: Shared, _ index: SessionIndex) throws(TranscriptError) -> DedupeWindow {
        var window = DedupeWindow(index.dedupe.policy)
        guard !index.dedupe.policy.isOff else { return window }
        let reader = ChunkReader(capacity: 256 << 10)
        let from = windowStart(index) { s.segment($0)?.newestEventMs }
        for i in from..<index.locations.count {
            let location = index.locations[i]
            guard let seg = s.segment(UInt32(location >> 32)) else { continue }
            try insertRecord(reader, seg, offset: Int(location & 0xFFFF_FFFF), into: &window)
        }
        return window
    }

    /// The seq of (sub, id) if the session's dedupe window remembers it: each candidate of the key's fingerprint is
    /// read back from the log and its (sub, id) compared, so a fingerprint collision never turns a new event into a
    /// duplicate. A candidate that can no longer be read (removed by retention, or a read error) does not count:
    /// the publish is stored as a new event. Called under the `shared` lock; reads only on a fingerprint hit.
    static func verifiedDuplicate(_ s: Shared, _ index: SessionIndex, _ key: DedupeKey) -> UInt64? {
        if index.dedupeEvicted {
            // `lookup` on an evicted session (appends warm the window first): a rebuilt copy, not kept.
            var warm = index
            guard let window = try? rebuiltWindow(s, index) else { return nil }
            warm.dedupe = window
            warm.dedupeEvicted = false
            return verifiedDuplicate(s, warm, key)
        }
        let candidates = index.dedupe.candidates(key.fingerprint)
        guard !candidates.isEmpty else { return nil }
        let reader = ChunkReader(capacity: 4096)
        for seq in candidates {
            let i = index.firstIndex(after: seq &- 1)
            guard i < index.locations.count, index.seq(at: i) == seq else { continue }
            let location = index.locations[i]
            guard let seg = s.segment(UInt32(location >> 32)),
                let (layout, view) = try? fetch(reader, seg, offset: Int(location & 0xFFFF_FFFF))
            else { continue }
            if layout.seq == seq && UnsafeRawBufferPointer(rebasing: view[layout.sub]).elementsEqual(key.sub.utf8)
                && UnsafeRawBufferPointer(rebasing: view[layout.id]).elementsEqual(key.id.utf8)
            {
                return seq
            }
        }
        return nil
    }

    /// Reads and checks the record at `offset` of a segment. The view is valid until the reader's next call.
    static func fetch(
        _ reader: ChunkReader, _ seg: SegmentEntry, offset: Int
    ) throws(TranscriptError) -> (RecordLayout, UnsafeRawBufferPointer) {
        var view = try reader.bytes(seg.file, offset: offset, count: TranscriptFormat.recordHeaderSize, limit: seg.size)
        var parse = TranscriptFormat.parseRecord(view, fileRemaining: seg.size - offset, maxRecord: seg.maxRecord)
        if case .needBytes(let n) = parse {
            view = try reader.bytes(seg.file, offset: offset, count: n, limit: seg.size)
            parse = TranscriptFormat.parseRecord(view, fileRemaining: view.count, maxRecord: seg.maxRecord)
        }
        switch parse {
        case .valid(let layout): return (layout, view)
        case .invalid(let why): throw TranscriptError.corrupted(seg.file.name, offset, why)
        case .needBytes: throw TranscriptError.corrupted(seg.file.name, offset, "record beyond end of file")
        }
    }

    static func newEpoch() -> String {
        let hex = String(UInt64.random(in: .min ... .max), radix: 16)
        return String(repeating: "0", count: TranscriptFormat.epochLength - hex.count) + hex
    }

    static func wallClockMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    static func nanoseconds(_ d: Duration) -> UInt64 {
        let (s, atto) = d.components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000)
    }

    // MARK: Append

    /// Appends a batch with one write and (policy `always`) one fdatasync: group commit.
    ///
    /// Seqs are assigned here, per session, +1, in batch order. A request whose (session, sub, id) is in the
    /// dedupe window, or earlier in the same batch, gets `.duplicate` with the original seq and writes nothing.
    /// - Parameter batch: the events, in acceptance order.
    /// - Returns: one outcome per request, in order.
    /// - Throws: if it throws, nothing of the batch is visible and nothing is acknowledged; the file was cut back
    ///   to the batch's start and the cut synced, so the batch is not stored, now or after a reopen. `.diskFull`
    ///   leaves the log usable; `.ioError` on write or fdatasync puts it in the failed state (later calls throw
    ///   `.failed` until reopen). `.outcomeUnknown`: the cut failed too, the batch may be in the file (failed
    ///   state). Also `.recordTooLarge`, `.closed`.
    public func append(_ batch: [AppendRequest]) throws(TranscriptError) -> [AppendOutcome] {
        try writer.withLock { (w: inout Writer) throws(TranscriptError) -> [AppendOutcome] in
            try checkWritable(w)
            guard !batch.isEmpty else { return [] }
            var largest = 0
            let maxString = TranscriptFormat.maxStringBytes
            for r in batch {
                guard r.session.utf8.count <= maxString, r.id.utf8.count <= maxString, r.kind.utf8.count <= maxString,
                    r.sub.utf8.count <= maxString, r.role.utf8.count <= maxString
                else {
                    throw TranscriptError(.recordTooLarge, reason: "a string field exceeds 65535 bytes")
                }
                let size = TranscriptFormat.eventPayloadSize(r)
                guard size <= options.maxRecordBytes else {
                    throw TranscriptError(.recordTooLarge, reason: "payload of \(size) bytes exceeds \(options.maxRecordBytes)")
                }
                largest = max(largest, size)
            }
            try warmDedupe(batch)
            let outcomes = plan(batch, &w)
            guard !w.planned.isEmpty else { return outcomes }
            w.buffer.removeAll(keepingCapacity: true)
            w.offsets.removeAll(keepingCapacity: true)
            for p in w.planned {
                w.offsets.append(w.buffer.count)
                TranscriptFormat.appendEvent(batch[p.index], seq: p.seq, to: &w.buffer)
            }
            guard w.buffer.count <= TranscriptFormat.maxBatchBytes else {
                throw TranscriptError(.recordTooLarge, reason: "batch exceeds \(TranscriptFormat.maxBatchBytes) bytes")
            }
            if (w.activeSize > TranscriptFormat.segmentHeaderSize
                && w.activeSize + w.buffer.count > options.segmentMaxBytes) || largest > w.activeMaxRecord
            {
                try roll(&w)
            }
            let base = try commitBuffer(&w, forceSync: false)
            publish(batch, &w, base: base)
            return outcomes
        }
    }

    /// Rebuilds the evicted dedupe windows of the batch's sessions from the log before the batch is planned, so a
    /// retry of an old id is still a duplicate. Costs nothing while no window is evicted.
    /// - Throws: the read error (`.ioError`, `.corrupted`); the batch is then refused, nothing written.
    private func warmDedupe(_ batch: [AppendRequest]) throws(TranscriptError) {
        try shared.withLock { (s: inout Shared) throws(TranscriptError) in
            guard s.evictedWindows > 0 else { return }
            var done: Set<String> = []
            for r in batch where !done.contains(r.session) {
                done.insert(r.session)
                guard let index = s.sessions[r.session], index.dedupeEvicted else { continue }
                let window = try Self.rebuiltWindow(s, index)
                s.sessions[r.session]?.dedupe = window
                s.sessions[r.session]?.dedupeEvicted = false
                s.evictedWindows -= 1
            }
        }
    }

    /// Drops from memory the dedupe window of every session whose newest event is older than
    /// `dedupeIdleEvictionSeconds` before `nowMs` (their next publish rebuilds it from the log). Called on the
    /// storage thread's retention tick. - Returns: the number of windows dropped.
    @discardableResult
    public func evictIdleDedupe(nowMs: Int64) -> Int {
        guard let idle = Self.idleCutoff(options, nowMs: nowMs) else { return 0 }
        return writer.withLock { _ in
            shared.withLock { s in
                var evicted = 0
                for i in s.sessions.indices {
                    let index = s.sessions.values[i]
                    guard !index.dedupeEvicted, !index.dedupe.policy.isOff, index.lastTimestampMs < idle else { continue }
                    s.sessions.values[i].dedupe = DedupeWindow(index.dedupe.policy)
                    s.sessions.values[i].dedupeEvicted = true
                    evicted += 1
                }
                s.evictedWindows += evicted
                return evicted
            }
        }
    }

    /// Bytes the dedupe windows of all sessions hold in memory (ring, times, index), and how many are evicted.
    public var dedupeMemory: (bytes: Int, evictedSessions: Int) {
        shared.withLock { s in (s.sessions.values.reduce(0) { $0 + $1.dedupe.memoryBytes }, s.evictedWindows) }
    }

    func checkWritable(_ w: Writer) throws(TranscriptError) {
        guard writable else { throw TranscriptError(.notWritable, reason: "opened read-only") }
        switch w.state {
        case .open: return
        case .failed(let e): throw TranscriptError(.failed, errno: e.errno, operation: e.operation, reason: "after \(e)")
        case .closed: throw TranscriptError(.closed)
        }
    }

    /// Assigns seqs and finds duplicates under the index lock (only this thread changes heads, so the plan stays
    /// valid until publish). Fills `w.planned` and `w.slots` (one per distinct session of the batch), hashing each
    /// session name once per request and each dedupe key once.
    private func plan(_ batch: [AppendRequest], _ w: inout Writer) -> [AppendOutcome] {
        struct PendingKey: Hashable {
            var slot: Int
            var key: DedupeKey
        }
        var outcomes: [AppendOutcome] = []
        outcomes.reserveCapacity(batch.count)
        var planned = w.planned
        planned.removeAll(keepingCapacity: true)
        var slots: [String: Int] = [:]
        var heads: [UInt64] = []
        shared.withLock { s in
            var windows: [Dictionary<String, SessionIndex>.Index?] = []
            var pendingKeys: [PendingKey: UInt64] = [:]
            for (i, r) in batch.enumerated() {
                let slot: Int
                if let known = slots[r.session] {
                    slot = known
                } else {
                    slot = heads.count
                    slots[r.session] = slot
                    let found = s.sessions.index(forKey: r.session)
                    windows.append(found)
                    heads.append(found.map { s.sessions.values[$0].head } ?? 0)
                }
                let key = DedupeKey(sub: r.sub, id: r.id)
                let pending = PendingKey(slot: slot, key: key)
                if let seq = windows[slot].flatMap({ Self.verifiedDuplicate(s, s.sessions.values[$0], key) })
                    ?? pendingKeys[pending]
                {
                    outcomes.append(.duplicate(seq: seq))
                    continue
                }
                heads[slot] += 1
                pendingKeys[pending] = heads[slot]
                planned.append(Planned(index: i, seq: heads[slot], slot: slot, key: key))
                outcomes.append(.appended(seq: heads[slot]))
            }
        }
        w.planned = planned
        w.slotSessions = Array(repeating: "", count: heads.count)
        for (name, slot) in slots { w.slotSessions[slot] = name }
        return outcomes
    }

    /// Writes `w.buffer` at the end of the active segment and syncs per policy (always when `forceSync`, except
    /// under `never`). - Returns: the offset the buffer was written at.
    func commitBuffer(_ w: inout Writer, forceSync: Bool) throws(TranscriptError) -> Int {
        guard let file = w.active else { throw TranscriptError(.closed) }
        let base = w.activeSize
        do throws(FileIOError) {
            try Self.writeAll(io, file.fd, w.buffer, at: base)
        } catch {
            let err = TranscriptError.io(error, "pwrite \(file.name)")
            // G6: cut a short write back to the record boundary. If even that fails, the file's end is unknown.
            try cutBack(&w, file, to: base, after: err)
            // ENOSPC-like errors leave a consistent file: retry later. Anything else (EIO) is G7: stop writing.
            if err.code != .diskFull { w.state = .failed(err) }
            throw err
        }
        w.activeSize = base + w.buffer.count
        do throws(TranscriptError) {
            switch options.fsync {
            case .always:
                try syncActive(&w)
            case .interval(let ms):
                if forceSync || w.lastSync.duration(to: .now) >= .milliseconds(ms) { try syncActive(&w) }
            case .never:
                break
            }
        } catch {
            // The batch is written but not known durable, and its publishers are told it was not stored: cut it off,
            // or a reopen would find whole records of it and serve events that were refused.
            w.activeSize = base
            try cutBack(&w, file, to: base, after: error)
            throw error
        }
        return base
    }

    /// Cuts the active segment back to `base` (where the failed batch starts) and makes the cut durable, so no
    /// byte of the batch can reappear at a reopen (an event refused is never stored later). The log's state is
    /// left to the caller, except when the cut fails.
    /// - Throws: `.outcomeUnknown` (the log is then failed) if the truncate or its fdatasync fails: the batch may
    ///   still be in the file.
    private func cutBack(
        _ w: inout Writer, _ file: SegmentFile, to base: Int, after failure: TranscriptError
    ) throws(TranscriptError) {
        do throws(FileIOError) {
            try io.ftruncate(file.fd, length: Int64(base))
            if options.fsync != .never { try io.fdatasync(file.fd) }
        } catch {
            let unknown = TranscriptError(
                .outcomeUnknown, errno: error.errno, operation: "cut back \(file.name)", reason: "after \(failure)")
            w.state = .failed(unknown)
            throw unknown
        }
    }

    /// fdatasync the active segment. A failure is final until reopen (G7: no retry that pretends).
    private func syncActive(_ w: inout Writer) throws(TranscriptError) {
        guard let file = w.active else { return }
        do throws(FileIOError) {
            try io.fdatasync(file.fd)
        } catch {
            let err = TranscriptError.io(error, "fdatasync \(file.name)")
            w.state = .failed(err)
            throw err
        }
        w.lastSync = .now
    }

    /// Makes a committed batch visible: index, heads, dedupe, segment size. Looks each session up once per batch.
    private func publish(_ batch: [AppendRequest], _ w: inout Writer, base: Int) {
        guard let file = w.active else { return }
        let policy = DedupePolicy(options)
        let planned = w.planned
        let offsets = w.offsets
        let size = w.activeSize
        let names = w.slotSessions
        if w.activeSummary != nil {
            let slots = names.map { w.activeSummary!.slot($0) }
            for (k, p) in planned.enumerated() {
                w.activeSummary!.addEvent(
                    slot: slots[p.slot], seq: p.seq, offset: base + offsets[k], timestampMs: batch[p.index].timestampMs)
            }
        }
        shared.withLock { s in
            for name in names where s.sessions[name] == nil { s.sessions[name] = SessionIndex(dedupe: policy) }
            // No insertion below, so these indices stay valid while values are updated in place.
            let indices = names.map { s.sessions.index(forKey: $0) }
            var newest: Int64? = nil
            for (k, p) in planned.enumerated() {
                guard let at = indices[p.slot] else { continue }
                let r = batch[p.index]
                let location = makeLocation(segment: file.number, offset: base + offsets[k])
                s.sessions.values[at].add(seq: p.seq, location: location, timestampMs: r.timestampMs)
                s.sessions.values[at].dedupe.insert(p.key, seq: p.seq, timestampMs: r.timestampMs)
                newest = max(newest ?? r.timestampMs, r.timestampMs)
            }
            let last = s.segments.count - 1
            if last >= 0 {
                s.segments[last].size = size
                if let n = newest { s.segments[last].newestEventMs = max(s.segments[last].newestEventMs ?? n, n) }
            }
        }
    }

    /// Starts a new segment (docs: "Size-based roll"). The previous one is synced first, so only the last segment
    /// can ever end in a torn record.
    private func roll(_ w: inout Writer) throws(TranscriptError) {
        if options.fsync != .never { try syncActive(&w) }
        guard w.nextSegment < UInt32.max else {
            throw TranscriptError(.invalidOptions, reason: "segment numbers exhausted")
        }
        let file: SegmentFile
        do throws(TranscriptError) {
            file = try Self.createSegment(
                directory: options.directory, number: w.nextSegment, epoch: epoch, maxRecord: options.maxRecordBytes,
                sync: options.fsync != .never, io: io)
        } catch {
            if error.code != .diskFull { w.state = .failed(error) }
            throw error
        }
        w.nextSegment += 1
        if let sealed = w.active, let header = sealed.header, let summary = w.activeSummary, summary.regular {
            writeCheckpoint(
                SegmentCheckpoint(number: sealed.number, segmentSize: w.activeSize, headerCRC: header.crc, summary: summary))
        }
        w.activeSummary = options.indexCheckpoints ? SegmentSummary() : nil
        w.active = file
        w.activeSize = TranscriptFormat.segmentHeaderSize
        w.activeMaxRecord = options.maxRecordBytes
        let entry = SegmentEntry(
            file: file, size: TranscriptFormat.segmentHeaderSize, newestEventMs: nil,
            createdMs: file.header?.createdMs ?? 0, maxRecord: options.maxRecordBytes)
        shared.withLock { $0.segments.append(entry) }
    }

    /// Writes a sealed segment's checkpoint. A failure (a full disk, say) is counted and otherwise ignored: the
    /// segment is durable already, and without its checkpoint the next open scans it.
    private func writeCheckpoint(_ c: SegmentCheckpoint) {
        do throws(TranscriptError) {
            try c.write(directory: options.directory, sync: options.fsync != .never, io: io)
        } catch {
            shared.withLock { $0.checkpointFailures += 1 }
        }
    }

    /// Checkpoints of sealed segments that could not be written since open (the next open scans those segments).
    public var checkpointWriteFailures: Int { shared.withLock { $0.checkpointFailures } }

    // MARK: Sync and close

    /// fdatasync now (the `interval` policy's timer, shutdown).
    /// - Throws: `.failed` after an earlier failure; `.ioError` if this fdatasync fails (the log is then failed).
    public func sync() throws(TranscriptError) {
        try writer.withLock { (w: inout Writer) throws(TranscriptError) in
            try checkWritable(w)
            try syncActive(&w)
        }
    }

    /// Syncs (unless the log failed), releases the directory lock and stops reads. Idempotent.
    /// - Throws: the fdatasync's error, after everything was released anyway.
    public func close() throws(TranscriptError) {
        try writer.withLock { (w: inout Writer) throws(TranscriptError) in
            var syncError: TranscriptError? = nil
            switch w.state {
            case .closed: return
            case .open:
                if writable && options.fsync != .never {
                    do throws(TranscriptError) { try syncActive(&w) } catch { syncError = error }
                }
            case .failed: break
            }
            w.state = .closed
            w.active = nil
            if w.lockFD >= 0 { io.close(w.lockFD) }
            w.lockFD = -1
            if w.reserveFD >= 0 { io.close(w.reserveFD) }
            w.reserveFD = -1
            shared.withLock { s in
                s.closed = true
                s.segments.removeAll()
            }
            if let syncError { throw syncError }
        }
    }

    // MARK: Read

    /// The session's events with seq > `after`, in order, at most `limit` and about `maxBytes` (at least one
    /// record when any is due). Costs O(records returned): an index lookup, then `pread`s outside the lock.
    /// - Parameters:
    ///   - session: session id.
    ///   - after: the last seq the caller has; older than `firstHeld - 1` reads from `firstHeld`.
    ///   - limit: the most records to return.
    ///   - maxBytes: stop before this many record bytes (after the first record).
    /// - Returns: the records with `firstHeld` and `head`.
    /// - Throws: `.closed`; `.corrupted` if a record no longer matches its checksum (never served); `.ioError`.
    public func read(session: String, after: UInt64, limit: Int, maxBytes: Int = 1 << 20) throws(TranscriptError) -> ReadResult {
        struct Pending {
            var seq: UInt64
            var segment: SegmentEntry
            var offset: Int
        }
        let (pending, firstHeld, head) = try shared.withLock {
            (s: inout Shared) throws(TranscriptError) -> ([Pending], UInt64, UInt64) in
            guard !s.closed else { throw TranscriptError(.closed) }
            guard let index = s.sessions[session] else { return ([], 1, 0) }
            let start = index.firstIndex(after: after)
            let end = min(index.locations.count, start + max(0, min(limit, index.locations.count)))
            var out: [Pending] = []
            out.reserveCapacity(max(0, end - start))
            for i in start..<max(start, end) {
                let loc = index.locations[i]
                guard let seg = s.segment(UInt32(loc >> 32)) else {
                    throw TranscriptError.corrupted(
                        TranscriptFormat.segmentName(UInt32(loc >> 32)), Int(loc & 0xFFFF_FFFF), "indexed segment missing")
                }
                out.append(Pending(seq: index.seq(at: i), segment: seg, offset: Int(loc & 0xFFFF_FFFF)))
            }
            return (out, index.firstHeld, index.head)
        }
        var records: [TranscriptRecord] = []
        records.reserveCapacity(pending.count)
        let reader = ChunkReader(capacity: 64 << 10)
        var bytes = 0
        for p in pending {
            let (layout, view) = try Self.fetch(reader, p.segment, offset: p.offset)
            let sessionBytes = UnsafeRawBufferPointer(rebasing: view[layout.session])
            // The index and the bytes must agree; a mismatch is damage, and nothing altered is served.
            guard layout.type == TranscriptFormat.typeEvent, layout.seq == p.seq,
                sessionBytes.elementsEqual(session.utf8)
            else {
                throw TranscriptError.corrupted(p.segment.file.name, p.offset, "record does not match the index")
            }
            bytes += layout.size
            if bytes > maxBytes && !records.isEmpty { break }
            func text(_ r: Range<Int>) -> String {
                String(decoding: UnsafeRawBufferPointer(rebasing: view[r]), as: UTF8.self)
            }
            records.append(
                TranscriptRecord(
                    session: session, seq: layout.seq, id: text(layout.id), kind: text(layout.kind), sub: text(layout.sub),
                    role: text(layout.role), timestampMs: layout.timestampMs,
                    data: Array(UnsafeRawBufferPointer(rebasing: view[layout.data]))))
        }
        return ReadResult(records: records, firstHeld: firstHeld, head: head)
    }

    /// The session's latest committed seq (0 if unknown).
    /// - Parameter session: session id.
    /// - Returns: the head.
    public func head(session: String) -> UInt64 {
        shared.withLock { $0.sessions[session]?.head ?? 0 }
    }

    /// Head, first held seq and last event time of a session; nil if the log has never seen it.
    /// - Parameter session: session id.
    /// - Returns: the summary.
    public func summary(session: String) -> SessionSummary? {
        shared.withLock { s in s.sessions[session].map { Self.summary(session, $0) } }
    }

    /// Summaries of every session, sorted by session id.
    /// - Returns: the summaries.
    public func sessions() -> [SessionSummary] {
        shared.withLock { s in s.sessions.map { Self.summary($0.key, $0.value) } }.sorted { $0.session < $1.session }
    }

    static func summary(_ name: String, _ i: SessionIndex) -> SessionSummary {
        SessionSummary(session: name, head: i.head, firstHeld: i.firstHeld, lastTimestampMs: i.lastTimestampMs)
    }

    /// The seq stored for (session, sub, id) if it is in the dedupe window.
    /// - Parameters:
    ///   - session: session id.
    ///   - sub: publisher subject.
    ///   - id: publisher message id.
    /// - Returns: the seq, or nil.
    public func lookup(session: String, sub: String, id: String) -> UInt64? {
        shared.withLock { s in s.sessions[session].flatMap { Self.verifiedDuplicate(s, $0, DedupeKey(sub: sub, id: id)) } }
    }
}
