import TranscriptLog

/// Where durable events live: the narrow interface between the service thread and a storage engine
/// (`../shared/design.md`, "Beyond one machine"). ``LocalEventStore`` (the embedded transcript log) is the
/// first implementation; cluster mode (Redis) is the second.
///
/// The service thread calls it once per durable publish (``submit(_:)``), once per wake-up
/// (``takeResults()``), and per join, replay chunk or HTTP listing (``read(session:after:limit:maxBytes:)``,
/// ``summary(session:)``, ``epoch``). Nothing per delivery goes through it: fan-out works on the committed
/// results' frames, which the engine encodes once per event.
///
/// Threading: an engine runs its writes on threads of its own and hands results back through
/// ``takeResults()`` after calling the `wake` closure it was given (which wakes the service thread with
/// `lws_cancel_service`). Reads are called from the service thread and may run concurrently with the writer.
protocol EventStore: AnyObject, Sendable {
    /// The store's epoch: it changes when the store is recreated, so clients with a cursor from another epoch
    /// get `reset` on join.
    var epoch: String { get }
    /// Every session the store holds, with its head (seeds the service thread's acked heads at start).
    func sessionSummaries() -> [SessionSummary]
    /// One session's head, first held seq and last event time; `nil` for a session never written.
    func summary(session: String) -> SessionSummary?
    /// The session's committed head (0 for a session never written).
    func head(session: String) -> UInt64
    /// Committed events of `session` with seq > `after`, in order, at most `limit` of them and about
    /// `maxBytes`: only committed records, so nobody reads an event a crash could take back.
    func read(session: String, after: UInt64, limit: Int, maxBytes: Int) throws(StoreError) -> ReadResult

    /// Starts the engine's threads. `wake` is called (from any thread) after results were queued;
    /// `onFatal` once when the engine can no longer be trusted to write (the gateway drains and exits).
    func start(wake: @escaping @Sendable () -> Void, onFatal: @escaping @Sendable (String) -> Void)
    /// Queues one durable publish for the next batch. Returns false when the engine's queue is full or it is
    /// stopping (the caller answers `unavailable`): nothing is acked that is not stored.
    func submit(_ item: PendingAppend) -> Bool
    /// Takes every result committed (or refused) so far, in commit order (service thread).
    func takeResults() -> [CommitResult]
    /// Publishes submitted and not yet committed.
    var queuedCount: Int { get }
    /// Batches committed (or refused) so far; read by tests and diagnostics.
    var batchesCommitted: Int { get }
    /// Asks the engine to commit what is queued, make it durable, close and stop its threads. Idempotent.
    func stop()
    /// Waits (bounded) until the engine stopped. Returns false on timeout.
    func waitStopped(timeout: Duration) -> Bool
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

    init(code: String, description: String) {
        self.code = code
        self.description = description
    }

    /// The transcript log's error, as the local engine reports it.
    init(_ e: TranscriptError) {
        self.init(code: "\(e.code)", description: "\(e)")
    }
}
