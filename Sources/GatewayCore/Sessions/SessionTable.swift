import GatewayAuth
import GatewayProtocol
import Prometheus
import TranscriptLog

/// A subject as presence counts it (v1.1 §2): a `sub` with its `role`.
struct PresenceKey: Hashable {
    var sub: String
    var role: String
}

/// A session as the service thread sees it: who is subscribed. Heads and history live in the store.
final class LiveSession {
    let id: String
    /// Members by connection; the values are the same objects as in each `Connection.subscriptions`.
    var subscribers: [ConnectionID: Subscription] = [:]
    /// Joined connections per subject (this node's), for presence.
    var subjects: [PresenceKey: Int] = [:]
    /// Subscriptions that asked for presence: presence frames are only built when it is not zero.
    var presenceWatchers = 0
    /// Cluster mode: the other nodes' subjects in this session (node → subject → connections), read from the shared
    /// engine when the first presence subscriber joined here and kept up by its pushes; nil until then.
    var remote: [String: [PresenceKey: Int]]?

    /// Whether `key` has a connection joined to the session on another node.
    func isRemote(_ key: PresenceKey) -> Bool {
        remote?.values.contains { ($0[key] ?? 0) > 0 } ?? false
    }

    /// Whether `key` is in the session anywhere (this node or, in cluster mode, another).
    func isPresent(_ key: PresenceKey) -> Bool { (subjects[key] ?? 0) > 0 || isRemote(key) }
    var lastEventMs: Int64 = 0
    init(id: String) { self.id = id }

    /// The presence list as `viewerIsOperator` may see it: operators are listed to operators only. Sorted by sub,
    /// then role, so the list is stable.
    func presenceList(viewerIsOperator: Bool) -> [PresenceEntry] {
        var all = subjects
        for counts in (remote ?? [:]).values {
            for (key, n) in counts where n > 0 { all[key, default: 0] += n }
        }
        return all.compactMap { key, conns in
            viewerIsOperator || key.role != "operator" ? PresenceEntry(sub: key.sub, role: key.role, conns: conns) : nil
        }.sorted { ($0.sub, $0.role) < ($1.sub, $1.role) }
    }
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
    /// Called when a subject's first connection joined a session (`joined` true; the connection that joined is
    /// passed, it gets no frame for its own join) or its last one left it (v1.1 §2).
    var onPresence: (LiveSession, PresenceKey, _ joined: Bool, ConnectionID) -> Void = { _, _, _, _ in }
    /// Called on every change of a subject's count of connections joined to a session on this node (cluster mode
    /// shares it with the other nodes).
    var onSubjectCount: (LiveSession, PresenceKey, Int) -> Void = { _, _, _ in }

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
        _ conn: Connection, session: String, nextSeq: UInt64, catchingUp: Bool, presence: Bool,
        lastEventMs: @autoclosure () -> Int64
    ) -> Subscription {
        let members = live[session] ?? {
            let s = LiveSession(id: session)
            s.lastEventMs = lastEventMs()
            live[session] = s
            return s
        }()
        let subscription: Subscription
        var isNew = false
        if let old = conn.subscriptions[session] {
            if old.catchingUp { conn.catchingUpCount -= 1 }
            if old.presence { members.presenceWatchers -= 1 }
            old.nextSeq = nextSeq
            old.catchingUp = catchingUp
            subscription = old
        } else {
            subscription = Subscription(session: session, connection: conn, nextSeq: nextSeq, catchingUp: catchingUp)
            conn.subscriptions[session] = subscription
            metrics.joinedSubscriptions.increment()
            isNew = true
        }
        subscription.presence = presence
        if presence { members.presenceWatchers += 1 }
        if catchingUp { conn.catchingUpCount += 1 }
        members.subscribers[conn.id] = subscription
        metrics.liveSessions.set(Double(live.count))
        if isNew, let p = conn.principal {
            let key = PresenceKey(sub: p.sub, role: p.role.rawValue)
            let count = (members.subjects[key] ?? 0) + 1
            members.subjects[key] = count
            onSubjectCount(members, key, count)
            if count == 1 { onPresence(members, key, true, conn.id) }
        }
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
        if let sub = members.subscribers.removeValue(forKey: conn.id), sub.presence { members.presenceWatchers -= 1 }
        if let p = conn.principal {
            let key = PresenceKey(sub: p.sub, role: p.role.rawValue)
            let count = (members.subjects[key] ?? 1) - 1
            members.subjects[key] = count > 0 ? count : nil
            onSubjectCount(members, key, max(0, count))
            if count <= 0 { onPresence(members, key, false, conn.id) }
        }
        if members.subscribers.isEmpty {
            live.removeValue(forKey: session)
            onIdle(session)
            metrics.liveSessions.set(Double(live.count))
        }
    }
}
