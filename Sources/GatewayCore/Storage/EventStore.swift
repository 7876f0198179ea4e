import TranscriptLog

/// Where durable events live: the narrow interface between the service thread and a storage engine
/// (`../shared/design.md`, "Beyond one machine"). ``LocalEventStore`` (the embedded transcript log) is the
/// first implementation; cluster mode (Redis) is the second.
///
/// The service thread calls it once per durable publish (``submit(_:)``), once per wake-up
/// (``takeResults()``), and per join, replay chunk or HTTP listing (``prepareJoin(session:)``,
/// ``read(session:after:limit:maxBytes:)``, ``summary(session:)``, ``epoch``). Nothing per delivery goes through
/// it: fan-out works on the committed results' frames, which the engine encodes once per event.
///
/// A shared engine (Redis, cluster mode) also hands back events other nodes committed (``StoreUpdate/remote``) and
/// heads it learned (``StoreUpdate/head``), never before every publish this node submitted earlier was answered,
/// so the ack of a durable event still precedes its publisher's own copy.
///
/// Threading: an engine runs its writes on threads of its own and hands results back through
/// ``takeResults()`` after calling the `wake` closure it was given (which wakes the service thread with
/// `lws_cancel_service`). Reads are called from the service thread and may run concurrently with the writer.
protocol EventStore: AnyObject, Sendable {
    /// The store's epoch: it changes when the store is recreated, so clients with a cursor from another epoch
    /// get `reset` on join.
    var epoch: String { get }
    /// Every session the store holds, with its head (seeds the service thread's acked heads at start; a shared
    /// engine returns none and reports heads per join instead).
    func sessionSummaries() -> [StoreSummary]
    /// One session's head, first held seq and last event time; `nil` for a session never written.
    func summary(session: String) -> StoreSummary?
    /// Committed events of `session` with seq > `after`, in order, at most `limit` of them and about
    /// `maxBytes`: only committed records, so nobody reads an event a crash could take back.
    func read(session: String, after: UInt64, limit: Int, maxBytes: Int) throws(StoreError) -> [StoredEvent]
    /// Whether a `join` of `session` can be answered now from ``summary(session:)`` (`ready`), or the engine first
    /// reads the session's state and reports it as ``StoreUpdate/joinReady(session:summary:)`` (`pending`).
    func prepareJoin(session: String) -> JoinPreparation
    /// The last local member of `session` left (a shared engine may stop following it).
    func sessionIdle(session: String)
    /// False while the engine cannot write (Redis unreachable): `/readyz` answers 503.
    var isAvailable: Bool { get }
    /// Subscriber counts of every node of a cluster, per session (nil for a single-node engine).
    func clusterMembers() -> [String: MemberCounts]?
    /// This node's subscriber counts per session, for ``clusterMembers()`` on other nodes (service thread,
    /// about once a second).
    func publishMembers(_ counts: [String: MemberCounts])

    /// Whether ephemeral events and token streams are shared with other nodes through the engine (cluster mode). When
    /// false (the local engine), ``publishEphemeral(_:)`` and ``closeStream(session:sub:id:)`` do nothing,
    /// ``openStreams(session:)`` returns none and the gateway finalizes idle streams itself.
    var sharesStreams: Bool { get }
    /// Hands an ephemeral event this node fanned out to the other nodes (cluster mode), with the token-stream delta it
    /// carries, if any (the engine appends it to the stream's shared text). Never blocks: the engine's writer sends
    /// it with its next pipelined batch; when its bounded queue is full the event is dropped for other nodes
    /// (counted), as an ephemeral event a slow subscriber cannot take is.
    func publishEphemeral(_ event: EphemeralPublish)
    /// The stream (session, sub, id) was closed (its final message or its finalize committed): the engine forgets
    /// its shared text. Never blocks (queued for the writer).
    func closeStream(session: String, sub: String, id: String)
    /// The open streams of `session` held by the other nodes of a cluster, as a snapshot for a joiner (service
    /// thread; one pipelined read). Empty for a single-node engine or when the read fails.
    func openStreams(session: String) -> [StreamSnapshot]

    /// This node's count of connections of one subject joined to `session` changed to `conns` (0: none left): a shared
    /// engine records it for the cluster and tells the other nodes (presence, v1.1 §2). Never blocks (queued for the
    /// writer). Nothing for a single-node engine.
    func publishPresence(session: String, key: PresenceKey, conns: Int)
    /// The other live nodes' presence in `session`: per node, per subject, its connection count (service thread; one
    /// pipelined read). Nil for a single-node engine; empty when the read fails.
    func presence(session: String) -> [String: [PresenceKey: Int]]?

    /// Starts the engine's threads. `wake` is called (from any thread) after results were queued;
    /// `onFatal` once when the engine can no longer be trusted to write (the gateway drains and exits).
    func start(wake: @escaping @Sendable () -> Void, onFatal: @escaping @Sendable (String) -> Void)
    /// Queues one durable publish for the next batch, or refuses it (the caller answers `unavailable`) when the
    /// engine's inbox is at its count or byte limit (``StorageInbox``, `limits.storage_inbox_bytes`) or the engine
    /// is stopping: nothing is acked that is not stored, and queued publishes stay within the budget.
    func submit(_ item: PendingAppend) -> SubmitResult
    /// Takes every update so far, in order: local commit results in commit order, then what other nodes committed
    /// (service thread).
    func takeResults() -> [StoreUpdate]
    /// Publishes submitted and not yet committed.
    var queuedCount: Int { get }
    /// Batches committed (or refused) so far; read by tests and diagnostics.
    var batchesCommitted: Int { get }
    /// Asks the engine to commit what is queued, make it durable, close and stop its threads. Idempotent.
    func stop()
    /// Waits (bounded) until the engine stopped. Returns false on timeout.
    func waitStopped(timeout: Duration) -> Bool
}

/// A session's position in a store.
struct StoreSummary: Sendable, Equatable {
    var session: String
    /// Latest committed seq (0 if none).
    var head: UInt64
    /// Oldest seq still held (`head + 1` when none).
    var firstHeld: UInt64
    /// Time of the latest event (Unix ms; 0 if none).
    var lastTimestampMs: Int64

    init(session: String, head: UInt64, firstHeld: UInt64, lastTimestampMs: Int64) {
        self.session = session
        self.head = head
        self.firstHeld = firstHeld
        self.lastTimestampMs = lastTimestampMs
    }

    init(_ s: SessionSummary) {
        self.init(session: s.session, head: s.head, firstHeld: s.firstHeld, lastTimestampMs: s.lastTimestampMs)
    }
}

/// One committed event as a store returns it: its seq and its event frame (JSON text), ready to send.
struct StoredEvent: Sendable {
    var seq: UInt64
    var frame: [UInt8]
}

/// Subscribers of a session by role.
struct MemberCounts: Sendable, Equatable {
    var users = 0
    var agents = 0
    var operators = 0

    static func + (a: MemberCounts, b: MemberCounts) -> MemberCounts {
        MemberCounts(users: a.users + b.users, agents: a.agents + b.agents, operators: a.operators + b.operators)
    }
}

/// ``EventStore/prepareJoin(session:)``.
enum JoinPreparation: Sendable {
    case ready
    case pending
    case unavailable(StoreError)
}

/// What ``EventStore/takeResults()`` hands the service thread.
enum StoreUpdate: Sendable {
    /// A publish this node submitted was committed (or refused): ack it, then fan it out.
    case committed(CommitResult)
    /// An event another node committed (a shared engine), with its frame: fan it out.
    case remote(session: String, seq: UInt64, frame: [UInt8])
    /// An ephemeral event another node fanned out (a shared engine): fan it out to live subscribers. `stream` is set
    /// for a token-stream delta: the stream and its length after the delta (subscribers whose snapshot already holds
    /// it skip it).
    case ephemeral(session: String, frame: [UInt8], stream: StreamPosition?)
    /// Another node's count of connections of one subject joined to `session` (0: none left), presence v1.1 §2.
    case presence(session: String, node: String, key: PresenceKey, conns: Int)
    /// Streams of `session` a shared engine found idle for `streams.idle_timeout_seconds` and claimed for this node
    /// (one node at a time claims each): the gateway appends their finalize events.
    case streamsIdle(session: String, streams: [StreamSnapshot])
    /// The session's committed head as read from the store (after a resubscription or a periodic check); events
    /// up to it may not have been seen: subscribers behind it catch up from the store.
    case head(StoreSummary)
    /// The state a pending `join` needs (``EventStore/prepareJoin(session:)`` said `pending`); nil = never written.
    case joinReady(session: String, summary: StoreSummary?)
    /// Pending joins of this session cannot be answered (the store is unreachable).
    case joinFailed(session: String, error: StoreError)
    /// The store's contents were recreated under this node (its epoch changed): every cursor is void.
    case reset(reason: String)
    /// Publishes the engine will never answer, because neither "stored" nor "not stored" would be true (the local
    /// log failed to cut a failed batch back off its file); the engine called `onFatal` first. They are no longer
    /// in flight: the drain need not wait for them, and their clients, closed by the drain, re-publish with the
    /// same id after the restart (dedupe answers those the reopened log holds).
    case abandoned(count: Int)
}

/// An ephemeral event for the other nodes of a cluster (``EventStore/publishEphemeral(_:)``).
struct EphemeralPublish: Sendable {
    var session: String
    /// The event frame as this node fanned it out.
    var frame: [UInt8]
    /// The token-stream delta the event carries, if any.
    var stream: StreamAppend?
}

/// One token-stream delta for a shared engine: the stream, what opened it, this delta's text and the stream's length
/// after it (the publishing node keeps the stream's text and its length; the engine only appends).
struct StreamAppend: Sendable {
    var key: StreamKey
    /// Kind of the delta that opened the stream, and the publisher's role.
    var kind: String
    var role: String
    /// This delta's text (UTF-8, unescaped).
    var text: [UInt8]
    /// The stream's length in bytes after this delta.
    var endOffset: Int
    /// Time of the delta (Unix ms).
    var timestampMs: Int64
}

/// A delta's place in its stream, as another node pushed it.
struct StreamPosition: Sendable, Equatable {
    var key: StreamKey
    var endOffset: Int
}

/// One open stream as a shared engine holds it (``EventStore/openStreams(session:)``, ``StoreUpdate/streamsIdle(session:streams:)``).
struct StreamSnapshot: Sendable {
    var key: StreamKey
    var kind: String
    var role: String
    /// Time of its latest delta (Unix ms).
    var timestampMs: Int64
    var text: [UInt8]
}

/// One durable publish on its way to the store.
///
/// Built on the service thread, appended on the engine's writer thread, handed back in a ``CommitResult``.
struct PendingAppend: Sendable {
    /// The publishing connection and its generation, so the ack reaches the right socket (or nobody).
    var connection: ConnectionID
    var request: AppendRequest
}

/// The outcome of one ``PendingAppend`` after its batch was committed (or refused).
struct CommitResult: Sendable {
    var connection: ConnectionID
    var session: String
    var id: String
    var outcome: Result<AppendOutcome, StoreError>
    /// The event frame payload (JSON text), encoded once by the engine for a fresh append; nil otherwise.
    var frame: [UInt8]?
}

/// Why a store refused a write or a read. The client is told `unavailable` naming ``code``; nothing refused
/// was stored.
struct StoreError: Error, CustomStringConvertible, Sendable {
    /// A short machine-readable reason (`diskFull`, `ioError`, ...), shown to clients.
    var code: String
    /// The full description, for the gateway's log.
    var description: String
    /// Whether the refusal makes `/readyz` answer 503 until a write succeeds (disk full, I/O error). False when the
    /// engine reports its unavailability itself (``EventStore/isAvailable``: Redis unreachable).
    var degradesReadiness: Bool
    /// Whether the write may have been stored although it was refused (a Redis connection lost after the batch was
    /// sent): the client is told the outcome is unknown and re-publishes with the same id (dedupe answers it).
    var mayBeStored: Bool

    init(code: String, description: String, degradesReadiness: Bool = true, mayBeStored: Bool = false) {
        self.code = code
        self.description = description
        self.degradesReadiness = degradesReadiness
        self.mayBeStored = mayBeStored
    }

    /// The transcript log's error, as the local engine reports it. Only the disk's errors degrade readiness: a
    /// refused oversized event, or a log closed at shutdown, says nothing about whether the next write succeeds.
    init(_ e: TranscriptError) {
        let disk: [TranscriptError.Code] = [.diskFull, .ioError, .readOnly, .failed, .outcomeUnknown, .corrupted]
        self.init(
            code: "\(e.code)", description: "\(e)", degradesReadiness: disk.contains(e.code),
            mayBeStored: e.code == .outcomeUnknown)
    }
}
