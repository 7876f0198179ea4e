// Public value types of the transcript log API: options, requests, outcomes, records, reports.

/// When an append is made durable (docs/transcript-format.md, "Appending").
public enum FsyncPolicy: Sendable, Equatable {
    /// `fdatasync` before `append` returns: an acknowledged batch survives power loss (G1).
    case always
    /// `append` returns after the write and fdatasyncs when the last sync is `milliseconds` old; the caller
    /// calls `sync()` on a timer. Loses at most `milliseconds` of acknowledged events on OS crash or power
    /// loss, nothing on `kill -9`.
    case interval(milliseconds: Int)
    /// Never fdatasync (tests, benchmarks). Survives `kill -9`, not an OS crash.
    case never
}

/// How a log is opened.
public struct TranscriptLogOptions: Sendable {
    /// The log's directory; created (one level) if missing.
    public var directory: String
    /// Durability of `append`.
    public var fsync: FsyncPolicy = .always
    /// Roll to a new segment when the active one would exceed this (4 KiB ... 1 GiB).
    public var segmentMaxBytes: Int = 64 << 20
    /// Delete whole segments whose newest event is older than this (seconds).
    public var retentionMaxAgeSeconds: Int? = nil
    /// Delete the oldest whole segments while the log is larger than this (bytes).
    public var retentionMaxTotalBytes: Int? = nil
    /// Open fails on damage in the middle of the log unless this is true (then damaged regions are skipped and counted).
    public var skipDamagedRecords: Bool = false
    /// How many recent (sub, id) pairs per session are remembered for dedupe, across restarts (at least).
    public var dedupeWindowPerSession: Int = 10_000
    /// And every (sub, id) whose event time is within this many seconds of the session's newest event, whatever
    /// the session's speed (`dedupe.min_window_seconds`); 0 = the count alone.
    public var dedupeMinWindowSeconds: Int = 300
    /// The per-session cap on remembered ids (~31 bytes each): at the cap the oldest is forgotten, even inside the
    /// time window. At least `dedupeWindowPerSession`.
    public var dedupeMaxPerSession: Int = 1 << 20
    /// A session whose newest event is older than this many seconds has its dedupe window dropped from memory
    /// (at open, and by `evictIdleDedupe(nowMs:)`); its next publish rebuilds it from the log, so dedupe stays
    /// exact (docs/transcript-format.md, "Dedupe window"). 0: windows stay in memory for as long as the log is open.
    public var dedupeIdleEvictionSeconds: Int = 3600
    /// The bound on a record's payload: a larger length on disk is corruption, never an allocation (1 KiB ... 256 MiB).
    public var maxRecordBytes: Int = 2 << 20
    /// Write an index checkpoint next to every sealed segment and use it at open instead of scanning the segment
    /// (docs/transcript-format.md, "Index checkpoints"). Off: every open scans every record (the old behaviour).
    public var indexCheckpoints: Bool = true
    /// Bytes kept in the `RESERVE` file for retention's head markers, released when a marker write finds the disk
    /// full, so retention can always free a full disk (0: no reserve). Writable opens only.
    public var retentionReserveBytes: Int = 1 << 20
    /// The I/O layer (injectable for fault tests).
    public var io: any FileIO = PosixFileIO()

    /// Options with defaults for a directory.
    /// - Parameter directory: the log's directory.
    public init(directory: String) {
        self.directory = directory
    }
}

/// One event to append.
public struct AppendRequest: Sendable {
    /// Session id.
    public var session: String
    /// Publisher's message id (dedupe key with `session` and `sub`).
    public var id: String
    /// Event kind, e.g. `chat.message`.
    public var kind: String
    /// Publisher's subject.
    public var sub: String
    /// Publisher's role.
    public var role: String
    /// Event time, Unix milliseconds.
    public var timestampMs: Int64
    /// The event's JSON bytes, stored byte-exact.
    public var data: [UInt8]

    /// Creates a request.
    /// - Parameters:
    ///   - session: session id.
    ///   - id: publisher's message id.
    ///   - kind: event kind.
    ///   - sub: publisher's subject.
    ///   - role: publisher's role.
    ///   - timestampMs: event time (Unix ms).
    ///   - data: JSON bytes.
    public init(
        session: String, id: String, kind: String, sub: String, role: String, timestampMs: Int64, data: [UInt8]
    ) {
        self.session = session
        self.id = id
        self.kind = kind
        self.sub = sub
        self.role = role
        self.timestampMs = timestampMs
        self.data = data
    }
}

/// What `append` did with one request.
public enum AppendOutcome: Sendable, Equatable {
    /// Stored with this seq.
    case appended(seq: UInt64)
    /// (session, sub, id) was already stored (or earlier in the same batch) with this seq; nothing written.
    case duplicate(seq: UInt64)

    /// The seq either way.
    public var seq: UInt64 {
        switch self {
        case .appended(let s), .duplicate(let s): return s
        }
    }
}

/// A stored event.
public struct TranscriptRecord: Sendable, Equatable {
    /// Session id.
    public var session: String
    /// Per-session sequence number (1, 2, 3, ...).
    public var seq: UInt64
    /// Publisher's message id.
    public var id: String
    /// Event kind.
    public var kind: String
    /// Publisher's subject.
    public var sub: String
    /// Publisher's role.
    public var role: String
    /// Event time, Unix milliseconds.
    public var timestampMs: Int64
    /// The event's JSON bytes exactly as appended.
    public var data: [UInt8]

    /// Creates a record value.
    /// - Parameters:
    ///   - session: session id.
    ///   - seq: sequence number.
    ///   - id: message id.
    ///   - kind: event kind.
    ///   - sub: publisher subject.
    ///   - role: publisher role.
    ///   - timestampMs: event time.
    ///   - data: JSON bytes.
    public init(
        session: String, seq: UInt64, id: String, kind: String, sub: String, role: String, timestampMs: Int64,
        data: [UInt8]
    ) {
        self.session = session
        self.seq = seq
        self.id = id
        self.kind = kind
        self.sub = sub
        self.role = role
        self.timestampMs = timestampMs
        self.data = data
    }
}

/// The answer to `read`.
public struct ReadResult: Sendable {
    /// Records with seq > the requested `after` (or from `firstHeld` when older ones were removed), in order.
    public var records: [TranscriptRecord]
    /// The oldest seq still held for the session; `head + 1` when none is held.
    public var firstHeld: UInt64
    /// The session's latest committed seq (0 if none).
    public var head: UInt64
}

/// A session's position in the log.
public struct SessionSummary: Sendable, Equatable {
    /// Session id.
    public var session: String
    /// Latest committed seq.
    public var head: UInt64
    /// Oldest seq still held (`head + 1` when none).
    public var firstHeld: UInt64
    /// Time of the latest event (Unix ms).
    public var lastTimestampMs: Int64
}

/// What recovery found when the log was opened.
public struct RecoveryReport: Sendable, Equatable {
    /// Segment files whose records were scanned.
    public var segmentsScanned: Int = 0
    /// Sealed segments recovered from their index checkpoint instead of a scan.
    public var segmentsFromCheckpoint: Int = 0
    /// Checkpoints written at open for sealed segments that had none (or a damaged or stale one).
    public var checkpointsWritten: Int = 0
    /// Checkpoints that could not be written at open (the segment is scanned again next time; nothing is lost).
    public var checkpointWriteFailures: Int = 0
    /// Valid records recovered (events and head markers), scanned or from checkpoints.
    public var recordsScanned: Int = 0
    /// Bytes of a torn tail removed (or, read-only, ignored) at the end of the last segment.
    public var truncatedBytes: Int = 0
    /// Damaged regions skipped (only with `skipDamagedRecords`).
    public var damagedRecords: Int = 0
    /// Bytes in the skipped damaged regions.
    public var skippedBytes: Int = 0
    /// Wall time of the scan and index rebuild, in nanoseconds.
    public var durationNanoseconds: UInt64 = 0
}

/// One damaged region found by `verify` (or skipped by recovery).
public struct DamageReport: Sendable, Equatable {
    /// Segment file name.
    public var segment: String
    /// Byte offset of the first bad byte.
    public var offset: Int
    /// Bytes up to the next valid record (or the end of the segment).
    public var length: Int
    /// Why (e.g. "checksum mismatch", "seq gap").
    public var reason: String
}

/// The result of `TranscriptLog.verify(directory:)`.
public struct VerifyReport: Sendable {
    /// The log's epoch ("" if there is no segment).
    public var epoch: String
    /// Segments and records scanned, torn tail size (nothing is modified).
    public var recovery: RecoveryReport
    /// Every damaged region in the middle of the log, in log order. Empty means the log is sound.
    public var damage: [DamageReport]
    /// Number of sessions and their summaries.
    public var sessions: [SessionSummary]
}

/// The result of `TranscriptLog.repair(directory:)`.
public struct RepairReport: Sendable {
    /// False when there was no mid-log damage (nothing changed; the epoch stays).
    public var repaired: Bool
    /// The epoch before repair.
    public var oldEpoch: String
    /// The epoch after repair (equal to `oldEpoch` when nothing was repaired).
    public var newEpoch: String
    /// Where the kept prefix ends.
    public var cutSegment: String
    /// Offset in `cutSegment` where the prefix ends.
    public var cutOffset: Int
    /// Bytes removed (the damaged segment's rest plus every later segment).
    public var bytesDropped: Int
    /// Later segment files deleted.
    public var segmentsDeleted: Int
}
