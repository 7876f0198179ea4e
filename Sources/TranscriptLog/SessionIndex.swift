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

/// What a session's dedupe window keeps (docs/transcript-format.md, "Dedupe window").
struct DedupePolicy: Sendable, Equatable {
    /// At least the newest this many ids (`TranscriptLogOptions.dedupeWindowPerSession`; 0 turns dedupe off).
    var minIDs: Int
    /// And at least the ids whose event time is within this many seconds of the session's newest event.
    var minSeconds: Int
    /// Never more than this many ids per session: at the cap the oldest id goes, even inside the time window.
    var maxIDs: Int

    init(minIDs: Int, minSeconds: Int = 0, maxIDs: Int = .max) {
        self.minIDs = max(0, minIDs)
        self.minSeconds = max(0, minSeconds)
        self.maxIDs = max(self.minIDs, maxIDs)
    }

    init(_ o: TranscriptLogOptions) {
        self.init(minIDs: o.dedupeWindowPerSession, minSeconds: o.dedupeMinWindowSeconds, maxIDs: o.dedupeMaxPerSession)
    }

    var isOff: Bool { minIDs == 0 }
}

/// One session's remembered publish ids, oldest first: the newest `minIDs` and every id within `minSeconds` of
/// the newest event, at most `maxIDs`.
///
/// Compact: an id is its 64-bit fingerprint (`DedupeKey.fingerprint`) and its seq (``Entry``, 16 bytes) plus its
/// event second (4 bytes) in a ring that grows by a quarter when full (20-25 bytes per id), and a 4-byte slot of an
/// open-addressing index kept between 64% and 80% full (5-6.25 bytes per id): at most 31.25 bytes per id at any
/// fill, against ~150 for the strings. A fingerprint can collide, so a hit is only a candidate: the log reads the
/// record back and compares (sub, id) before it answers `duplicate` (``TranscriptLog``'s `verifiedDuplicate`).
struct DedupeWindow: Sendable {
    /// One remembered id.
    struct Entry: Sendable, Equatable {
        var fingerprint: UInt64
        var seq: UInt64
    }

    let policy: DedupePolicy
    /// A ring, oldest at `start`; grows by a quarter (up to `maxIDs`) only when full.
    private var entries: [Entry] = []
    /// Event time (Unix seconds) of each entry of the ring.
    private var seconds: [UInt32] = []
    private var start = 0
    private(set) var count = 0
    /// Linear-probing index over the ring: 0 = empty, else ring position + 1. At most 80% full.
    private var slots: [UInt32] = []

    init(_ policy: DedupePolicy) { self.policy = policy }

    /// The most ids ever kept at once by the count rule alone (the time rule may keep more).
    var capacity: Int { policy.minIDs }

    /// Bytes held for the ids (ring, times and index), for the memory figure.
    var memoryBytes: Int {
        entries.count * MemoryLayout<Entry>.stride + seconds.count * MemoryLayout<UInt32>.stride
            + slots.count * MemoryLayout<UInt32>.stride
    }

    /// Seqs of the remembered ids with this fingerprint, newest first: candidates, to verify against the log.
    func candidates(_ fingerprint: UInt64) -> [UInt64] {
        guard count > 0 else { return [] }
        var out: [UInt64] = []
        var j = home(fingerprint)
        // Bounded: the index is at most 80% full, so an empty slot ends the probe.
        while slots[j] != 0 {
            let e = entries[Int(slots[j] - 1)]
            if e.fingerprint == fingerprint { out.append(e.seq) }
            j = next(j)
        }
        return out.sorted(by: >)
    }

    /// Remembers `key` → `seq`, an event of time `timestampMs`; forgets what the policy no longer needs.
    mutating func insert(_ key: DedupeKey, seq: UInt64, timestampMs: Int64) {
        guard !policy.isOff else { return }
        let second = UInt32(clamping: timestampMs / 1000)
        // Forget the oldest while more than minIDs are kept and it is older than the time window, or at the cap.
        while count > 0 {
            let oldest = seconds[start]
            let aged =
                count >= policy.minIDs
                && (policy.minSeconds == 0 || (second > oldest && Int(second - oldest) > policy.minSeconds))
            guard aged || count >= policy.maxIDs else { break }
            removeOldest()
        }
        if count == entries.count { grow() }
        if (count + 1) * 5 > slots.count * 4 { reindex() }
        let at = (start + count) % entries.count
        entries[at] = Entry(fingerprint: key.fingerprint, seq: seq)
        seconds[at] = second
        count += 1
        place(at)
    }

    /// The fingerprint's first slot: mixed, then mapped onto the index by a multiply (any size, no modulo).
    private func home(_ fingerprint: UInt64) -> Int {
        Int((fingerprint &* 0x9E37_79B9_7F4A_7C15).multipliedFullWidth(by: UInt64(slots.count)).high)
    }

    private func next(_ j: Int) -> Int { j + 1 == slots.count ? 0 : j + 1 }

    private mutating func place(_ position: Int) {
        var j = home(entries[position].fingerprint)
        while slots[j] != 0 { j = next(j) }  // bounded: the index is at most 80% full
        slots[j] = UInt32(position + 1)
    }

    /// Drops the oldest entry and its index slot (backward-shift deletion: no tombstones).
    private mutating func removeOldest() {
        var hole = home(entries[start].fingerprint)
        while slots[hole] != UInt32(start + 1) { hole = next(hole) }  // bounded: the entry is indexed
        var k = next(hole)
        while slots[k] != 0 {  // bounded by the cluster's length
            let h = home(entries[Int(slots[k] - 1)].fingerprint)
            // Move k into the hole unless its home lies cyclically in (hole, k].
            let stays = hole <= k ? (h > hole && h <= k) : (h > hole || h <= k)
            if !stays {
                slots[hole] = slots[k]
                hole = k
            }
            k = next(k)
        }
        slots[hole] = 0
        start = (start + 1) % entries.count
        count -= 1
    }

    /// Grows the ring by a quarter (bounded by the cap), oldest first at 0, and rebuilds the index.
    private mutating func grow() {
        let size = min(policy.maxIDs, max(16, entries.count + entries.count / 4))
        var e: [Entry] = []
        var t: [UInt32] = []
        e.reserveCapacity(size)
        t.reserveCapacity(size)
        for i in 0..<count {
            e.append(entries[(start + i) % entries.count])
            t.append(seconds[(start + i) % entries.count])
        }
        e.append(contentsOf: repeatElement(Entry(fingerprint: 0, seq: 0), count: size - count))
        t.append(contentsOf: repeatElement(0, count: size - count))
        entries = e
        seconds = t
        start = 0
        reindex()
    }

    /// Rebuilds the index at 64% full for the ids held plus one (so the next insert fits under 80%).
    private mutating func reindex() {
        slots = [UInt32](repeating: 0, count: max(16, ((count + 1) * 25 + 15) / 16))
        for i in 0..<count { place((start + i) % entries.count) }
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
    /// The window was dropped from memory (idle session): rebuild it from the log before it is used.
    var dedupeEvicted = false

    init(dedupe policy: DedupePolicy) { dedupe = DedupeWindow(policy) }

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

    /// Events of one segment with consecutive seqs from `firstSeq`, at `offsets` (ascending): what `add` does for
    /// each of them, in one step (a checkpoint's run).
    mutating func addRun(firstSeq: UInt64, segment: UInt32, offsets: [UInt32], newestEventMs: Int64) {
        guard let lastOffset = offsets.last else { return }
        if let last = runs.last, firstSeq == last.seq &+ UInt64(locations.count - last.index) {
            // continues the current run
        } else {
            runs.append(Run(index: locations.count, seq: firstSeq))
        }
        let high = UInt64(segment) << 32
        locations.append(contentsOf: offsets.lazy.map { high | UInt64($0) })
        headLocation = high | UInt64(lastOffset)
        head = max(head, firstSeq &+ UInt64(offsets.count - 1))
        lastTimestampMs = max(lastTimestampMs, newestEventMs)
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
