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
            let events: [StoredEvent]
            do {
                events = try store.read(
                    session: session, after: sub.nextSeq - 1, limit: chunkEvents, maxBytes: max(64 * 1024, lowWater / 2))
            } catch {
                logger.error("replay read failed", metadata: ["connection.id": "\(conn.id)", "error": "\(error)"])
                io.sendError(conn, .unavailable, "transcript read failed: \(error.code)", ref: nil, session: session)
                turnLive(conn, sub)
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
