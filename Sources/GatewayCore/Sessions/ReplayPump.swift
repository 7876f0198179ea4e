import GatewayProtocol
import Logging
import TranscriptLog

/// Feeds catching-up subscriptions from the store in chunks, only while the connection's outbound queue is
/// below half its cap; the rest follows when the socket drains (WRITEABLE calls ``pump(_:)`` again). A long
/// history is never loaded whole. Service thread only.
final class ReplayPump {
    private let store: any EventStore
    private let table: SessionTable
    private let io: ConnectionIO
    private let logger: Logger
    private let chunkEvents: Int
    private let lowWater: Int
    /// Replayed deliveries since the last ``takeCount()``.
    private var delivered = 0
    /// Reads of one chunk tried before a subscription is ended with `reset`.
    static let readAttempts = 3
    /// Ends a subscription that cannot continue without a gap (`left` with reason `reset`, protocol v1.1 §5).
    var onReset: (Connection, String) -> Void = { _, _ in }
    /// Called when a subscription that was joined with a snapshot pending (``Subscription/snapshotPending``) turns
    /// live, after its replay was queued: the token-stream snapshots go right behind it (TokenStreams.swift).
    var onLive: ((Connection, Subscription) -> Void)?

    init(store: any EventStore, table: SessionTable, io: ConnectionIO, chunkEvents: Int, outboundCap: Int, logger: Logger) {
        self.store = store
        self.table = table
        self.io = io
        self.chunkEvents = chunkEvents
        self.lowWater = outboundCap / 2
        self.logger = logger
    }

    /// One chunk per catching-up subscription of `conn`. Reads are O(events returned) through the store's
    /// per-session index; a subscription that reaches the acked head turns live.
    func pump(_ conn: Connection) {
        for (session, sub) in conn.subscriptions where sub.catchingUp {
            if conn.queuedBytes >= lowWater || conn.phase != .active { break }
            let ackedHead = table.ackedHead(session)
            if sub.nextSeq > ackedHead {
                turnLive(conn, sub)
                continue
            }
            // A failing read is retried a bounded number of times; then the subscription cannot continue without a
            // gap and ends with `left` `reset` (the client re-joins with since and epoch).
            var events: [StoredEvent] = []
            var failure: StoreError?
            for _ in 0..<Self.readAttempts {
                do {
                    events = try store.read(
                        session: session, after: sub.nextSeq - 1, limit: chunkEvents, maxBytes: max(64 * 1024, lowWater / 2))
                    failure = nil
                    break
                } catch {
                    failure = error
                }
            }
            if let failure {
                logger.error(
                    "replay read failed; ending the subscription with reset",
                    metadata: ["connection.id": "\(conn.id)", "error": "\(failure)", "attempts": "\(Self.readAttempts)"])
                onReset(conn, session)
                continue
            }
            // Retention removed events this subscriber had not read yet: say so instead of jumping over them.
            if let firstRead = events.first?.seq, firstRead > sub.nextSeq {
                logger.info(
                    "replay found a gap (retention); ending the subscription with reset",
                    metadata: ["connection.id": "\(conn.id)", "next": "\(sub.nextSeq)", "first": "\(firstRead)"])
                onReset(conn, session)
                continue
            }
            for event in events where event.seq >= sub.nextSeq && event.seq <= ackedHead {
                conn.enqueue(OutboundFrame(payload: event.frame, ephemeral: false))
                sub.nextSeq = event.seq + 1
                delivered += 1
            }
            if events.isEmpty || sub.nextSeq > ackedHead {
                turnLive(conn, sub)
            }
        }
        if conn.hasQueued { io.requestWrite(conn) }
    }

    private func turnLive(_ conn: Connection, _ sub: Subscription) {
        sub.catchingUp = false
        conn.catchingUpCount -= 1
        if sub.snapshotPending { onLive?(conn, sub) }
    }

    /// Replayed deliveries since the last call.
    func takeCount() -> Int {
        defer { delivered = 0 }
        return delivered
    }
}
