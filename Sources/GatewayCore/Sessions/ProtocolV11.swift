import GatewayAuth
import GatewayConfig
import GatewayProtocol
import Logging
import Prometheus

/// Protocol v1.1 on the WebSocket: in-band token refresh (§1), presence (§2), history paging (§4) and
/// gateway-initiated leave (§5). Service thread only.
extension GatewayServer {
    // MARK: refresh (§1)

    /// `refresh`: a new token for the live connection, same `sub` and `role`. On success every claim takes effect at
    /// once (sessions, tier, exp); subscriptions the new token does not allow end with `left` `forbidden`. A refused
    /// refresh changes nothing.
    func refresh(_ conn: Connection, _ r: ClientFrame.Refresh) {
        guard let old = conn.principal else { return }
        let new: Principal
        do {
            new = try verifier.verifySync(r.token)
        } catch {
            metrics.authFailures.increment()
            logger.info("token refresh refused", metadata: ["connection.id": "\(conn.id)", "reason": "\(error.reason)"])
            sendError(conn, .unauthorized, "refresh refused: \(error.reason)", ref: nil)
            return
        }
        guard new.sub == old.sub, new.role == old.role else {
            metrics.authFailures.increment()
            logger.info(
                "token refresh refused", metadata: ["connection.id": "\(conn.id)", "reason": "another sub or role"])
            sendError(conn, .unauthorized, "refresh refused: the new token must carry the same sub and role", ref: nil)
            return
        }
        conn.principal = new
        if new.tier != old.tier {
            conn.bucket = rateLimit(for: new).map {
                TokenBucket(ratePerSecond: $0.ratePerSecond, burst: $0.burst, nowNs: MonotonicClock.nowNs())
            }
        }
        metrics.tokenRefreshes.increment()
        io.send(conn, Wire.refreshed(exp: new.expiresAt), control: true)
        for session in conn.subscriptions.keys.sorted() where !new.mayJoin(session: session) {
            endSubscription(conn, session: session, reason: "forbidden")
        }
        // Joins still waiting for the store (cluster mode) are answered the same way.
        for (session, waiting) in pendingJoins where !new.mayJoin(session: session) {
            guard waiting.contains(where: { $0.connection == conn.id }) else { continue }
            let kept = waiting.filter { $0.connection != conn.id }
            pendingJoins[session] = kept.isEmpty ? nil : kept
            conn.pendingJoins -= waiting.count - kept.count
            io.send(conn, Wire.left(session: session, reason: "forbidden"), control: true)
        }
    }

    // MARK: gateway-initiated leave (§5)

    /// Ends `conn`'s subscription to `session` and tells the client why (`forbidden` or `reset`).
    func endSubscription(_ conn: Connection, session: String, reason: String) {
        guard table.unsubscribe(conn, session: session) else { return }
        metrics.gatewayLeaves.increment()
        io.send(conn, Wire.left(session: session, reason: reason), control: true)
    }

    // MARK: presence (§2)

    /// A subject's first connection joined `live` (or its last one left): every other subscription of the session that
    /// asked for presence hears of it; presence of operators goes to operators only.
    func presenceChanged(_ live: LiveSession, _ key: PresenceKey, joined: Bool, by connection: ConnectionID?) {
        guard live.presenceWatchers > 0 else { return }
        // Cluster mode: a subject that still has (or already had) a connection on another node did not come or go.
        if connection != nil && live.isRemote(key) { return }
        let frame = Wire.presence(session: live.id, action: joined ? "join" : "leave", sub: key.sub, role: key.role)
        let aboutOperator = key.role == Role.operator.rawValue
        for sub in live.subscribers.values where sub.presence && sub.connection.id != connection {
            if aboutOperator && sub.connection.principal?.role != .operator { continue }
            io.send(sub.connection, frame, control: true)
        }
    }

    // MARK: history (§4)

    /// `history`: up to `limit` durable events with seq < `before`, oldest first, never past the acked head, the
    /// reply kept under `limits.max_message_bytes` (the newest events are kept; at least one is sent when any is in
    /// range). No subscription is made.
    func history(_ conn: Connection, _ h: ClientFrame.History) {
        guard let principal = conn.principal else { return }
        guard principal.mayJoin(session: h.session) else {
            sendError(conn, .forbidden, "this token may not read session \(h.session)", ref: h.id, session: h.session)
            return
        }
        let head = table.ackedHead(h.session)
        let first = store.summary(session: h.session)?.firstHeld ?? (head + 1)
        let budget = config.limits.maxMessageBytes - 128 - h.session.utf8.count - (h.id?.utf8.count ?? 0)
        let page: [StoredEvent]
        do {
            page = try historyPage(
                session: h.session, before: h.before ?? (head + 1), limit: h.limit, head: head, first: first, budget: budget)
        } catch {
            logger.error("history read failed", metadata: ["connection.id": "\(conn.id)", "error": "\(error)"])
            sendError(conn, .unavailable, "transcript read failed: \(error.code); retry", ref: h.id, session: h.session)
            return
        }
        var out: [UInt8] = []
        out.reserveCapacity(page.reduce(128) { $0 + $1.frame.count + 1 })
        ServerFrame.appendHistory(
            into: &out, session: h.session, id: h.id, events: page.map(\.frame), first: min(first, head + 1), head: head)
        io.send(conn, out, control: true)
    }

    /// The newest durable events of `session` with `first` ≤ seq < `before` and seq ≤ `head`, at most `limit`, oldest
    /// first, their frames within `budget` bytes (at least one event when any is in range). Reads in chunks; memory
    /// stays within the budget plus one chunk.
    func historyPage(
        session: String, before: UInt64, limit: Int, head: UInt64, first: UInt64, budget: Int
    ) throws(StoreError) -> [StoredEvent] {
        let upper = min(before, head + 1)  // exclusive
        guard upper > first, upper > 1 else { return [] }
        let lower = max(first, upper > UInt64(limit) ? upper - UInt64(limit) : 1)  // inclusive
        var kept: [StoredEvent] = []
        var keptBytes = 0
        var start = 0  // index of the oldest kept event in `kept`
        var after = lower - 1
        var rounds = 0
        while after + 1 < upper && rounds < limit {
            rounds += 1
            let chunk = try store.read(
                session: session, after: after, limit: Int(upper - 1 - after), maxBytes: max(64 * 1024, budget / 4))
            guard let last = chunk.last else { break }
            for e in chunk where e.seq < upper {
                kept.append(e)
                keptBytes += e.frame.count + 1
                // Drop the oldest while over the budget, always keeping the newest one.
                while keptBytes > budget && kept.count - start > 1 {
                    keptBytes -= kept[start].frame.count + 1
                    start += 1
                }
            }
            if start > 256 {
                kept.removeFirst(start)
                start = 0
            }
            after = last.seq
        }
        return Array(kept[start...])
    }
}

extension GatewayServer {
    /// The queues of every connection together passed `limits.total_outbound_bytes`: close the connection with the
    /// largest queue 4009 (urgent: its queue is freed at once), then the next largest, until under the budget. Bounded
    /// per call; each close scans the connections once (only while over the budget).
    func shedOverBudget() {
        guard !shedding else { return }
        shedding = true
        defer { shedding = false }
        var rounds = 0
        while io.isOverBudget && rounds < 64 {
            rounds += 1
            var largest: Connection?
            for conn in connections.values where conn.phase != .closing && conn.queuedBytes > (largest?.queuedBytes ?? 0) {
                largest = conn
            }
            guard let largest else { break }
            metrics.outboundBudgetCloses.increment()
            logger.warning(
                "outbound budget exceeded; closing the largest queue",
                metadata: [
                    "connection.id": "\(largest.id)", "queued.bytes": "\(largest.queuedBytes)",
                    "total.bytes": "\(io.ledger.total)", "budget": "\(config.limits.totalOutboundBytes)",
                ])
            io.close(
                largest, code: 4009, reason: "too slow: the gateway's outbound budget is full; reconnect and resume with since",
                urgent: true)
        }
    }
}

extension GatewayServer {
    /// Cluster mode: the other nodes' presence of a session a presence subscriber joins here, read once (then kept up
    /// by pushes and ``refreshRemotePresence(_:)``).
    func loadRemotePresence(_ session: String) {
        guard store.sharesStreams, let live = table.live[session], live.remote == nil else { return }
        live.remote = store.presence(session: session) ?? [:]
    }

    /// Another node's count of a subject's connections in `session` changed: a presence frame here when the subject
    /// came to or left the session as a whole.
    func remotePresence(session: String, node: String, key: PresenceKey, conns: Int) {
        guard let live = table.live[session], live.remote != nil else { return }
        let was = live.isPresent(key)
        live.remote?[node, default: [:]][key] = conns > 0 ? conns : nil
        if live.remote?[node]?.isEmpty == true { live.remote?[node] = nil }
        let now = live.isPresent(key)
        if was != now { presenceChanged(live, key, joined: now, by: nil) }
    }

    /// Cluster mode, housekeeping: re-reads the other nodes' presence of a few watched sessions (round robin, at most
    /// ``presenceRefreshPerTick`` per call), so subjects of a node that died leave and a lost push is healed.
    func refreshRemotePresence(_ now: UInt64) {
        guard store.sharesStreams, now - lastPresenceRefreshNs >= 5_000_000_000 else { return }
        lastPresenceRefreshNs = now
        let watched = table.live.values.filter { $0.presenceWatchers > 0 && $0.remote != nil }
            .sorted { $0.id < $1.id }
        guard !watched.isEmpty else { return }
        let start = presenceRefreshCursor % watched.count
        let count = min(Self.presenceRefreshPerTick, watched.count)
        presenceRefreshCursor = start + count
        for i in 0..<count {
            let live = watched[(start + i) % watched.count]
            guard let fresh = store.presence(session: live.id) else { continue }
            var keys = Set<PresenceKey>()
            for counts in (live.remote ?? [:]).values { keys.formUnion(counts.keys) }
            for counts in fresh.values { keys.formUnion(counts.keys) }
            let before = Dictionary(uniqueKeysWithValues: keys.map { ($0, live.isPresent($0)) })
            live.remote = fresh
            for key in keys.sorted(by: { ($0.sub, $0.role) < ($1.sub, $1.role) }) where before[key] != live.isPresent(key) {
                presenceChanged(live, key, joined: live.isPresent(key), by: nil)
            }
        }
    }
}
