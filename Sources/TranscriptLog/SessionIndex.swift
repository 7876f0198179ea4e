// The in-memory per-session index (docs/transcript-format.md, "Recovery"): where each record of a
// session lies, its head, and its dedupe window. Owned by `TranscriptLog.shared` (a Mutex).

/// A record's location: segment number in the high 32 bits, byte offset in the low 32.
typealias RecordLocation = UInt64

@inline(__always)
func makeLocation(segment: UInt32, offset: Int) -> RecordLocation {
    (UInt64(segment) << 32) | UInt64(UInt32(truncatingIfNeeded: offset))
}

/// (sub, id): the publisher part of a dedupe key; the session is the dictionary the window lives in.
///
/// The hash is computed once (FNV-1a over the UTF-8 bytes) and reused by every table the key visits on the
/// append path (batch-local check, window lookup, insert, eviction): String hashing was the append path's
/// largest CPU cost.
struct DedupeKey: Hashable, Sendable {
    let sub: String
    let id: String
    let fingerprint: UInt64

    init(sub: String, id: String) {
        self.sub = sub
        self.id = id
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in sub.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        h = (h ^ 0xFF) &* 0x0000_0100_0000_01B3  // 0xFF never occurs in UTF-8: separates ("ab","c") from ("a","bc")
        for b in id.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        fingerprint = h
    }

    static func == (a: DedupeKey, b: DedupeKey) -> Bool {
        a.fingerprint == b.fingerprint && a.sub == b.sub && a.id == b.id
    }

    func hash(into hasher: inout Hasher) { hasher.combine(fingerprint) }
}

/// The last `capacity` (sub, id) → seq pairs of one session, evicted oldest first.
struct DedupeWindow: Sendable {
    private(set) var map: [DedupeKey: UInt64] = [:]
    /// Insertion order, used as a ring once full; entries carry their seq so eviction never removes a newer mapping.
    private var ring: [(key: DedupeKey, seq: UInt64)] = []
    private var next = 0
    let capacity: Int

    init(capacity: Int) { self.capacity = max(0, capacity) }

    func lookup(_ key: DedupeKey) -> UInt64? { map[key] }

    mutating func insert(_ key: DedupeKey, seq: UInt64) {
        guard capacity > 0 else { return }
        if ring.count < capacity {
            ring.append((key, seq))
        } else {
            let old = ring[next]
            if map[old.key] == old.seq { map.removeValue(forKey: old.key) }
            ring[next] = (key, seq)
            next = next + 1 == capacity ? 0 : next + 1
        }
        map[key] = seq
    }
}

/// One session's records in log order.
///
/// Seqs are stored as runs instead of one u64 per record: a run is a stretch of consecutive seqs, and
/// there is exactly one run unless damaged records were skipped. That keeps the index at 8 bytes per record.
struct SessionIndex: Sendable {
    struct Run: Sendable {
        /// Index in `locations` of the run's first record.
        var index: Int
        /// Seq of that record.
        var seq: UInt64
    }

    private(set) var locations: [RecordLocation] = []
    private(set) var runs: [Run] = []
    /// Latest seq (events and head markers).
    private(set) var head: UInt64 = 0
    var lastTimestampMs: Int64 = 0
    /// Location of the session's newest record (event or head marker): retention must not delete it unwritten.
    private(set) var headLocation: RecordLocation = 0
    var dedupe: DedupeWindow

    init(dedupeCapacity: Int) { dedupe = DedupeWindow(capacity: dedupeCapacity) }

    var isEmpty: Bool { locations.isEmpty }
    /// Oldest seq held; head + 1 when nothing is held.
    var firstHeld: UInt64 { runs.first?.seq ?? head &+ 1 }
    /// Seq of the last indexed record (0 when none).
    var lastIndexedSeq: UInt64 { locations.isEmpty ? 0 : seq(at: locations.count - 1) }

    mutating func add(seq: UInt64, location: RecordLocation, timestampMs: Int64) {
        if let last = runs.last, seq == last.seq &+ UInt64(locations.count - last.index) {
            // continues the current run
        } else {
            runs.append(Run(index: locations.count, seq: seq))
        }
        locations.append(location)
        headLocation = location
        if seq > head { head = seq }
        lastTimestampMs = max(lastTimestampMs, timestampMs)
    }

    /// A head marker: the session's head without a record.
    mutating func raiseHead(to seq: UInt64, timestampMs: Int64, location: RecordLocation) {
        headLocation = location
        if seq > head { head = seq }
        lastTimestampMs = max(lastTimestampMs, timestampMs)
    }

    /// Index of the run containing record `i`.
    private func runIndex(containing i: Int) -> Int {
        var lo = 0
        var hi = runs.count - 1
        while lo < hi {  // bounded: halves each step
            let mid = (lo + hi + 1) / 2
            if runs[mid].index <= i { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    func seq(at i: Int) -> UInt64 {
        let r = runs[runIndex(containing: i)]
        return r.seq &+ UInt64(i - r.index)
    }

    /// Index of the first record with seq > `after` (== count when none).
    func firstIndex(after: UInt64) -> Int {
        // Find the first run whose last seq is > after; runs and seqs ascend together.
        var k = runs.count - 1
        while k >= 0 {  // bounded by the run count (1 unless damaged records were skipped)
            let run = runs[k]
            if run.seq <= after {
                let end = k + 1 < runs.count ? runs[k + 1].index : locations.count
                let offsetInRun = after - run.seq + 1
                return offsetInRun >= UInt64(end - run.index) ? end : run.index + Int(offsetInRun)
            }
            k -= 1
        }
        return 0
    }

    /// Removes the leading records whose segment number is below `segment`. - Returns: how many were removed.
    @discardableResult
    mutating func dropRecords(beforeSegment segment: UInt32) -> Int {
        let cutoff = UInt64(segment) << 32
        var lo = 0
        var hi = locations.count
        while lo < hi {  // first location >= cutoff; locations ascend
            let mid = (lo + hi) / 2
            if locations[mid] < cutoff { lo = mid + 1 } else { hi = mid }
        }
        let n = lo
        guard n > 0 else { return 0 }
        if n == locations.count {
            locations.removeAll()
            runs.removeAll()
            return n
        }
        let firstSeq = seq(at: n)
        locations.removeFirst(n)
        let k = runIndex(containing: n)
        runs.removeFirst(k)
        runs[0] = Run(index: 0, seq: firstSeq)
        for j in 1..<runs.count { runs[j].index -= n }
        return n
    }
}
