import Glibc
import Prometheus
import CLWS
import Foundation
import GatewayAuth
import GatewayConfig
import GatewayProtocol
import Logging
import Synchronization
import TranscriptLog

/// The realtime gateway: libwebsockets on one service thread, the transcript log on a storage thread.
///
/// Threads (docs/architecture.md):
/// - the **service thread** creates, services and destroys the lws context; it owns every `Connection`,
///   session membership, fan-out and replay. Nothing on it hops to a Task per message.
/// - the **store** (``EventStore``; ``LocalEventStore`` by default) appends durable events in group-committed
///   batches on a thread of its own.
/// - a **ticker thread** wakes the service thread a few times per second for deadlines (auth, token
///   expiry, shutdown).
/// Other threads talk to the service thread only through the store's outbox (a Mutex) plus `lws_cancel_service`.
///
/// The server owns the lws context and the connections and dispatches lws callbacks (Transport/); sessions,
/// fan-out and replay are their own types that it calls (Sessions/); storage sits behind ``EventStore``
/// (Storage/); HTTP endpoints are in HTTP/.
public final class GatewayServer: @unchecked Sendable {
    // @unchecked Sendable: cross-thread state is in Mutex/Atomic properties (`contextRef`, `flags`,
    // `startResult`); everything else is confined to the service thread, as each property's comment says.

    public struct BoundListener: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var tls: Bool
    }

    let config: GatewayConfiguration
    let logger: Logger
    let metrics = GatewayMetrics()
    let verifier: TokenVerifier
    let store: any EventStore
    let webAssets: WebAssets
    // Service-thread collaborators: outbound queues and writes, session membership, fan-out, replay.
    let io: ConnectionIO
    let table: SessionTable
    let replay: ReplayPump
    let fanOut: FanOut
    /// Token streams opened through this node (TokenStreams.swift).
    let streams: TokenStreams

    // MARK: cross-thread
    struct ContextRef: @unchecked Sendable { let ptr: OpaquePointer }  // only used for lws_cancel_service
    private let contextRef = Mutex<ContextRef?>(nil)
    private let shutdownRequested = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)
    private let startResult = Mutex<Result<[BoundListener], GatewayStartError>?>(nil)
    private let stoppedSignal = DispatchSemaphore(value: 0)

    // MARK: service thread only
    var context: OpaquePointer?
    var listeners: [ListenSocket] = []
    var listenWsis: [OpaquePointer] = []
    var connections: [ConnectionID: Connection] = [:]
    var lastTokenCheckNs: UInt64 = 0
    var connectionsPerSub: [String: Int] = [:]
    var nextConnection: UInt64 = 0
    var inFlight = 0
    var draining = false
    var drainDeadlineNs: UInt64 = 0
    var clientsClosed = false
    var loopShouldExit = false
    var lastHousekeepingNs: UInt64 = 0
    var ready = false
    var storageDegraded = false
    /// HTTP API requests by wsi, from their headers to their reply (HTTP/HTTPAPI.swift).
    var httpExchanges: [OpaquePointer: HTTPExchange] = [:]
    /// HTTP publishes waiting for their commit result, by the key their ``PendingAppend`` carries (taken from the
    /// connection counter, so it never equals a WebSocket connection's id); at most `maxPendingHTTPPublishes`.
    var pendingHTTPPublishes: [ConnectionID: HTTPExchange] = [:]
    /// The HTTP publishes' rate limit, per token `sub`.
    var httpBuckets = SubBuckets(capacity: GatewayServer.maxHTTPRateBuckets)
    /// Set while ``shedOverBudget()`` runs (its closes must not start it again).
    var shedding = false
    /// Cluster presence: when the watched sessions were last re-read, and where the round robin stands.
    var lastPresenceRefreshNs: UInt64 = 0
    var presenceRefreshCursor = 0
    static let presenceRefreshPerTick = 32
    /// Joins waiting for the store, per session (cluster mode), in arrival order.
    var pendingJoins: [String: [PendingJoin]] = [:]
    /// How long a join may wait for the store before it is answered `unavailable`.
    var joinTimeoutNs: UInt64 { UInt64((config.redis.timeoutSeconds * 2 + 1) * 1e9) }
    var lastMembersPublishNs: UInt64 = 0
    var usesEventLib: Bool { config.eventLoop == "libev" }
    /// Set when the context was destroyed from inside the event-library loop (how an evlib loop is stopped).
    var destroyedInLoop = false
    /// Connections that may have more bytes in their socket than lws's one read of this loop turn took
    /// (the read budget, ``serviceMoreReads()``); each at most once (`Connection.readAgain`).
    var readMore: [Connection] = []
    /// A wake-up was requested so that ``serviceMoreReads()`` runs (cleared when it ran).
    var readWakeRequested = false
    /// Reads made by the read budget since the last metrics flush.
    var extraReads = 0

    /// Opens the store (the transcript log: recovery runs here) and prepares the server; ``start()`` begins serving.
    /// - Throws: ``GatewayStartError`` naming what failed (log directory, keys).
    /// - Parameter fileIO: the log's file-system layer; tests inject faults (EIO, failed fsync) through it.
    public init(configuration: GatewayConfiguration, logger: Logger, fileIO: any FileIO = PosixFileIO()) async throws {
        self.config = configuration
        self.logger = logger
        do {
            self.verifier = try await TokenVerifier(configuration.auth)
        } catch {
            throw GatewayStartError("auth configuration: \(error)")
        }
        let store: any EventStore
        switch configuration.storageEngine {
        case .local:
            store = try LocalEventStore.open(configuration: configuration, fileIO: fileIO, metrics: metrics, logger: logger)
        case .redis:
            store = try RedisEventStore.open(configuration: configuration, metrics: metrics, logger: logger)
        }
        self.store = store
        self.webAssets = WebAssets(root: configuration.webRoot)
        io = ConnectionIO(
            outboundCap: configuration.limits.outboundBufferBytes, totalCap: configuration.limits.totalOutboundBytes,
            pacingMaxNs: UInt64(configuration.limits.writePacingMaxMicroseconds) * 1_000, metrics: metrics, logger: logger)
        table = SessionTable(seedHeads: store.sessionSummaries(), metrics: metrics)
        replay = ReplayPump(
            store: store, table: table, io: io, chunkEvents: configuration.limits.replayChunkEvents,
            outboundCap: configuration.limits.outboundBufferBytes, logger: logger)
        fanOut = FanOut(table: table, io: io, replay: replay)
        table.onIdle = { [store] session in store.sessionIdle(session: session) }
        streams = TokenStreams(settings: configuration.streams, maxMessageBytes: configuration.limits.maxMessageBytes)
        io.onOverBudget = { [unowned self] in self.shedOverBudget() }
        replay.onReset = { [unowned self] conn, session in self.endSubscription(conn, session: session, reason: "reset") }
        table.onPresence = { [unowned self] live, key, joined, conn in
            self.presenceChanged(live, key, joined: joined, by: conn)
        }
        if store.sharesStreams {
            table.onSubjectCount = { [store] live, key, conns in store.publishPresence(session: live.id, key: key, conns: conns) }
        }
        replay.onLive = { [unowned self] conn, sub in self.sendStreamSnapshots(conn, sub) }
    }

    /// Binds every configured listener, starts the storage, ticker and service threads, and returns once
    /// the gateway is serving (or throws what prevented it).
    @discardableResult
    public func start() throws -> [BoundListener] {
        var sockets: [ListenSocket] = []
        for (index, l) in config.listeners.enumerated() {
            do {
                sockets.append(try ListenSocket.bind(host: l.host, port: l.port, tls: l.tls.map { ($0.certPath, $0.keyPath) }, index: index))
            } catch {
                for s in sockets { s.close() }
                throw GatewayStartError("listeners[\(index)] \(l.host):\(l.port): \(error)")
            }
        }
        listeners = sockets
        let box = WakeBox(server: self)
        store.start(wake: { box.wake() }, onFatal: { reason in box.server?.failFatally(reason) })
        let t = Thread { [self] in self.serviceThreadMain() }
        t.name = "gateway-lws"
        t.stackSize = 8 << 20
        t.start()
        let ticker = Thread { [self] in
            while !self.stopped.load(ordering: .acquiring) {
                usleep(200_000)
                self.wake()
            }
        }
        ticker.name = "gateway-ticker"
        ticker.start()
        // Bounded wait for the service thread to create the context and adopt the listeners.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let r = startResult.withLock({ $0 }) {
                switch r {
                case .success(let bound): return bound
                case .failure(let e):
                    store.stop()
                    _ = store.waitStopped(timeout: .seconds(5))
                    throw e
                }
            }
            usleep(1_000)
        }
        throw GatewayStartError("service thread did not start within 30 s")
    }

    /// Starts a graceful shutdown: stop accepting, finish durable writes, close clients with 1001,
    /// fsync and close the log. Callable from any thread, any number of times.
    public func beginShutdown() {
        shutdownRequested.store(true, ordering: .releasing)
        wake()
    }

    /// Blocks the calling thread until the gateway has stopped.
    public func waitUntilStopped() {
        stoppedSignal.wait()
        stoppedSignal.signal()
    }

    /// Waits until the gateway has stopped, without blocking the cooperative pool.
    public func stoppedAsync() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let t = Thread { [self] in
                self.waitUntilStopped()
                c.resume()
            }
            t.start()
        }
    }

    public var isStopped: Bool { stopped.load(ordering: .acquiring) }

    /// Storage batches (group commits) this gateway has made so far.
    public var storageBatches: Int { store.batchesCommitted }

    /// Why the gateway stopped on its own, if it did: an I/O error on the log (reliability.md G7: never retry
    /// an fsync and pretend; stop, and let the supervisor restart, which re-verifies the log from disk).
    /// The executable exits non-zero when this is set.
    public var fatalReason: String? { fatal.withLock { $0 } }
    private let fatal = Mutex<String?>(nil)

    /// Stops the gateway because the log can no longer be trusted to write (any thread).
    func failFatally(_ reason: String) {
        let first = fatal.withLock { f -> Bool in
            if f != nil { return false }
            f = reason
            return true
        }
        if first {
            logger.critical("transcript log failed; draining and exiting for a restart", metadata: ["reason": "\(reason)"])
            beginShutdown()
        }
    }

    /// Process-wide allocator tuning for the executable (call once at start, before other threads exist).
    ///
    /// Every event frame is allocated on the storage thread and freed on the service thread once written: with
    /// glibc's default (dynamic) trim threshold the thread arenas shrink and regrow all the time under load
    /// (thousands of `mprotect` calls and page faults per second in profiles). Keep up to 64 MiB of free memory
    /// per arena instead. Fixing the trim threshold also fixes glibc's mmap threshold, which would otherwise have
    /// grown on its own: blocks up to 4 MiB (coalesced write buffers, log read windows) come from the arenas and
    /// are reused instead of being mapped, faulted in and unmapped per use.
    public static func tuneAllocator() {
        _ = CLWS_set_malloc_thresholds(64 << 20, 4 << 20)
    }

    /// Wakes the service thread (any thread). Safe after the context is gone.
    func wake() {
        contextRef.withLock { ref in
            if let ref { lws_cancel_service(ref.ptr) }
        }
    }

    // MARK: - service thread

    private func serviceThreadMain() {
        let allocations = CAllocations()
        let ctx = createContext(allocations)
        guard let ctx else {
            for s in listeners { s.close() }
            startResult.withLock { $0 = .failure(GatewayStartError("lws_create_context failed (see log)")) }
            finishStopped()
            return
        }
        context = ctx
        io.pacer.context = ctx
        contextRef.withLock { $0 = ContextRef(ptr: ctx) }
        var bound: [BoundListener] = []
        for s in listeners {
            guard let vhost = createVhost(ctx, listener: s, allocations) else {
                startResult.withLock {
                    $0 = .failure(GatewayStartError("listeners[\(s.index)]: lws_create_vhost failed (TLS cert/key?)"))
                }
                shutdownNow(ctx)
                return
            }
            var fd = lws_sock_file_fd_type()
            fd.filefd = s.fd
            guard let wsi = lws_adopt_descriptor_vhost(vhost, LWS_ADOPT_RAW_FILE_DESC, fd, allocations.acceptProtocolName, nil)
            else {
                startResult.withLock { $0 = .failure(GatewayStartError("listeners[\(s.index)]: adopting the listen socket failed")) }
                shutdownNow(ctx)
                return
            }
            s.vhost = vhost
            listenWsis.append(wsi)
            bound.append(BoundListener(host: s.host, port: s.port, tls: s.tls != nil))
            logger.info(
                "listening", metadata: ["host": "\(s.host)", "port": "\(s.port)", "tls": "\(s.tls != nil)"])
        }
        ready = true
        startResult.withLock { $0 = .success(bound) }

        // The loop: lws_service blocks in poll() until socket activity or lws_cancel_service.
        var n: Int32 = 0
        while n >= 0 && !loopShouldExit {
            n = lws_service(ctx, 0)
        }
        shutdownNow(ctx)
        withExtendedLifetime(allocations) {}
    }

    private func shutdownNow(_ ctx: OpaquePointer) {
        contextRef.withLock { $0 = nil }
        io.pacer.context = nil
        // CLOSED callbacks for the remaining connections run inside destroy. After an in-loop destroy (event
        // library), lws needs this second call to finish (lws-notes §3.12).
        lws_context_destroy(ctx)
        context = nil
        store.stop()
        if !store.waitStopped(timeout: .seconds(max(1, config.shutdownDeadlineSeconds))) {
            logger.error("storage thread did not stop in time")
        }
        finishStopped()
    }

    private func finishStopped() {
        stopped.store(true, ordering: .releasing)
        logger.info("gateway stopped")
        stoppedSignal.signal()
    }

    /// Called on every wake-up of the loop (EVENT_WAIT_CANCELLED): drains committed results,
    /// then runs deadlines at most every 200 ms.
    func onWake() {
        let updates = store.takeResults()
        if !updates.isEmpty { handleUpdates(updates) }
        if !readMore.isEmpty { serviceMoreReads() }

        let now = MonotonicClock.nowNs()
        if now - lastHousekeepingNs >= 200_000_000 {
            lastHousekeepingNs = now
            housekeeping(now)
        }
        // An event-library loop (libev) only returns from lws_service once the context is destroyed from
        // inside it.
        if loopShouldExit && usesEventLib && !destroyedInLoop, let ctx = context {
            destroyedInLoop = true
            contextRef.withLock { $0 = nil }
            io.pacer.context = nil
            lws_context_destroy(ctx)
        }
    }

    private func housekeeping(_ now: UInt64) {
        if shutdownRequested.load(ordering: .acquiring) && !draining { startDraining(now) }
        let authDeadline = UInt64(config.limits.authTimeoutSeconds * 1e9)
        let wallMs = WallClock.nowMs()
        let leewayMs = Int64(config.auth.leewaySeconds) * 1_000
        let checkTokens = now - lastTokenCheckNs >= UInt64(max(0.2, config.limits.tokenRecheckSeconds) * 1e9)
        if checkTokens { lastTokenCheckNs = now }
        var total = 0
        for conn in connections.values {
            total += conn.queuedBytes
            switch conn.phase {
            case .awaitingHello, .authenticating:
                if now - conn.openedNs > authDeadline {
                    io.close(conn, code: 4001, reason: "authentication timeout", urgent: true)
                }
            case .active:
                if checkTokens, let p = conn.principal, p.expiresAt * 1_000 + leewayMs < wallMs {
                    io.close(conn, code: 4001, reason: "token expired", urgent: false)
                }
            case .closing:
                break
            }
        }
        metrics.outboundQueueBytes.set(Double(total))
        // Replay refills queues without going through `send`: the budget is checked here too.
        if io.isOverBudget { shedOverBudget() }
        refreshRemotePresence(now)
        if !pendingJoins.isEmpty {
            for session in Array(pendingJoins.keys) {
                failPendingJoins(session: session, reason: "timeout") { $0.deadlineNs > now }
            }
        }
        if now - lastMembersPublishNs >= 1_000_000_000 {
            lastMembersPublishNs = now
            store.publishMembers(localMembers())
        }
        metrics.storageQueueDepth.set(Double(store.queuedCount))
        streamsTick(now)
        flushCounters()
        if draining { continueDraining(now) }
    }

    /// Moves the hot-path delivery counters into `metrics` (housekeeping tick and `GET /metrics`).
    func flushCounters() {
        let live = fanOut.takeCounts()
        let replayed = replay.takeCount()
        if live.durable > 0 { metrics.eventsOutDurable.increment(by: Int64(live.durable)) }
        if live.ephemeral > 0 { metrics.eventsOutEphemeral.increment(by: Int64(live.ephemeral)) }
        if replayed > 0 { metrics.eventsOutReplay.increment(by: Int64(replayed)) }
        let w = io.takeWriteCounts()
        if w.writes > 0 { metrics.socketWrites.increment(by: Int64(w.writes)) }
        if w.frames > 0 { metrics.framesWritten.increment(by: Int64(w.frames)) }
        let paced = io.pacer.takeDeferred()
        if paced > 0 { metrics.writesDeferred.increment(by: Int64(paced)) }
        if extraReads > 0 { metrics.extraReads.increment(by: Int64(extraReads)) }
        extraReads = 0
    }

    // MARK: read budget

    /// Bytes of one lws read per loop turn (the protocol's `rx_buffer_size`; Transport/LWSContext.swift).
    static let rxChunkBytes = 2 * 1024

    /// Marks `conn` for another read in this turn once what it received since its last check could have filled
    /// lws's read (a publisher streaming small messages crosses it within one read; a chat message does not).
    func noteReceived(_ conn: Connection, bytes: Int) {
        guard config.limits.readsPerTurn > 1 else { return }
        conn.rxTurnBytes &+= bytes + 8
        // A connection over its rate limit (its last publish was refused) gets lws's one read per turn, no more:
        // reading a flood faster only makes more errors and takes the loop from everyone else.
        guard !conn.readAgain, conn.strikes == 0, conn.rxTurnBytes >= Self.rxChunkBytes * 3 / 4 else { return }
        conn.readAgain = true
        readMore.append(conn)
        if !readWakeRequested {
            readWakeRequested = true
            if let context { lws_cancel_service(context) }
        }
    }

    /// The read budget: lws reads each socket once per loop turn (at most `rx_buffer_size`, 2 KiB), so a publisher
    /// streaming small messages was held to ~6 messages per turn however long the turn — the ceiling the ~6.7 frames
    /// per send of the fan-out came from (docs/benchmarks.md). Each marked connection whose socket still holds bytes
    /// (FIONREAD) is read again, up to `limits.reads_per_turn` reads in all per turn. Runs in the wake-up callback
    /// (the cancel pipe's, not a connection's, so no connection's own callback is re-entered), on both event loops.
    func serviceMoreReads() {
        readWakeRequested = false
        guard let ctx = context else { return }
        let marked = readMore
        readMore.removeAll(keepingCapacity: true)
        let budget = config.limits.readsPerTurn - 1
        for conn in marked {
            conn.readAgain = false
            conn.rxTurnBytes = 0
            var reads = 0
            while reads < budget && !conn.released && conn.phase != .closing && conn.strikes == 0 {
                let fd = lws_get_socket_fd(conn.wsi)
                guard fd >= 0, CLWS_socket_readable_bytes(fd) > 0 else { break }
                reads += 1
                if CLWS_service_read(ctx, fd) != 0 { break }
            }
            extraReads += reads
        }
    }

    // MARK: shutdown

    private func startDraining(_ now: UInt64) {
        draining = true
        drainDeadlineNs = now + UInt64(max(1, config.shutdownDeadlineSeconds) * 1e9)
        logger.info("shutdown: draining", metadata: ["connections": "\(connections.count)", "in_flight": "\(inFlight)"])
        // Stop accepting: close the listen sockets (lws closes the fd with the raw-file wsi).
        for wsi in listenWsis { lws_set_timeout(wsi, pending_timeout(rawValue: 1), Int32(LWS_TO_KILL_ASYNC)) }
        listenWsis.removeAll()
    }

    private func continueDraining(_ now: UInt64) {
        // Budget: durable writes may take up to half the deadline, the close handshakes the rest.
        let halfway = drainDeadlineNs - UInt64(max(1, config.shutdownDeadlineSeconds) * 5e8)
        if !clientsClosed && (inFlight == 0 || now >= halfway) {
            clientsClosed = true
            for conn in connections.values where conn.phase != .closing || conn.pendingClose == nil {
                io.close(conn, code: 1001, reason: "server shutting down", urgent: false)
            }
        }
        // HTTP API requests still being read or answered get their answer (a publish its seq) before the loop ends.
        if clientsClosed && ((connections.isEmpty && httpExchanges.isEmpty) || now >= drainDeadlineNs) {
            if !connections.isEmpty {
                logger.warning("shutdown deadline reached; dropping connections", metadata: ["connections": "\(connections.count)"])
            }
            loopShouldExit = true
        }
    }

    var isReady: Bool { ready && !draining && !storageDegraded && store.isAvailable }

    /// Subscribers of every live session on this node, by role.
    func localMembers() -> [String: MemberCounts] {
        var out: [String: MemberCounts] = [:]
        for (id, live) in table.live {
            var c = MemberCounts()
            for sub in live.subscribers.values {
                switch sub.connection.principal?.role {
                case .user: c.users += 1
                case .agent: c.agents += 1
                case .operator: c.operators += 1
                case nil: break
                }
            }
            out[id] = c
        }
        return out
    }
    /// Set while the log refuses writes (disk full): `/readyz` answers 503 until a write succeeds again.
}

/// Lets the storage thread wake the server without a retain cycle at init time.
final class WakeBox: @unchecked Sendable {
    // @unchecked Sendable: `server` is set once before any thread that calls `wake()` starts.
    weak var server: GatewayServer?
    init(server: GatewayServer? = nil) { self.server = server }
    func wake() { server?.wake() }
}

/// Why the gateway could not start; the message names the setting or resource.
public struct GatewayStartError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ message: String) { description = message }
}
