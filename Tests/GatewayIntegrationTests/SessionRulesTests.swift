import Foundation
import GatewayTesting
import Logging
import Testing
import TranscriptLog

@testable import GatewayCore

/// The pure rules of the Sessions/ and Transport/ layers, without sockets: the join cursor and the outbound queue.
@Suite("Session rules")
struct SessionRulesTests {
    @Test("log lines use the terminal escaper: bidi and zero-width characters too, bounded")
    func logSafeIsTheOneEscaper() {
        #expect(LogSafe.escape("sub\u{202e}\u{200b}\u{1b}[31m") == #"sub\u{202e}\u{200b}\x1b[31m"#)
        #expect(LogSafe.escape(String(repeating: "a", count: 300)).count == 200)
    }

    @Test("join without since starts live at head + 1")
    func joinLive() {
        let c = JoinCursor(since: nil, epoch: nil, head: 7, firstHeld: 1, storeEpoch: "e1")
        #expect(c == JoinCursor(nextSeq: 8, trimmedFirst: nil, reset: false, catchingUp: false))
    }

    @Test("join with since replays from since + 1")
    func joinSince() {
        let c = JoinCursor(since: 3, epoch: "e1", head: 7, firstHeld: 1, storeEpoch: "e1")
        #expect(c == JoinCursor(nextSeq: 4, trimmedFirst: nil, reset: false, catchingUp: true))
        let atHead = JoinCursor(since: 7, epoch: nil, head: 7, firstHeld: 1, storeEpoch: "e1")
        #expect(atHead == JoinCursor(nextSeq: 8, trimmedFirst: nil, reset: false, catchingUp: false))
    }

    @Test("join behind retention is told trimmed and starts at the first held seq")
    func joinTrimmed() {
        let c = JoinCursor(since: 2, epoch: nil, head: 100, firstHeld: 50, storeEpoch: "e1")
        #expect(c == JoinCursor(nextSeq: 50, trimmedFirst: 50, reset: false, catchingUp: true))
        // since + 1 == firstHeld: nothing was lost, no trimmed.
        let edge = JoinCursor(since: 49, epoch: nil, head: 100, firstHeld: 50, storeEpoch: "e1")
        #expect(edge.trimmedFirst == nil && edge.nextSeq == 50)
    }

    @Test("join from another epoch or beyond the head resets to the first held event")
    func joinReset() {
        let other = JoinCursor(since: 5, epoch: "old", head: 10, firstHeld: 3, storeEpoch: "e1")
        #expect(other == JoinCursor(nextSeq: 3, trimmedFirst: nil, reset: true, catchingUp: true))
        let beyond = JoinCursor(since: 11, epoch: nil, head: 10, firstHeld: 1, storeEpoch: "e1")
        #expect(beyond == JoinCursor(nextSeq: 1, trimmedFirst: nil, reset: true, catchingUp: true))
        let empty = JoinCursor(since: 4, epoch: nil, head: 0, firstHeld: 1, storeEpoch: "e1")
        #expect(empty == JoinCursor(nextSeq: 1, trimmedFirst: nil, reset: true, catchingUp: false))
    }

    @Test("the outbound queue counts bytes, consumes from the head and compacts")
    func queueConsumes() {
        var q = OutboundQueue()
        for i in 0..<200 { q.append(OutboundFrame(payload: [UInt8](repeating: 1, count: i % 7 + 1), ephemeral: false)) }
        let total = (0..<200).reduce(0) { $0 + $1 % 7 + 1 }
        #expect(q.bytes == total)
        var seen = 0
        for _ in 0..<150 {
            seen += q.first?.payload.count ?? 0
            q.removeFirst()
            q.compact()
        }
        #expect(q.bytes == total - seen)
        #expect(q.frames.count - q.head == 50)
        while !q.isEmpty { q.removeFirst() }
        q.compact()
        #expect(q.bytes == 0 && q.head == 0 && q.frames.isEmpty)
    }

    @Test("ephemeral eviction drops the oldest ephemerals only, and nothing when it cannot make room")
    func queueEviction() {
        var q = OutboundQueue()
        q.append(OutboundFrame(payload: [UInt8](repeating: 0, count: 10), ephemeral: true))
        q.append(OutboundFrame(payload: [UInt8](repeating: 1, count: 10), ephemeral: false))
        q.append(OutboundFrame(payload: [UInt8](repeating: 2, count: 10), ephemeral: true))
        // Needs 15 under a cap of 40: dropping the first ephemeral (10) is enough.
        let madeRoom = q.evictEphemeral(toFit: 15, cap: 40)
        #expect(madeRoom)
        #expect(q.bytes == 20)
        #expect(q.pending.map { $0.payload.first } == [1, 2])
        // 35 more cannot fit under 40 even without ephemerals: nothing is dropped.
        let impossible = q.evictEphemeral(toFit: 35, cap: 40)
        #expect(!impossible)
        #expect(q.bytes == 20)
        #expect(q.first?.payload.first == 1, "the dropped head frame is skipped")
    }

    @Test("ephemeral eviction is amortised O(1): a long durable backlog is not rescanned per delta")
    func queueEvictionIsAmortised() {
        var q = OutboundQueue()
        let cap = 100_000
        // 9,000 durable bytes queued (a slow reader), then 20,000 deltas of 10 bytes into the rest of the cap.
        for _ in 0..<900 { q.append(OutboundFrame(payload: [UInt8](repeating: 7, count: 10), ephemeral: false)) }
        var appended = 900
        for k in 0..<20_000 {
            let delta = OutboundFrame(payload: [UInt8](repeating: UInt8(k % 200), count: 10), ephemeral: true)
            if q.evictEphemeral(toFit: 10, cap: cap) { q.append(delta) }
            appended += 1
            #expect(q.bytes <= cap)
        }
        // Each frame is visited by eviction at most once (the O(queue) version visited ~10,000 per delta here).
        #expect(q.evictionVisits <= appended, "\(q.evictionVisits) visits for \(appended) frames")
        #expect(q.ephemeralBytes == q.bytes - 9_000)
        // The durable frames are all still there, first, in order; the newest deltas are kept.
        let pending = q.pending
        #expect(pending.prefix(900).allSatisfy { !$0.ephemeral && $0.payload.count == 10 })
        #expect(pending.last?.payload.first == UInt8(19_999 % 200))
        // Draining writes every live frame once and ends empty.
        var written = 0
        while let f = q.first {
            #expect(!f.dropped)
            written += f.payload.count
            q.removeFirst()
            q.compact()
        }
        #expect(written == 9_000 + (pending.count - 900) * 10)
        #expect(q.bytes == 0 && q.ephemeralBytes == 0)
    }

    /// Queues publishes of `dataSizes` bytes before a local store's thread runs, starts it, and returns the seqs of
    /// the results in order and the number of batches committed.
    static func commitQueued(dataSizes: [Int], maxBatch: Int, maxBatchBytes: Int = 64 << 20) throws -> (seqs: [UInt64], batches: Int) {
        let dir = try TemporaryDirectory.make(prefix: "batches")
        defer { TemporaryDirectory.remove(dir) }
        var options = TranscriptLogOptions(directory: dir)
        options.fsync = .never
        let store = LocalEventStore(
            log: try TranscriptLog.open(options), fsync: .never, commitWindowMicroseconds: 0, maxBatch: maxBatch,
            maxBatchBytes: maxBatchBytes, metrics: GatewayMetrics(), logger: Logger(label: "batches-test"))
        for (i, size) in dataSizes.enumerated() {
            let data = Array("\"".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: max(0, size - 2)) + Array("\"".utf8)
            let request = AppendRequest(session: "s", id: "p\(i)", kind: "progress", sub: "a", role: "agent", timestampMs: 0, data: data)
            #expect(store.submit(PendingAppend(connection: ConnectionID(raw: 1), request: request)) == .accepted)
        }
        store.start(wake: {}, onFatal: { _ in })
        var seqs: [UInt64] = []
        let deadline = ContinuousClock.now + .seconds(10)
        while seqs.count < dataSizes.count && ContinuousClock.now < deadline {
            for case .committed(let r) in store.takeResults() {
                if case .success(.appended(let seq)) = r.outcome { seqs.append(seq) } else { Issue.record("\(r.outcome)") }
            }
            usleep(1_000)
        }
        store.stop()
        #expect(store.waitStopped(timeout: .seconds(10)))
        return (seqs, store.batchesCommitted)
    }

    @Test("the storage thread takes its whole backlog in one move and commits it in batches of at most maxBatch, in order")
    func storageTakesTheBacklogInOneMove() throws {
        // 100 publishes queued before the thread runs: one take, 13 commits of <= 8.
        let (seqs, batches) = try Self.commitQueued(dataSizes: Array(repeating: 2, count: 100), maxBatch: 8)
        #expect(seqs == Array(1...100))
        #expect(batches == 13)
    }

    @Test("storage batches are bounded by bytes as well as by count; an event larger than the bound is a batch alone")
    func storageBatchesAreBoundedByBytes() throws {
        // 30 events of 100 data bytes (10 per batch), then one of 5,000 bytes (alone), then 5 more small ones.
        let sizes = Array(repeating: 100, count: 30) + [5_000] + Array(repeating: 100, count: 5)
        let (seqs, batches) = try Self.commitQueued(dataSizes: sizes, maxBatch: 1_000, maxBatchBytes: 1_000)
        #expect(seqs == Array(1...UInt64(sizes.count)))
        #expect(batches == 5, "3 batches of 10, the large one alone, then the 5 small ones")
    }

    @Test("only the disk's errors degrade readiness: a refused oversized event does not")
    func refusedTooLargeDoesNotDegradeReadiness() throws {
        let dir = try TemporaryDirectory.make(prefix: "too-large")
        defer { TemporaryDirectory.remove(dir) }
        var options = TranscriptLogOptions(directory: dir)
        options.fsync = .never
        options.maxRecordBytes = 1024
        let store = LocalEventStore(
            log: try TranscriptLog.open(options), fsync: .never, commitWindowMicroseconds: 0, metrics: GatewayMetrics(),
            logger: Logger(label: "too-large-test"))
        let data = Array("\"".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 4_000) + Array("\"".utf8)
        let request = AppendRequest(session: "s", id: "big", kind: "progress", sub: "a", role: "agent", timestampMs: 0, data: data)
        #expect(store.submit(PendingAppend(connection: ConnectionID(raw: 1), request: request)) == .accepted)
        store.start(wake: {}, onFatal: { Issue.record("not fatal: \($0)") })
        var refusal: StoreError? = nil
        let deadline = ContinuousClock.now + .seconds(10)
        while refusal == nil && ContinuousClock.now < deadline {
            for case .committed(let r) in store.takeResults() {
                if case .failure(let e) = r.outcome { refusal = e } else { Issue.record("\(r.outcome)") }
            }
            usleep(1_000)
        }
        store.stop()
        #expect(store.waitStopped(timeout: .seconds(10)))
        #expect(refusal?.code == "recordTooLarge", "\(String(describing: refusal))")
        #expect(refusal?.degradesReadiness == false)
        #expect(refusal?.mayBeStored == false)
    }

    @Test("the storage inbox admits by count and by bytes, and frees bytes only when publishes are answered")
    func storageInboxBudget() {
        func item(_ id: String, _ bytes: Int) -> PendingAppend {
            PendingAppend(
                connection: ConnectionID(raw: 1),
                request: AppendRequest(
                    session: "s", id: id, kind: "k", sub: "a", role: "r", timestampMs: 0,
                    data: [UInt8](repeating: 0x31, count: bytes)))
        }
        #expect(StorageInbox.cost(item("i", 100).request) == 100 + 1 + 1 + 1 + 1 + 1)
        var inbox = StorageInbox(maxCount: 3, maxBytes: 1_000)
        #expect(inbox.admit(item("big", 5_000)) == .accepted, "an empty budget takes any one publish")
        #expect(inbox.admit(item("a", 10)) == .bytesFull)
        let taken = inbox.take()
        #expect(taken.count == 1 && inbox.isEmpty)
        #expect(inbox.admit(item("a", 10)) == .bytesFull, "a batch being committed still counts")
        inbox.release(taken)
        #expect(inbox.bytes == 0)
        for id in ["a", "b", "c"] { #expect(inbox.admit(item(id, 300)) == .accepted) }
        #expect(inbox.admit(item("d", 1)) == .queueFull)
        #expect(inbox.take(upTo: 2).map(\.request.id) == ["a", "b"])
        #expect(inbox.admit(item("d", 300)) == .bytesFull, "a, b are taken but not answered")
        #expect(inbox.admit(item("e", 50)) == .accepted)
        #expect(inbox.take().map(\.request.id) == ["c", "e"])
    }
}
