import Glibc
import Prometheus
import GatewayConfig
import Foundation
import Logging
import Synchronization
import TranscriptLog

/// The embedded engine: the transcript log on local disk, written by one storage thread.
///
/// The storage thread takes publishes from the service thread, appends them to the transcript log in
/// batches (group commit: one write and at most one fdatasync per batch), and hands results back.
///
/// Thread ownership: `log.append`, `log.sync`, `log.applyRetention` and `log.close` run only on the storage
/// thread started by ``start(wake:onFatal:)``. The inbox and outbox are `Mutex`-guarded; the only thing the
/// storage thread does to the network side is call `wake` (which calls `lws_cancel_service`). Reads
/// (`read`, `summary`, `epoch`) come from the service thread: the log is safe for concurrent readers with one
/// appender.
final class LocalEventStore: EventStore, @unchecked Sendable {
    // @unchecked Sendable: all mutable state is behind `state` (a Mutex) or confined to the storage thread
    // (`lastSyncNs`, `dirty`); `wake`/`onFatal` are set once before the thread starts; `log` is itself safe for
    // concurrent readers with one appender.
    let log: TranscriptLog
    private let logger: Logger
    private let fsync: FsyncPolicy
    private let maxQueued: Int
    private let maxBatch: Int
    /// Event data bytes per batch (far below the log's 1 GiB batch limit; a single larger event is a batch alone).
    private let maxBatchBytes: Int
    private let retentionEveryMs: Int64
    /// Group-commit window (µs): under load a batch starts at most once per window; 0 = commit at once.
    private let windowNs: UInt64
    /// A batch this large starts without waiting for the window to end.
    private let eagerBatch: Int
    /// Wakes the storage thread. A counting semaphore (not a condition variable) so that a signal given before the
    /// thread waits is never lost, and because `DispatchSemaphore` waits on the monotonic clock: a wall-clock step
    /// cannot stretch the commit window or the idle wait.
    private let wakeStorage = DispatchSemaphore(value: 0)
    private let metrics: GatewayMetrics

    private struct Queues {
        /// Publishes waiting, bounded by count and by `limits.storage_inbox_bytes` (released when answered).
        var inbox: StorageInbox
        var outbox: [StoreUpdate] = []
        var stopping = false
        var stopped = false
        /// The storage thread waits for the first publish of a batch: `submit` signals it.
        var idle = false
        /// The storage thread waits for the commit window to end: `submit` signals it only when the inbox
        /// reaches `eagerBatch`.
        var filling = false
    }
    private let state: Mutex<Queues>
    private let batches = Atomic<Int>(0)
    /// Called after results were put in the outbox; wakes the service thread. Set once by `start`.
    private var wake: @Sendable () -> Void = {}
    /// Called once when the log failed in a way that only a reopen can clear (I/O error, failed fsync).
    /// Set once by `start`, read only on the storage thread.
    private var onFatal: @Sendable (String) -> Void = { _ in }
    private var thread: Thread?

    /// Opens (and recovers) the transcript log the configuration names.
    /// - Parameter fileIO: the log's file-system layer; tests inject faults (EIO, failed fsync) through it.
    static func open(
        configuration: GatewayConfiguration, fileIO: any FileIO, metrics: GatewayMetrics, logger: Logger
    ) throws(GatewayStartError) -> LocalEventStore {
        var options = TranscriptLogOptions(directory: configuration.dataDir)
        options.fsync = configuration.fsync
        options.segmentMaxBytes = configuration.segmentMaxBytes
        options.retentionMaxAgeSeconds = configuration.retentionMaxAgeSeconds
        options.retentionMaxTotalBytes = configuration.retentionMaxTotalBytes
        options.skipDamagedRecords = configuration.skipDamagedRecords
        options.dedupeMinWindowSeconds = configuration.dedupeMinWindowSeconds
        options.io = fileIO
        // A record holds one event: leave room for the largest message plus its envelope.
        options.maxRecordBytes = max(options.maxRecordBytes, configuration.limits.maxMessageBytes + 64 * 1024)
        do {
            try FileManager.default.createDirectory(atPath: configuration.dataDir, withIntermediateDirectories: true)
        } catch {
            throw GatewayStartError("cannot create data directory \(configuration.dataDir): \(error.localizedDescription)")
        }
        let opened: TranscriptLog
        do {
            opened = try TranscriptLog.open(options)
        } catch {
            throw GatewayStartError("transcript log at \(configuration.dataDir): \(error)")
        }
        logger.info(
            "transcript log open",
            metadata: [
                "data.dir": "\(configuration.dataDir)", "epoch": "\(opened.epoch)",
                "recovery": "\(opened.recovery)",
            ])
        return LocalEventStore(
            log: opened, fsync: options.fsync, commitWindowMicroseconds: configuration.commitWindowMicroseconds,
            maxQueuedBytes: configuration.limits.storageInboxBytes, metrics: metrics, logger: logger)
    }

    init(
        log: TranscriptLog, fsync: FsyncPolicy, commitWindowMicroseconds: Int = 1_000, maxQueued: Int = 65_536,
        maxQueuedBytes: Int = LimitSettings().storageInboxBytes, maxBatch: Int = 4_096, maxBatchBytes: Int = 64 << 20,
        retentionEveryMs: Int64 = 60_000, metrics: GatewayMetrics, logger: Logger
    ) {
        self.log = log
        self.fsync = fsync
        self.maxQueued = maxQueued
        self.state = Mutex(Queues(inbox: StorageInbox(maxCount: maxQueued, maxBytes: maxQueuedBytes)))
        self.maxBatch = maxBatch
        self.maxBatchBytes = maxBatchBytes
        self.retentionEveryMs = retentionEveryMs
        self.windowNs = UInt64(max(0, commitWindowMicroseconds)) * 1_000
        self.eagerBatch = max(1, min(maxBatch, maxQueued, 1_024))
        self.metrics = metrics
        self.logger = logger
    }

    // MARK: - reads (service thread)

    var epoch: String { log.epoch }
    func sessionSummaries() -> [StoreSummary] { log.sessions().map(StoreSummary.init) }
    func summary(session: String) -> StoreSummary? { log.summary(session: session).map(StoreSummary.init) }

    func read(session: String, after: UInt64, limit: Int, maxBytes: Int) throws(StoreError) -> [StoredEvent] {
        do {
            let result = try log.read(session: session, after: after, limit: limit, maxBytes: maxBytes)
            return result.records.map { StoredEvent(seq: $0.seq, frame: EventFrames.record($0)) }
        } catch {
            throw StoreError(error)
        }
    }

    /// The log answers every read at once: a join needs no preparation.
    func prepareJoin(session: String) -> JoinPreparation { .ready }
    func sessionIdle(session: String) {}
    /// The local log refuses writes only per batch (disk full): readiness follows the last batch's outcome.
    var isAvailable: Bool { true }
    func clusterMembers() -> [String: MemberCounts]? { nil }
    func publishMembers(_ counts: [String: MemberCounts]) {}

    // One node: ephemeral events and token streams stay on it (the gateway keeps streams in memory).
    var sharesStreams: Bool { false }
    func publishEphemeral(_ event: EphemeralPublish) {}
    func closeStream(session: String, sub: String, id: String) {}
    func openStreams(session: String) -> [StreamSnapshot] { [] }
    func publishPresence(session: String, key: PresenceKey, conns: Int) {}
    func presence(session: String) -> [String: [PresenceKey: Int]]? { nil }

    var batchesCommitted: Int { batches.load(ordering: .relaxed) }

    // MARK: - writes

    func start(wake: @escaping @Sendable () -> Void, onFatal: @escaping @Sendable (String) -> Void) {
        self.wake = wake
        self.onFatal = onFatal
        let t = Thread { [self] in self.run() }
        t.name = "gateway-storage"
        thread = t
        t.start()
    }

    /// Queues one durable publish, or refuses it when the inbox is at its count or byte limit (the caller answers
    /// `unavailable`): the storage thread is behind and memory must stay bounded.
    func submit(_ item: PendingAppend) -> SubmitResult {
        // Signal only a thread that waits for exactly this: one wake-up per batch, not one per publish.
        let (result, signal) = state.withLock { q -> (SubmitResult, Bool) in
            guard !q.stopping else { return (.unavailable, false) }
            let result = q.inbox.admit(item)
            guard result == .accepted else { return (result, false) }
            if q.idle {
                q.idle = false
                return (result, true)
            }
            if q.filling && q.inbox.count >= eagerBatch {
                q.filling = false
                return (result, true)
            }
            return (result, false)
        }
        if signal { wakeStorage.signal() }
        return result
    }

    /// Takes every result committed so far (service thread).
    func takeResults() -> [StoreUpdate] {
        state.withLock { q in
            let out = q.outbox
            q.outbox.removeAll(keepingCapacity: true)
            return out
        }
    }

    /// Number of publishes not yet committed.
    var queuedCount: Int { state.withLock { $0.inbox.count } }

    /// Asks the thread to commit what is queued, sync, close the log and exit. Idempotent.
    func stop() {
        state.withLock { $0.stopping = true }
        wakeStorage.signal()
    }

    /// Waits (bounded) until the storage thread exited. Returns false on timeout.
    func waitStopped(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if state.withLock({ $0.stopped }) { return true }
            usleep(2_000)
        }
        return state.withLock { $0.stopped }
    }

    // MARK: - storage thread

    private func run() {
        // One clock for every deadline of this loop: the monotonic one the commit window uses.
        var lastSyncNs = MonotonicClock.nowNs()
        var lastRetentionNs = lastSyncNs
        let retentionNs = UInt64(max(0, retentionEveryMs)) * 1_000_000
        var lastBatchNs: UInt64 = 0
        var dirty = false
        let intervalNs: UInt64
        if case .interval(let ms) = fsync { intervalNs = UInt64(max(1, ms)) * 1_000_000 } else { intervalNs = 0 }

        while true {
            var batch: [PendingAppend] = []
            var stopping = false
            var haveItems = false
            // 1. Wait (bounded) for the first publish of a batch, or until the interval fsync or retention is due.
            while true {
                let (empty, stop) = state.withLock { q -> (Bool, Bool) in
                    q.idle = q.inbox.isEmpty && !q.stopping
                    return (q.inbox.isEmpty, q.stopping)
                }
                stopping = stop
                haveItems = !empty
                if !empty || stopping { break }
                let now = MonotonicClock.nowNs()
                if intervalNs > 0 && dirty && now - lastSyncNs >= intervalNs { break }
                if now - lastRetentionNs > retentionNs { break }
                var waitNs: UInt64 = 1_000_000_000
                if intervalNs > 0 && dirty { waitNs = min(waitNs, max(100_000, intervalNs - (now - lastSyncNs))) }
                _ = wakeStorage.wait(timeout: .now() + .nanoseconds(Int(waitNs)))
            }
            state.withLock { $0.idle = false }
            // 2. Group commit: under load, let the batch fill until one window after the previous batch began
            //    (or until it is large), so one fsync and one pair of thread wake-ups serve many publishes. After a
            //    quiet spell the window has long passed and the first publish commits at once. Bounded: the waits
            //    end at the window's end on the monotonic clock.
            if windowNs > 0 && haveItems && !stopping {
                let windowEnd = lastBatchNs &+ windowNs
                while !stopping {
                    let now = MonotonicClock.nowNs()
                    if now >= windowEnd { break }
                    let (large, stop) = state.withLock { q -> (Bool, Bool) in
                        let large = q.inbox.count >= eagerBatch
                        q.filling = !large && !q.stopping
                        return (large, q.stopping)
                    }
                    stopping = stop
                    if large || stopping { break }
                    _ = wakeStorage.wait(timeout: .now() + .nanoseconds(Int(windowEnd - now)))
                }
                state.withLock { $0.filling = false }
            }
            // The whole inbox in one move (O(1) under the lock that every `submit` needs), committed in batches of
            // at most `maxBatch`.
            let taken = state.withLock { q in (q.inbox.take(), q.stopping) }
            batch = taken.0
            stopping = stopping || taken.1

            if !batch.isEmpty {
                lastBatchNs = MonotonicClock.nowNs()
                // Batches are bounded by count and by bytes: the log refuses a batch over 1 GiB as a whole, and one
                // publisher's large messages must not make every publisher of a batch fail.
                var start = 0
                while start < batch.count {
                    var end = start
                    var bytes = 0
                    while end < batch.count && end - start < maxBatch
                        && (end == start || bytes + batch[end].request.data.count <= maxBatchBytes)
                    {
                        bytes += batch[end].request.data.count
                        end += 1
                    }
                    commit(start == 0 && end == batch.count ? batch : Array(batch[start..<end]))
                    start = end
                }
                dirty = intervalNs > 0
            }
            if intervalNs > 0 && dirty && MonotonicClock.nowNs() - lastSyncNs >= intervalNs {
                do {
                    try log.sync()
                } catch {
                    // Acks already went out under `interval`: a failed sync may have lost them, and retrying an fsync
                    // after a failure reports nothing true (fsyncgate). Stop for a restart, which re-verifies the log.
                    stopForRestart("transcript sync failed", error)
                }
                lastSyncNs = MonotonicClock.nowNs()
                dirty = false
            }
            if MonotonicClock.nowNs() - lastRetentionNs > retentionNs {
                lastRetentionNs = MonotonicClock.nowNs()
                do {
                    let removed = try log.applyRetention(nowMs: WallClock.nowMs())
                    if removed > 0 { logger.info("retention removed segments", metadata: ["segments": "\(removed)"]) }
                } catch {
                    logger.error("retention failed", metadata: ["error": "\(error)"])
                }
                // Idle sessions' dedupe windows leave memory; their next publish rebuilds them from the log.
                log.evictIdleDedupe(nowMs: WallClock.nowMs())
            }
            if stopping && state.withLock({ $0.inbox.isEmpty }) { break }
        }
        do {
            try log.close()
        } catch {
            // The final sync or close failed: what was acked may not be on disk. Exit non-zero (70) so that the
            // supervisor restarts the gateway and the log is re-verified.
            stopForRestart("transcript close failed", error)
        }
        state.withLock { $0.stopped = true }
        wake()
    }

    /// A sync or close failure: counted, logged, and fatal (the gateway drains and exits 70; storage thread).
    private func stopForRestart(_ what: String, _ error: TranscriptError) {
        metrics.storageErrors.increment()
        logger.critical("\(what); stopping for a restart", metadata: ["error": "\(error)"])
        onFatal("\(what): \(error)")
    }

    private func commit(_ batch: [PendingAppend]) {
        batches.add(1, ordering: .relaxed)
        let started = ContinuousClock.now
        var results: [CommitResult] = []
        results.reserveCapacity(batch.count)
        do {
            let outcomes = try log.append(batch.map(\.request))
            metrics.recordCommit(duration: ContinuousClock.now - started, events: batch.count)
            for (item, outcome) in zip(batch, outcomes) {
                var frame: [UInt8]? = nil
                if case .appended(let seq) = outcome {
                    frame = EventFrames.durableEvent(item.request, seq: seq)
                }
                results.append(
                    CommitResult(
                        connection: item.connection, session: item.request.session, id: item.request.id,
                        outcome: .success(outcome), frame: frame))
            }
        } catch where error.code == .outcomeUnknown {
            // The batch may be in the file although it failed: answering "not stored" could be a lie, "stored" too.
            // Nobody is answered; the gateway drains and exits 70, and the reopen decides (a retry finds it by id).
            metrics.storageErrors.increment()
            logger.critical(
                "transcript append failed and the batch could not be cut back; its publishers are not answered",
                metadata: ["error": "\(error)", "batch.events": "\(batch.count)"])
            onFatal("\(error)")
            state.withLock { q in
                q.outbox.append(.abandoned(count: batch.count))
                q.inbox.release(batch)
            }
            wake()
            return
        } catch {
            metrics.storageErrors.increment()
            logger.error(
                "transcript append failed; batch refused",
                metadata: ["error": "\(error)", "batch.events": "\(batch.count)"])
            // Disk full is transient (writes resume when space returns); an I/O error or a failed fsync is not:
            // the log refuses every later write until it is reopened and re-verified, so stop for a restart.
            if error.code == .ioError || error.code == .failed {
                onFatal("\(error)")
            }
            for item in batch {
                results.append(
                    CommitResult(
                        connection: item.connection, session: item.request.session, id: item.request.id,
                        outcome: .failure(StoreError(error)), frame: nil))
            }
        }
        // One wake-up per hand-back the service thread has not taken yet: while it is busy (results still waiting),
        // later batches join the waiting ones and are taken together in its next turn, with no more pipe writes.
        let first = state.withLock { q -> Bool in
            let wasEmpty = q.outbox.isEmpty
            for r in results { q.outbox.append(.committed(r)) }
            q.inbox.release(batch)
            return wasEmpty
        }
        if first { wake() }
    }
}
