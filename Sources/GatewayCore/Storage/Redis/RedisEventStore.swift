import CHiredis
import Foundation
import GatewayConfig
import GatewayProtocol
import Glibc
import Logging
import Prometheus
import Synchronization
import TranscriptLog

/// Cluster mode: sessions live in Redis, shared by every gateway node (docs/scaling.md).
///
/// Per session, Redis holds a stream whose entry ids are the seqs, a meta hash (head, epoch, last event time) and
/// the dedupe index; one Lua script per durable publish does the dedupe check, assigns the seq, appends, and
/// publishes the event on the session's channel. The ack follows Redis's reply, which under the shipped
/// `Config/redis.conf` (`appendfsync always`) comes after the AOF fsync.
///
/// Threads (hiredis's blocking API only; its async API aborts on sharded pub/sub messages):
/// - the **writer** takes every queued publish, pipelines one `EVALSHA` per publish in one write and reads the
///   replies in order (group commit comes free: Redis fsyncs once per event-loop pass);
/// - the **subscriber** follows the channels of sessions with local members, reads what a pending join needs
///   (after the subscription is confirmed, so nothing falls between the read and the first push), resyncs every
///   followed session after its connection dropped, probes itself when idle and checks heads periodically;
/// - the **service thread** reads (replay `XRANGE`, summaries, listings) on a connection of its own.
///
/// Pub/sub is only a hint, the stream is the truth: a pushed event moves the session's head, and a subscriber
/// whose cursor is behind it catches up from the stream (`XRANGE`), so a lost push becomes a read, never a gap.
/// Updates from other nodes are handed to the service thread only after every publish this node submitted before
/// they arrived was answered: the ack of an event always precedes its publisher's own copy.
final class RedisEventStore: EventStore, @unchecked Sendable {
    // @unchecked Sendable: cross-thread state is in `shared` (a Mutex) and `batches`/`epochBox` (Atomic/Mutex);
    // `wake`/`onFatal` are set once before the threads start; `reader` is used only by the service thread.
    let settings: RedisSettings
    let nodeID: String
    /// Random per start: presence entries name `<node id>#<instance>`, so a node restarted under the same
    /// `cluster.node_id` does not revive the entries of its previous run (RedisPresence.swift).
    let instance = RedisEventStore.randomHex(bytes: 8)
    let keys: RedisKeys
    let logger: Logger
    let metrics: GatewayMetrics
    private static let maxQueued = 65_536
    /// Bounds of the queue of ephemeral events (and stream closes) for other nodes: beyond them an event is not sent
    /// to other nodes (counted in `gateway_cluster_ephemeral_dropped_total`).
    static let maxOutgoing = 65_536
    static let maxOutgoingBytes = 64 << 20
    /// `streams.idle_timeout_seconds` in ms; the safety-net expiry of a stream's keys; how long a claim of an idle
    /// stream holds before another node may claim it again.
    let streamIdleMs: Int64
    var streamTTLMs: Int64 { streamIdleMs * 2 + 60_000 }
    var streamClaimMs: Int64 { max(10_000, Int64(settings.timeoutSeconds * 4_000)) }
    private let idleScanEveryNs: UInt64 = 1_000_000_000
    private let maxBatch = 2_048
    /// A session without local members stays followed this long (a reconnecting browser finds it warm).
    private let lingerNs: UInt64 = 30_000_000_000
    private let probeAfterNs: UInt64 = 5_000_000_000
    private let headCheckEveryNs: UInt64 = 10_000_000_000

    struct Shared {
        /// Publishes waiting for the writer, bounded by count and by `limits.storage_inbox_bytes` (released when
        /// answered).
        var inbox: StorageInbox
        /// Publishes accepted so far, and answered so far (in order: one writer, one pipeline).
        var submitted: UInt64 = 0
        var answered: UInt64 = 0
        /// Updates ready for the service thread.
        var ready: [StoreUpdate] = []
        /// Updates from the subscriber, each tagged with `submitted` when it arrived: handed over only once
        /// `answered` reaches the tag. Tags never decrease, so the ready ones are a prefix.
        var held: [(tag: UInt64, update: StoreUpdate)] = []
        var writerUp = false
        var subscriberUp = false
        var stopping = false
        var writerStopped = false
        var subscriberStopped = false
        /// Sessions a join waits for (subscriber thread takes them).
        var joinRequests: [String] = []
        /// Sessions without local members, since when (monotonic ns).
        var idleSince: [String: UInt64] = [:]
        /// This node's latest subscriber counts, for the subscriber thread to publish.
        var members: [String: MemberCounts]? = nil
        /// Ephemeral events for other nodes and stream closes, for the writer's next batch (bounded: ``maxOutgoing``,
        /// ``maxOutgoingBytes``).
        var outgoing: [EphemeralPublish] = []
        var outgoingBytes = 0
        var closes: [(String, StreamKey)] = []
        /// Presence changes of this node for the writer's next batch (bounded: ``maxOutgoing``).
        var presenceOut: [(session: String, key: PresenceKey, conns: Int)] = []
    }
    let shared: Mutex<Shared>
    private let epochBox = Mutex<String>("")
    private let batches = Atomic<Int>(0)
    let wakeWriter = DispatchSemaphore(value: 0)
    /// Wakes the subscriber thread out of `poll`: a non-blocking pipe (read end polled, write end signalled).
    private let subscriberEvent: Int32
    private let subscriberSignal: Int32
    private var wake: @Sendable () -> Void = {}
    private var onFatal: @Sendable (String) -> Void = { _ in }

    // Service thread only: the connection for reads, and when to try again after a failure.
    private var reader: RedisConnection?
    private var readerRetryNs: UInt64 = 0

    /// Creates the engine and checks the server once: reachable and configured for durability (a warning, or a
    /// refusal under `redis.require_fsync`). An unreachable Redis is not fatal: the gateway starts unready and
    /// connects when Redis is up.
    static func open(configuration: GatewayConfiguration, metrics: GatewayMetrics, logger: Logger) throws(GatewayStartError)
        -> RedisEventStore
    {
        let node = configuration.nodeID ?? randomHex(bytes: 4)
        let store = RedisEventStore(
            settings: configuration.redis, nodeID: node, inboxBytes: configuration.limits.storageInboxBytes,
            streamIdleSeconds: configuration.streams.idleTimeoutSeconds, metrics: metrics, logger: logger)
        do {
            let c = try store.connect()
            let problems = try store.durabilityProblems(c)
            if !problems.isEmpty && configuration.redis.requireFsync {
                throw GatewayStartError(
                    "redis \(configuration.redis.endpoint) is not configured for durable acks (redis.require_fsync): "
                        + problems.joined(separator: "; ") + " (see Config/redis.conf)")
            }
            _ = try store.loadEpoch(c)
        } catch let e as GatewayStartError {
            throw e
        } catch {
            logger.warning(
                "redis unreachable at start; the gateway starts unready and keeps trying",
                metadata: ["redis": "\(configuration.redis.endpoint)", "error": "\(error)"])
        }
        logger.info(
            "cluster mode: storage on redis",
            metadata: [
                "redis": "\(configuration.redis.endpoint)", "key_prefix": "\(configuration.redis.keyPrefix)",
                "node.id": "\(node)", "epoch": "\(store.epoch)",
            ])
        return store
    }

    init(
        settings: RedisSettings, nodeID: String, inboxBytes: Int = LimitSettings().storageInboxBytes,
        streamIdleSeconds: Double = StreamSettings().idleTimeoutSeconds, metrics: GatewayMetrics, logger: Logger
    ) {
        self.streamIdleMs = Int64(streamIdleSeconds * 1_000)
        self.shared = Mutex(Shared(inbox: StorageInbox(maxCount: Self.maxQueued, maxBytes: inboxBytes)))
        self.settings = settings
        self.nodeID = nodeID
        self.keys = RedisKeys(prefix: settings.keyPrefix)
        self.metrics = metrics
        self.logger = logger
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for fd in fds {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
        }
        self.subscriberEvent = fds[0]
        self.subscriberSignal = fds[1]
    }

    deinit {
        Glibc.close(subscriberEvent)
        Glibc.close(subscriberSignal)
    }

    static func randomHex(bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in
            let b = UInt8.random(in: 0...255, using: &g)
            return String(b >> 4, radix: 16) + String(b & 15, radix: 16)
        }.joined()
    }

    private func connect() throws(RedisError) -> RedisConnection {
        try RedisConnection(
            host: settings.endpoint.host, port: settings.endpoint.port, database: settings.endpoint.database,
            timeoutSeconds: settings.timeoutSeconds)
    }

    /// What in the server's configuration breaks "an ack means durable" (empty when nothing does).
    private func durabilityProblems(_ c: RedisConnection) throws(RedisError) -> [String] {
        let expected: [(String, String)] = [
            ("appendonly", "yes"), ("appendfsync", "always"), ("no-appendfsync-on-rewrite", "no"),
            ("maxmemory-policy", "noeviction"),
        ]
        var problems: [String] = []
        for (name, want) in expected {
            let reply = try c.command(["CONFIG", "GET", name])
            if let e = reply.errorMessage {
                problems.append("cannot read \(name) (\(e))")
                continue
            }
            let value = reply.items.flatMap { $0.count == 2 ? $0[1].text : nil } ?? "?"
            if value != want { problems.append("\(name) is \(value), expected \(want)") }
        }
        return problems
    }

    /// Creates the cluster epoch if Redis has none (`SET NX`), reads it, and reports whether it changed from the
    /// one this node knew (Redis lost its data).
    private func loadEpoch(_ c: RedisConnection) throws(RedisError) -> Bool {
        let replies = try c.pipeline([
            ["SET", keys.epoch, Self.randomHex(bytes: 8), "NX"].map { Array($0.utf8) },
            ["GET", keys.epoch].map { Array($0.utf8) },
        ])
        guard let value = replies[1].text, !value.isEmpty else {
            throw RedisError("redis: cannot read the cluster epoch: \(replies[1])")
        }
        return epochBox.withLock { e in
            let changed = !e.isEmpty && e != value
            e = value
            return changed
        }
    }

    // MARK: - EventStore: reads (service thread)

    var epoch: String { epochBox.withLock { $0 } }

    func sessionSummaries() -> [StoreSummary] { [] }

    func withReader<T>(_ body: (RedisConnection) throws(RedisError) -> T) throws(StoreError) -> T {
        if reader == nil {
            let now = MonotonicClock.nowNs()
            guard now >= readerRetryNs else {
                throw StoreError(code: "redisUnavailable", description: "redis unreachable (read connection)", degradesReadiness: false)
            }
            do {
                reader = try connect()
            } catch {
                readerRetryNs = now + 500_000_000
                throw StoreError(code: "redisUnavailable", description: "\(error)", degradesReadiness: false)
            }
        }
        guard let c = reader else { throw StoreError(code: "redisUnavailable", description: "no connection", degradesReadiness: false) }
        do {
            return try body(c)
        } catch {
            reader = nil
            // A connection made before Redis restarted fails its first command: reads are idempotent, so one fresh
            // connection gets one more try (refused at once while Redis is down).
            if let fresh = try? connect() {
                do {
                    let value = try body(fresh)
                    reader = fresh
                    return value
                } catch {}
            }
            readerRetryNs = MonotonicClock.nowNs() + 100_000_000
            throw StoreError(code: "redisUnavailable", description: "\(error)", degradesReadiness: false)
        }
    }

    func summary(session: String) -> StoreSummary? {
        try? withReader { c throws(RedisError) in try self.readSummaries(c, sessions: [session])[0] }
    }

    /// Head, first held seq and last event time of each session, in pipelined round trips of 256 sessions.
    func readSummaries(_ c: RedisConnection, sessions: [String]) throws(RedisError) -> [StoreSummary?] {
        var out: [StoreSummary?] = []
        out.reserveCapacity(sessions.count)
        for chunk in stride(from: 0, to: sessions.count, by: 256) {
            out += try readSummaryChunk(c, sessions: sessions[chunk..<min(sessions.count, chunk + 256)])
        }
        return out
    }

    private func readSummaryChunk(_ c: RedisConnection, sessions: ArraySlice<String>) throws(RedisError) -> [StoreSummary?] {
        var commands: [[[UInt8]]] = []
        for s in sessions {
            commands.append(["HMGET", keys.meta(s), "seq", "ts"].map { Array($0.utf8) })
            commands.append(["XRANGE", keys.log(s), "-", "+", "COUNT", "1"].map { Array($0.utf8) })
        }
        let replies = try c.pipeline(commands)
        var out: [StoreSummary?] = []
        for (i, s) in sessions.enumerated() {
            let meta = replies[2 * i].items ?? []
            guard meta.count == 2, let head = meta[0].int, head >= 0 else {
                out.append(nil)
                continue
            }
            var first = UInt64(head) + 1
            if let entry = replies[2 * i + 1].items?.first?.items?.first?.text, let seq = Self.seq(ofEntryID: entry) {
                first = seq
            }
            out.append(StoreSummary(session: s, head: UInt64(head), firstHeld: first, lastTimestampMs: meta[1].int ?? 0))
        }
        return out
    }

    static func seq(ofEntryID id: String) -> UInt64? {
        guard let dash = id.firstIndex(of: "-") else { return UInt64(id) }
        return UInt64(id[..<dash])
    }

    func read(session: String, after: UInt64, limit: Int, maxBytes: Int) throws(StoreError) -> [StoredEvent] {
        let reply = try withReader { c throws(RedisError) in
            try c.command(["XRANGE", keys.log(session), "(\(after)", "+", "COUNT", "\(max(1, limit))"])
        }
        if let e = reply.errorMessage { throw StoreError(code: "redisError", description: e, degradesReadiness: false) }
        var out: [StoredEvent] = []
        var bytes = 0
        for entry in reply.items ?? [] {
            guard let parts = entry.items, parts.count == 2, let id = parts[0].text, let seq = Self.seq(ofEntryID: id),
                let fields = parts[1].items
            else { continue }
            var i = 0
            while i + 1 < fields.count {
                if fields[i].text == "f", case .string(let frame) = fields[i + 1] {
                    out.append(StoredEvent(seq: seq, frame: frame))
                    bytes += frame.count
                    break
                }
                i += 2
            }
            if bytes >= maxBytes { break }
        }
        return out
    }

    func clusterMembers() -> [String: MemberCounts]? {
        let now = WallClock.nowMs()
        let merged = try? withReader { c throws(RedisError) -> [String: MemberCounts] in
            let nodes = try c.command(["ZRANGEBYSCORE", keys.nodes, "\(now - 15_000)", "+inf"]).items ?? []
            let others = nodes.compactMap(\.text).filter { $0 != nodeID }
            if others.isEmpty { return [:] }
            let replies = try c.pipeline(others.map { ["HGETALL", keys.members(node: $0)].map { Array($0.utf8) } })
            var out: [String: MemberCounts] = [:]
            for reply in replies {
                let fields = reply.items ?? []
                var i = 0
                while i + 1 < fields.count {
                    if let s = fields[i].text, let v = fields[i + 1].text {
                        let n = v.split(separator: " ").compactMap { Int($0) }
                        if n.count == 3 {
                            out[s] = (out[s] ?? MemberCounts()) + MemberCounts(users: n[0], agents: n[1], operators: n[2])
                        }
                    }
                    i += 2
                }
            }
            return out
        }
        return merged ?? [:]
    }

    func publishMembers(_ counts: [String: MemberCounts]) {
        shared.withLock { $0.members = counts }
    }

    var isAvailable: Bool { shared.withLock { $0.writerUp && $0.subscriberUp } }

    func prepareJoin(session: String) -> JoinPreparation {
        let up = shared.withLock { q -> Bool in
            guard q.subscriberUp, !q.stopping else { return false }
            q.joinRequests.append(session)
            q.idleSince.removeValue(forKey: session)
            return true
        }
        guard up, !epoch.isEmpty else {
            return .unavailable(StoreError(code: "redisUnavailable", description: "redis unreachable", degradesReadiness: false))
        }
        signalSubscriber()
        return .pending
    }

    func sessionIdle(session: String) {
        shared.withLock { $0.idleSince[session] = MonotonicClock.nowNs() }
    }

    // MARK: - EventStore: writes

    var batchesCommitted: Int { batches.load(ordering: .relaxed) }
    var queuedCount: Int { shared.withLock { $0.inbox.count } }

    func start(wake: @escaping @Sendable () -> Void, onFatal: @escaping @Sendable (String) -> Void) {
        self.wake = wake
        self.onFatal = onFatal
        let w = Thread { [self] in self.writerMain() }
        w.name = "gateway-redis-writer"
        w.start()
        let s = Thread { [self] in self.subscriberMain() }
        s.name = "gateway-redis-subscriber"
        s.start()
        // Serve from the first accepted connection on: when Redis answered at open, wait (bounded) until both
        // threads are connected, so that an early publish or join is not refused. An unreachable Redis does not
        // hold the start: the gateway serves unready (/readyz 503) and connects when Redis is up.
        guard !epoch.isEmpty else { return }
        let deadline = ContinuousClock.now + .milliseconds(Int(settings.timeoutSeconds * 1_000) + 1_000)
        while ContinuousClock.now < deadline && !isAvailable { usleep(1_000) }
    }

    func submit(_ item: PendingAppend) -> SubmitResult {
        let (result, first) = shared.withLock { q -> (SubmitResult, Bool) in
            guard q.writerUp, !q.stopping else { return (.unavailable, false) }
            let result = q.inbox.admit(item)
            guard result == .accepted else { return (result, false) }
            q.submitted += 1
            return (result, q.inbox.count == 1)
        }
        if first { wakeWriter.signal() }
        return result
    }

    func takeResults() -> [StoreUpdate] {
        shared.withLock { q in
            var out = q.ready
            q.ready.removeAll(keepingCapacity: true)
            var released = 0
            while released < q.held.count && q.held[released].tag <= q.answered {
                out.append(q.held[released].update)
                released += 1
            }
            if released > 0 { q.held.removeFirst(released) }
            return out
        }
    }

    func stop() {
        shared.withLock { $0.stopping = true }
        wakeWriter.signal()
        signalSubscriber()
    }

    func waitStopped(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if shared.withLock({ $0.writerStopped && $0.subscriberStopped }) { return true }
            usleep(2_000)
        }
        return shared.withLock { $0.writerStopped && $0.subscriberStopped }
    }

    private func signalSubscriber() {
        var one: UInt8 = 1
        _ = Glibc.write(subscriberSignal, &one, 1)
    }

    /// Hands updates from the subscriber to the service thread, tagged with the publishes submitted so far.
    private func emit(_ updates: [StoreUpdate]) {
        guard !updates.isEmpty else { return }
        shared.withLock { q in
            for u in updates { q.held.append((tag: q.submitted, update: u)) }
        }
        wake()
    }

    // MARK: - writer thread

    private func writerMain() {
        var conn: RedisConnection? = nil
        var sha = ""
        var backoffMs = 50
        var lastError = ""
        var lastActivityNs = MonotonicClock.nowNs()
        while true {
            let stopping = shared.withLock { $0.stopping }
            if conn == nil {
                do {
                    let c = try connect()
                    let problems = try durabilityProblems(c)
                    if !problems.isEmpty {
                        if settings.requireFsync {
                            throw RedisError("not configured for durable acks (redis.require_fsync): " + problems.joined(separator: "; "))
                        }
                        logger.warning(
                            "redis is not configured for durable acks: an acked event may be lost on a Redis crash",
                            metadata: ["problems": "\(problems.joined(separator: "; "))", "see": "Config/redis.conf"])
                    }
                    if try loadEpoch(c) {
                        emitReady([.reset(reason: "the cluster epoch changed (Redis lost its data)")])
                    }
                    let loaded = try c.command(["SCRIPT", "LOAD", RedisScripts.publish])
                    guard let s = loaded.text else { throw RedisError("SCRIPT LOAD failed: \(loaded)") }
                    sha = s
                    conn = c
                    backoffMs = 50
                    if !lastError.isEmpty { logger.notice("redis writer connected again", metadata: ["redis": "\(settings.endpoint)"]) }
                    lastError = ""
                    shared.withLock { $0.writerUp = true }
                    wake()
                } catch {
                    if "\(error)" != lastError {
                        lastError = "\(error)"
                        logger.error("redis writer cannot connect; publishes are refused until it can", metadata: ["error": "\(error)"])
                    }
                    let failed = shared.withLock { q -> [PendingAppend] in
                        q.writerUp = false
                        return q.inbox.take()
                    }
                    answer(failed.map { ($0, .failure(Self.unavailable("redis unreachable"))) })
                    if stopping { break }
                    _ = wakeWriter.wait(timeout: .now() + .milliseconds(backoffMs))
                    backoffMs = min(2_000, backoffMs * 2)
                    continue
                }
            }
            guard let c = conn else { continue }
            // Ephemeral events and closes queued before the batch go first: a remote browser sees a stream's deltas
            // before its final message.
            let (batch, events, closes, presence) = shared.withLock { q in
                let side = (q.outgoing, q.closes, q.presenceOut)
                q.outgoing.removeAll(keepingCapacity: true)
                q.outgoingBytes = 0
                q.closes.removeAll(keepingCapacity: true)
                q.presenceOut.removeAll(keepingCapacity: true)
                return (q.inbox.take(upTo: maxBatch), side.0, side.1, side.2)
            }
            if !events.isEmpty || !closes.isEmpty || !presence.isEmpty {
                do {
                    try sendStreamCommands(events, closes: closes, presence: presence, on: c)
                } catch {
                    logger.error("redis write of ephemeral events failed; reconnecting", metadata: ["error": "\(error)"])
                    metrics.clusterEphemeralDropped.increment(by: Int64(events.count))
                    conn = nil
                    shared.withLock { $0.writerUp = false }
                    answer(batch.map { ($0, .failure(Self.unavailable("redis write failed"))) })
                    continue
                }
                lastActivityNs = MonotonicClock.nowNs()
            }
            if batch.isEmpty {
                if !events.isEmpty || !closes.isEmpty || !presence.isEmpty { continue }
                if stopping { break }
                if wakeWriter.wait(timeout: .now() + .seconds(1)) == .timedOut {
                    // Idle: make sure the connection still works, so the next publish does not find it dead.
                    if MonotonicClock.nowNs() - lastActivityNs > 1_000_000_000 {
                        if (try? c.command(["PING"]))?.text != "PONG" {
                            logger.warning("redis writer connection lost; reconnecting")
                            conn = nil
                            shared.withLock { $0.writerUp = false }
                        }
                        lastActivityNs = MonotonicClock.nowNs()
                    }
                }
                continue
            }
            lastActivityNs = MonotonicClock.nowNs()
            do {
                try commit(batch, on: c, sha: &sha)
            } catch {
                logger.error(
                    "redis write failed; the batch is answered unavailable (its outcome is unknown: retries with the same id are deduplicated)",
                    metadata: ["error": "\(error)", "batch.events": "\(batch.count)"])
                conn = nil
                shared.withLock { $0.writerUp = false }
                answer(batch.map { ($0, .failure(Self.unavailable("redis write failed", mayBeStored: true))) })
            }
        }
        shared.withLock { $0.writerStopped = true }
        wake()
    }

    static func unavailable(_ why: String, mayBeStored: Bool = false) -> StoreError {
        StoreError(code: "redisUnavailable", description: why, degradesReadiness: false, mayBeStored: mayBeStored)
    }

    /// The event frame without its seq, and the offset where `,"seq":N` goes (right after the session).
    static func unsequencedFrame(_ r: AppendRequest) -> (frame: [UInt8], split: Int) {
        let frame = EventFrames.event(
            session: r.session, seq: nil, id: r.id, kind: r.kind, sub: r.sub, role: r.role, timestampMs: r.timestampMs, data: r.data)
        // `{"type":"event","session":` is 26 bytes; session ids need no escaping (A-Z a-z 0-9 . _ : -).
        return (frame, 26 + 2 + r.session.utf8.count)
    }

    static func splice(_ frame: [UInt8], split: Int, seq: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(frame.count + 28)
        out.append(contentsOf: frame[..<split])
        out.append(contentsOf: ",\"seq\":\(seq)".utf8)
        out.append(contentsOf: frame[split...])
        return out
    }

    private func commit(_ batch: [PendingAppend], on c: RedisConnection, sha: inout String) throws(RedisError) {
        batches.add(1, ordering: .relaxed)
        let started = ContinuousClock.now
        let epochValue = Array(epoch.utf8)
        let node = Array(nodeID.utf8)
        let window = Array(String(settings.dedupeWindow).utf8)
        // A bucket's cap: twice its share of the window (at least 16), so buckets stay small (listpack) and a
        // pruning pass is rare.
        let bucketCap = Array(String(max(16, 2 * settings.dedupeWindow / RedisKeys.dedupeBuckets)).utf8)
        var frames: [(frame: [UInt8], split: Int)] = []
        frames.reserveCapacity(batch.count)
        var commands: [[[UInt8]]] = []
        commands.reserveCapacity(batch.count)
        for item in batch {
            let r = item.request
            let f = Self.unsequencedFrame(r)
            frames.append(f)
            let fingerprint = RedisKeys.dedupeFingerprint(sub: r.sub, id: r.id)
            commands.append([
                Array("EVALSHA".utf8), Array(sha.utf8), Array("3".utf8),
                Array(keys.meta(r.session).utf8), Array(keys.log(r.session).utf8),
                Array(keys.dedupe(r.session, bucket: fingerprint.bucket).utf8),
                epochValue, fingerprint.field, f.frame, Array(String(f.split).utf8),
                Array(keys.channel(r.session).utf8), node, Array(String(r.timestampMs).utf8), window, bucketCap,
            ])
        }
        var replies = try c.pipeline(commands)
        // The script cache is empty after a Redis restart or SCRIPT FLUSH: NOSCRIPT means "not run", so load it
        // again and run exactly those publishes once more.
        let missing = replies.indices.filter { replies[$0].errorMessage?.hasPrefix("NOSCRIPT") == true }
        if !missing.isEmpty {
            let loaded = try c.command(["SCRIPT", "LOAD", RedisScripts.publish])
            if let s = loaded.text { sha = s }
            let retried = try c.pipeline(missing.map { i in
                var cmd = commands[i]
                cmd[1] = Array(sha.utf8)
                return cmd
            })
            for (k, i) in missing.enumerated() { replies[i] = retried[k] }
        }
        var results: [(PendingAppend, Result<AppendOutcome, StoreError>, [UInt8]?)] = []
        results.reserveCapacity(batch.count)
        var refused = 0
        for (i, item) in batch.enumerated() {
            let reply = replies[i]
            if let items = reply.items, items.count == 2, let flag = items[0].int, let seq = items[1].int, seq > 0 {
                if flag == 1 {
                    results.append((item, .success(.appended(seq: UInt64(seq))), Self.splice(frames[i].frame, split: frames[i].split, seq: UInt64(seq))))
                } else {
                    results.append((item, .success(.duplicate(seq: UInt64(seq))), nil))
                }
            } else {
                refused += 1
                let message = reply.errorMessage ?? "unexpected reply"
                results.append((item, .failure(StoreError(code: "redisError", description: message)), nil))
            }
        }
        if refused > 0 {
            metrics.storageErrors.increment()
            logger.error("redis refused publishes", metadata: ["refused": "\(refused)", "first": "\(results.first { if case .failure = $0.1 { true } else { false } }.map { "\($0.1)" } ?? "")"])
        }
        metrics.recordCommit(duration: ContinuousClock.now - started, events: batch.count)
        answer(results)
    }

    private func answer(_ items: [(PendingAppend, Result<AppendOutcome, StoreError>)]) {
        answer(items.map { ($0.0, $0.1, nil) })
    }

    private func answer(_ items: [(PendingAppend, Result<AppendOutcome, StoreError>, [UInt8]?)]) {
        guard !items.isEmpty else { return }
        shared.withLock { q in
            for (item, outcome, frame) in items {
                q.ready.append(
                    .committed(
                        CommitResult(
                            connection: item.connection, session: item.request.session, id: item.request.id, outcome: outcome,
                            frame: frame)))
            }
            q.answered += UInt64(items.count)
            q.inbox.release(items.lazy.map(\.0))
        }
        wake()
    }

    /// Updates that need no ordering against this node's publishes.
    private func emitReady(_ updates: [StoreUpdate]) {
        shared.withLock { $0.ready.append(contentsOf: updates) }
        wake()
    }

    // MARK: - subscriber thread

    private struct Follow {
        /// Sessions whose channel subscription Redis confirmed / that were asked for and not yet confirmed.
        var subscribed = Set<String>()
        var subscribing = Set<String>()
        /// Sessions to read once subscribed: true = joins wait for it, false = a resync.
        var wantRead: [String: Bool] = [:]
        /// The highest seq seen pushed (or read) per followed session.
        var lastSeen: [String: UInt64] = [:]
    }

    private func subscriberMain() {
        var sub: RedisConnection? = nil
        var side: RedisConnection? = nil
        var f = Follow()
        var backoffMs = 50
        var lastError = ""
        var lastTrafficNs = MonotonicClock.nowNs()
        var probeSentNs: UInt64? = nil
        var lastHeadCheckNs = MonotonicClock.nowNs()
        var lastMembersNs: UInt64 = 0
        var lastIdleScanNs: UInt64 = 0
        let probe = keys.probe(node: nodeID)

        func dropped(_ error: any Error) {
            if "\(error)" != lastError {
                lastError = "\(error)"
                logger.error("redis subscriber connection lost; followed sessions resync when it is back", metadata: ["error": "\(error)"])
            }
            sub = nil
            side = nil
            // Everything followed must be resubscribed and read again: pushes may have been lost meanwhile.
            for s in f.subscribed.union(f.subscribing) where f.wantRead[s] == nil { f.wantRead[s] = false }
            f.subscribing.formUnion(f.subscribed)
            f.subscribed.removeAll()
            var failed: [StoreUpdate] = []
            for (s, isJoin) in f.wantRead where isJoin {
                failed.append(.joinFailed(session: s, error: Self.unavailable("redis subscriber connection lost")))
                f.wantRead[s] = false
            }
            let requests = shared.withLock { q -> [String] in
                q.subscriberUp = false
                let r = q.joinRequests
                q.joinRequests.removeAll()
                return r
            }
            for s in Set(requests) { failed.append(.joinFailed(session: s, error: Self.unavailable("redis unreachable"))) }
            emitReady(failed)
        }

        while !shared.withLock({ $0.stopping }) {
            if sub == nil {
                do {
                    let s = try connect()
                    let c = try connect()
                    Self.appendInBatches(s, "SUBSCRIBE", [probe] + f.subscribing.map { keys.channel($0) })
                    try s.flush()
                    sub = s
                    side = c
                    backoffMs = 50
                    lastTrafficNs = MonotonicClock.nowNs()
                    probeSentNs = nil
                    if !lastError.isEmpty { logger.notice("redis subscriber connected again", metadata: ["resync.sessions": "\(f.subscribing.count)"]) }
                    lastError = ""
                    shared.withLock { $0.subscriberUp = true }
                    wake()
                } catch {
                    dropped(error)
                    var pfd = pollfd(fd: subscriberEvent, events: Int16(POLLIN), revents: 0)
                    _ = poll(&pfd, 1, Int32(backoffMs))
                    drainEvent()
                    backoffMs = min(2_000, backoffMs * 2)
                    continue
                }
            }
            guard let s = sub, let c = side else { continue }
            do {
                // 1. Requests from the service thread: follow sessions joins wait for, unfollow idle ones.
                let now = MonotonicClock.nowNs()
                let (requests, idle, members) = shared.withLock { q -> ([String], [String], [String: MemberCounts]?) in
                    let r = q.joinRequests
                    q.joinRequests.removeAll()
                    var expired: [String] = []
                    for (session, since) in q.idleSince where now - since > lingerNs { expired.append(session) }
                    for session in expired { q.idleSince.removeValue(forKey: session) }
                    let m = now - lastMembersNs > 1_000_000_000 ? q.members : nil
                    return (r, expired, m)
                }
                var toSubscribe: [String] = []
                for session in requests {
                    f.wantRead[session] = true
                    if !f.subscribed.contains(session) && !f.subscribing.contains(session) {
                        f.subscribing.insert(session)
                        toSubscribe.append(keys.channel(session))
                    }
                }
                var toUnsubscribe: [String] = []
                for session in idle where f.wantRead[session] == nil && f.subscribed.contains(session) {
                    f.subscribed.remove(session)
                    f.lastSeen.removeValue(forKey: session)
                    toUnsubscribe.append(keys.channel(session))
                }
                Self.appendInBatches(s, "SUBSCRIBE", toSubscribe)
                Self.appendInBatches(s, "UNSUBSCRIBE", toUnsubscribe)
                if !toSubscribe.isEmpty || !toUnsubscribe.isEmpty { try s.flush() }

                // 2. Reads for confirmed sessions: what pending joins need, or a resync after a reconnect.
                let readable = Array(f.wantRead.keys.filter { f.subscribed.contains($0) })
                if !readable.isEmpty {
                    var out: [StoreUpdate] = []
                    for (session, summary) in zip(readable, try readSummaries(c, sessions: readable)) {
                        if let h = summary?.head { f.lastSeen[session] = max(f.lastSeen[session] ?? 0, h) }
                        if f.wantRead[session] == true {
                            out.append(.joinReady(session: session, summary: summary))
                        } else if let summary {
                            out.append(.head(summary))
                        }
                        f.wantRead.removeValue(forKey: session)
                    }
                    emit(out)
                }

                // 3. Pushes and confirmations.
                var fds = [
                    pollfd(fd: s.fd, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: subscriberEvent, events: Int16(POLLIN), revents: 0),
                ]
                let n = poll(&fds, 2, 200)
                if n > 0 && fds[1].revents != 0 { drainEvent() }
                var updates: [StoreUpdate] = []
                if n > 0 && fds[0].revents != 0 {
                    try s.readAvailable()
                    lastTrafficNs = MonotonicClock.nowNs()
                    while let reply = try s.nextBuffered() {
                        handlePush(reply, probe: probe, follow: &f, updates: &updates, probeSent: &probeSentNs)
                    }
                }
                emit(updates)

                // 4. Liveness: a silent subscriber connection probes itself; no answer in time = reconnect.
                let t = MonotonicClock.nowNs()
                if let sent = probeSentNs {
                    if t - sent > probeAfterNs { throw RedisError("redis subscriber connection silent (probe not answered)") }
                } else if t - lastTrafficNs > probeAfterNs {
                    _ = try c.command(["PUBLISH", probe, "probe"])
                    probeSentNs = t
                }

                // 5. Periodic head check: catches a lost last push, which no later push would reveal.
                if t - lastHeadCheckNs > headCheckEveryNs {
                    lastHeadCheckNs = t
                    let followed = Array(f.subscribed)
                    var out: [StoreUpdate] = []
                    for (session, summary) in zip(followed, try readSummaries(c, sessions: followed)) {
                        guard let summary, summary.head > (f.lastSeen[session] ?? 0) else { continue }
                        f.lastSeen[session] = summary.head
                        out.append(.head(summary))
                    }
                    emit(out)
                }

                // 6. Idle token streams, claimed for this node (RedisStreams.swift).
                if t - lastIdleScanNs > idleScanEveryNs {
                    lastIdleScanNs = t
                    emit(try claimIdleStreams(c))
                }

                // 7. This node's subscriber counts, for `/v1/sessions` on every node.
                if let members {
                    lastMembersNs = t
                    try publishMembers(members, on: c)
                }
            } catch {
                dropped(error)
            }
        }
        shared.withLock { $0.subscriberStopped = true }
        wake()
    }

    /// Appends `command` for `channels` in commands of at most 512 channels (no I/O).
    private static func appendInBatches(_ c: RedisConnection, _ command: String, _ channels: [String]) {
        for chunk in stride(from: 0, to: channels.count, by: 512) {
            c.append([command] + channels[chunk..<min(channels.count, chunk + 512)])
        }
    }

    private func drainEvent() {
        var buffer = [UInt8](repeating: 0, count: 256)
        var rounds = 0
        while rounds < 64, Glibc.read(subscriberEvent, &buffer, buffer.count) > 0 { rounds += 1 }
    }

    private func handlePush(
        _ reply: RedisValue, probe: String, follow f: inout Follow, updates: inout [StoreUpdate], probeSent: inout UInt64?
    ) {
        guard let parts = reply.items, parts.count >= 3, let kind = parts[0].text, let channel = parts[1].text else { return }
        switch kind {
        case "subscribe":
            guard let session = keys.session(ofChannel: channel) else { return }
            if f.subscribing.remove(session) != nil { f.subscribed.insert(session) }
        case "message":
            if channel == probe {
                probeSent = nil
                return
            }
            guard let session = keys.session(ofChannel: channel), f.subscribed.contains(session),
                case .string(let payload) = parts[2]
            else { return }
            if payload.first == UInt8(ascii: "p") {
                if let p = Self.parsePresencePush(payload), p.node != presenceNode {
                    updates.append(.presence(session: session, node: p.node, key: p.key, conns: p.conns))
                }
                return
            }
            if payload.first == UInt8(ascii: "e") {
                if let e = Self.parseEphemeralPush(payload), !e.node.elementsEqual(nodeID.utf8) {
                    updates.append(.ephemeral(session: session, frame: e.frame, stream: e.stream))
                }
                return
            }
            guard let event = Self.parsePush(payload) else { return }
            f.lastSeen[session] = max(f.lastSeen[session] ?? 0, event.seq)
            updates.append(.remote(session: session, seq: event.seq, frame: event.frame))
        default:
            break
        }
    }

    /// `<seq> <node> <ts> <frame>` as the publish script sends it.
    static func parsePush(_ payload: [UInt8]) -> (seq: UInt64, frame: [UInt8])? {
        var spaces: [Int] = []
        for (i, b) in payload.enumerated() where b == 32 {
            spaces.append(i)
            if spaces.count == 3 { break }
        }
        guard spaces.count == 3, let seq = UInt64(String(decoding: payload[..<spaces[0]], as: UTF8.self)), seq > 0 else { return nil }
        return (seq, Array(payload[(spaces[2] + 1)...]))
    }

    private func publishMembers(_ members: [String: MemberCounts], on c: RedisConnection) throws(RedisError) {
        let key = keys.members(node: nodeID)
        var commands: [[[UInt8]]] = [["DEL", key].map { Array($0.utf8) }]
        // `#instance` cannot be a session id ('#' is outside their charset): which run of this node is the live one.
        var hset = ["HSET", key, "#instance", instance]
        for (session, m) in members { hset += [session, "\(m.users) \(m.agents) \(m.operators)"] }
        commands.append(hset.map { Array($0.utf8) })
        commands.append(["PEXPIRE", key, "10000"].map { Array($0.utf8) })
        let now = WallClock.nowMs()
        commands.append(["ZADD", keys.nodes, "\(now)", nodeID].map { Array($0.utf8) })
        commands.append(["ZREMRANGEBYSCORE", keys.nodes, "-inf", "\(now - 60_000)"].map { Array($0.utf8) })
        _ = try c.pipeline(commands)
    }
}
