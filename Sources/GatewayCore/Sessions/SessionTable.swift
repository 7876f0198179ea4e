import Prometheus
import TranscriptLog

/// A session as the service thread sees it: who is subscribed. Heads and history live in the store.
final class LiveSession {
    let id: String
    /// Members by connection; the values are the same objects as in each `Connection.subscriptions`.
    var subscribers: [ConnectionID: Subscription] = [:]
    var lastEventMs: Int64 = 0
    init(id: String) { self.id = id }
}

/// Session membership and the acked heads: which connections are subscribed to which session, and up to
/// which seq each session's commits have been acked and fanned out. Service thread only.
final class SessionTable {
    /// Sessions with at least one subscriber.
    private(set) var live: [String: LiveSession] = [:]
    /// Per session, the highest seq whose commit result the service thread has processed (acked and fanned
    /// out). Replay never reads past it, so no client sees a durable event before its publisher's ack went out.
    /// Seeded from the store at start; every later commit (and, in cluster mode, every head learned from the shared
    /// store) passes through ``committed(session:seq:)``, which only lets it grow.
    private var ackedHeads: [String: UInt64] = [:]
    private let metrics: GatewayMetrics
    /// Called when a session's last local member left (the store may stop following it).
    var onIdle: (String) -> Void = { _ in }

    init(seedHeads: [StoreSummary], metrics: GatewayMetrics) {
        self.metrics = metrics
        for s in seedHeads { ackedHeads[s.session] = s.head }
    }

    /// The acked head of `session` (0 before its first event).
    func ackedHead(_ session: String) -> UInt64 { ackedHeads[session] ?? 0 }

    /// Records that the commit of `seq` in `session` was acked (or, in cluster mode, seen committed by another
    /// node). Heads only grow: a shared store reports commits of several nodes in an order of its own. Returns
    /// whether the head moved.
    @discardableResult
    func committed(session: String, seq: UInt64) -> Bool {
        let old = ackedHeads[session] ?? 0
        guard seq > old else { return false }
        ackedHeads[session] = seq
        return true
    }

    /// Forgets every head (the store was recreated under this node).
    func resetHeads() { ackedHeads.removeAll() }

    /// Subscribes `conn` to `session` from the cursor `nextSeq`; a re-join restarts the existing subscription.
    /// `lastEventMs` seeds a session that had no subscriber. Returns the subscription.
    func subscribe(
        _ conn: Connection, session: String, nextSeq: UInt64, catchingUp: Bool, lastEventMs: @autoclosure () -> Int64
    ) -> Subscription {
        let subscription: Subscription
        if let old = conn.subscriptions[session] {
            if old.catchingUp { conn.catchingUpCount -= 1 }
            old.nextSeq = nextSeq
            old.catchingUp = catchingUp
            subscription = old
        } else {
            subscription = Subscription(session: session, connection: conn, nextSeq: nextSeq, catchingUp: catchingUp)
            conn.subscriptions[session] = subscription
            metrics.joinedSubscriptions.increment()
        }
        if catchingUp { conn.catchingUpCount += 1 }
        let members = live[session] ?? {
            let s = LiveSession(id: session)
            s.lastEventMs = lastEventMs()
            live[session] = s
            return s
        }()
        members.subscribers[conn.id] = subscription
        metrics.liveSessions.set(Double(live.count))
        return subscription
    }

    /// Removes `conn`'s subscription to `session`; false if it had none.
    func unsubscribe(_ conn: Connection, session: String) -> Bool {
        guard let sub = conn.subscriptions.removeValue(forKey: session) else { return false }
        if sub.catchingUp { conn.catchingUpCount -= 1 }
        removeMember(conn, session: session)
        metrics.joinedSubscriptions.decrement()
        return true
    }

    /// Removes every subscription of a closed connection.
    func removeAll(of conn: Connection) {
        for session in conn.subscriptions.keys { removeMember(conn, session: session) }
        metrics.joinedSubscriptions.decrement(by: Double(conn.subscriptions.count))
        conn.subscriptions.removeAll()
    }

    private func removeMember(_ conn: Connection, session: String) {
        guard let members = live[session] else { return }
        members.subscribers.removeValue(forKey: conn.id)
        if members.subscribers.isEmpty {
            live.removeValue(forKey: session)
            onIdle(session)
            metrics.liveSessions.set(Double(live.count))
        }
    }
}
