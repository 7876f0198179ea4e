import Glibc
import Prometheus
import CLWS
import GatewayAuth
import GatewayConfig
import GatewayProtocol
import Logging
import TranscriptLog

/// A session as the service thread sees it: who is subscribed. Heads and history live in the log.
final class LiveSession {
    let id: String
    /// Members by connection; the values are the same objects as in each `Connection.subscriptions`.
    var subscribers: [ConnectionID: Subscription] = [:]
    var lastEventMs: Int64 = 0
    init(id: String) { self.id = id }
}

extension GatewayServer {
    var frameLimits: FrameLimits {
        FrameLimits(maxMessageBytes: config.limits.maxMessageBytes)
    }

    /// One complete text message from `conn` (service thread). Never traps on input.
    func handleMessage(_ conn: Connection, _ bytes: UnsafeRawBufferPointer) {
        if conn.echo {
            send(conn, Array(bytes), opcode: conn.rxIsBinary ? 2 : 1)
            return
        }
        let decoded = ClientFrame.decode(bytes, limits: frameLimits)
        switch conn.phase {
        case .closing:
            return
        case .awaitingHello:
            guard case .success(.hello(let hello)) = decoded else {
                close(conn, code: 4001, reason: "expected hello", urgent: true)
                return
            }
            // The token in hello wins over the header one; an empty one counts as absent.
            let helloToken = hello.token.flatMap { $0.isEmpty ? nil : $0 }
            beginAuthentication(conn, token: helloToken ?? conn.headerToken)
        case .authenticating:
            close(conn, code: 4001, reason: "frame before welcome", urgent: true)
        case .active:
            switch decoded {
            case .failure(let e):
                sendError(conn, e.code, e.message, ref: e.ref)
            case .success(let frame):
                switch frame {
                case .hello: sendError(conn, .badRequest, "already authenticated", ref: nil)
                case .join(let j): join(conn, j)
                case .leave(let l): leave(conn, l)
                case .publish(let p): publish(conn, p)
                case .ping(let p): send(conn, Wire.pong(id: p.id), control: true)
                }
            }
        }
    }

    func sendError(_ conn: Connection, _ code: ErrorCode, _ message: String, ref: String?, session: String? = nil) {
        metrics.error(code.rawValue)
        send(conn, Wire.error(code: code, message: message, ref: ref, session: session), control: true)
    }

    // MARK: authentication

    private func beginAuthentication(_ conn: Connection, token: String?) {
        guard let token, !token.isEmpty else {
            metrics.authFailures.increment()
            logger.info("authentication failed", metadata: ["connection.id": "\(conn.id)", "reason": "missing token"])
            close(conn, code: 4001, reason: "missing token", urgent: true)
            return
        }
        conn.headerToken = nil
        // jwt-kit verification of one token costs microseconds (HMAC) to tens of microseconds (RSA/ECDSA):
        // done inline, once per connection, never per message.
        let result: Result<Principal, AuthError>
        do { result = .success(try verifier.verifySync(token)) } catch { result = .failure(error) }
        conn.phase = .authenticating
        finishAuthentication(conn.id, result)
    }

    func finishAuthentication(_ id: ConnectionID, _ result: Result<Principal, AuthError>) {
        guard let conn = connections[id], conn.phase == .authenticating else { return }
        switch result {
        case .failure(let e):
            metrics.authFailures.increment()
            logger.info("authentication failed", metadata: ["connection.id": "\(id)", "reason": "\(e.reason)"])
            close(conn, code: 4001, reason: e.reason, urgent: true)
        case .success(let principal):
            let count = connectionsPerSub[principal.sub] ?? 0
            if count >= config.limits.maxConnectionsPerSub {
                logger.info(
                    "connection limit per subject reached",
                    metadata: ["connection.id": "\(id)", "sub": "\(LogSafe.escape(principal.sub))"])
                close(conn, code: 4008, reason: "too many connections for this subject", urgent: true)
                return
            }
            connectionsPerSub[principal.sub] = count + 1
            conn.countedForSub = true
            conn.principal = principal
            conn.phase = .active
            conn.bucket = rateLimit(for: principal).map {
                TokenBucket(ratePerSecond: $0.ratePerSecond, burst: $0.burst, nowNs: Clock.monotonicNs())
            }
            metrics.connectionsUnauthenticated.decrement()
            roleGauge(principal.role).increment()
            logger.info(
                "client authenticated",
                metadata: [
                    "connection.id": "\(id)", "sub": "\(LogSafe.escape(principal.sub))",
                    "role": "\(principal.role.rawValue)", "tls": "\(conn.listenerTLS)",
                ])
            send(conn, Wire.welcome(conn: id.description, sub: principal.sub, role: principal.role.rawValue), control: true)
        }
    }

    /// The token bucket for a principal: its `tier` if configured, else its role's default (nil = unlimited).
    func rateLimit(for p: Principal) -> GatewayConfiguration.RateLimit? {
        config.rateLimits.limit(tier: p.tier, role: p.role.rawValue)
    }

    // MARK: join / leave

    private func join(_ conn: Connection, _ j: ClientFrame.Join) {
        guard let principal = conn.principal else { return }
        guard principal.mayJoin(session: j.session) else {
            sendError(conn, .forbidden, "this token may not join session \(j.session)", ref: nil, session: j.session)
            return
        }
        if conn.subscriptions[j.session] == nil && conn.subscriptions.count >= config.limits.maxSessionsPerConnection {
            sendError(conn, .forbidden, "too many sessions joined (max \(config.limits.maxSessionsPerConnection))", ref: nil, session: j.session)
            return
        }
        let head = ackedHeads[j.session] ?? 0
        let firstHeld = log.summary(session: j.session)?.firstHeld ?? (head + 1)
        var next = head + 1
        var trimmedFirst: UInt64? = nil
        var reset = false
        if let since = j.since {
            if (j.epoch != nil && j.epoch != log.epoch) || since > head {
                reset = true
                next = min(firstHeld, head + 1)
            } else if since + 1 < firstHeld {
                trimmedFirst = firstHeld
                next = firstHeld
            } else {
                next = since + 1
            }
        }
        let catchingUp = next <= head
        let subscription: Subscription
        if let old = conn.subscriptions[j.session] {
            // Re-join: the same subscription restarts from the new cursor.
            if old.catchingUp { conn.catchingUpCount -= 1 }
            old.nextSeq = next
            old.catchingUp = catchingUp
            subscription = old
        } else {
            subscription = Subscription(session: j.session, connection: conn, nextSeq: next, catchingUp: catchingUp)
            conn.subscriptions[j.session] = subscription
            metrics.joinedSubscriptions.increment()
        }
        if catchingUp { conn.catchingUpCount += 1 }
        let live = sessions[j.session] ?? {
            let s = LiveSession(id: j.session)
            s.lastEventMs = log.summary(session: j.session)?.lastTimestampMs ?? 0
            sessions[j.session] = s
            return s
        }()
        live.subscribers[conn.id] = subscription
        metrics.liveSessions.set(Double(sessions.count))
        send(
            conn,
            Wire.joined(session: j.session, head: head, epoch: log.epoch, trimmedFirst: trimmedFirst, reset: reset),
            control: true)
        if catchingUp { pumpReplay(conn) }
    }

    private func leave(_ conn: Connection, _ l: ClientFrame.Leave) {
        guard let sub = conn.subscriptions.removeValue(forKey: l.session) else {
            sendError(conn, .notFound, "session \(l.session) is not joined", ref: nil, session: l.session)
            return
        }
        if sub.catchingUp { conn.catchingUpCount -= 1 }
        removeSubscriber(conn, session: l.session)
        metrics.joinedSubscriptions.decrement()
        send(conn, Wire.left(session: l.session), control: true)
    }

    func removeSubscriber(_ conn: Connection, session: String) {
        guard let live = sessions[session] else { return }
        live.subscribers.removeValue(forKey: conn.id)
        if live.subscribers.isEmpty {
            sessions.removeValue(forKey: session)
            metrics.liveSessions.set(Double(sessions.count))
        }
    }

    // MARK: publish

    private func publish(_ conn: Connection, _ p: ClientFrame.Publish) {
        guard let principal = conn.principal else { return }
        let decision = principal.mayPublish(session: p.session, kind: p.kind)
        if !decision.isAllowed {
            sendError(conn, .forbidden, decision.reason, ref: p.id, session: p.session)
            return
        }
        if var bucket = conn.bucket {
            let ok = bucket.take(nowNs: Clock.monotonicNs())
            conn.bucket = bucket
            if !ok {
                conn.strikes += 1
                if conn.strikes > config.rateLimits.strikesBeforeClose {
                    close(conn, code: 4008, reason: "rate limit exceeded", urgent: true)
                } else {
                    sendError(conn, .rateLimited, "publish rate limit exceeded", ref: p.id, session: p.session)
                }
                return
            }
            conn.strikes = 0
        }
        let now = StorageEngine.nowMs()
        if p.isEphemeral {
            metrics.eventsInEphemeral.increment()
            let frame = EventEncoding.event(
                session: p.session, seq: nil, id: p.id, kind: p.kind, sub: principal.sub,
                role: principal.role.rawValue, timestampMs: now, data: p.data)
            send(conn, Wire.ack(id: p.id, session: p.session, seq: nil, duplicate: false), control: true)
            metrics.acks.increment()
            fanOutEphemeral(session: p.session, frame: frame)
            return
        }
        switch p.kind {
        case let k where k.hasPrefix("chat."): metrics.eventsInChat.increment()
        case let k where k.hasPrefix("progress"): metrics.eventsInProgress.increment()
        default: metrics.eventsInOther.increment()
        }
        let request = AppendRequest(
            session: p.session, id: p.id, kind: p.kind, sub: principal.sub, role: principal.role.rawValue,
            timestampMs: now, data: p.data)
        if draining || !storage.submit(PendingAppend(connection: conn.id, request: request)) {
            sendError(conn, .unavailable, draining ? "server shutting down" : "storage queue full; retry", ref: p.id, session: p.session)
            return
        }
        inFlight += 1
    }

    /// Results of committed batches, in commit order: ack each publisher, then fan the event out.
    func handleCommitted(_ results: [CommitResult]) {
        inFlight -= results.count
        for r in results {
            let publisher = connections[r.connection]
            switch r.outcome {
            case .failure(let e):
                storageDegraded = true
                if let publisher {
                    sendError(publisher, .unavailable, "storage refused the write: \(e.code); the event was not stored", ref: r.id, session: r.session)
                }
            case .success(.duplicate(let seq)):
                if let publisher {
                    metrics.duplicateAcks.increment()
                    send(publisher, Wire.ack(id: r.id, session: r.session, seq: seq, duplicate: true), control: true)
                }
            case .success(.appended(let seq)):
                ackedHeads[r.session] = seq
                storageDegraded = false
                if let publisher {
                    metrics.acks.increment()
                    send(publisher, Wire.ack(id: r.id, session: r.session, seq: seq, duplicate: false), control: true)
                }
                if let frame = r.frame { fanOutDurable(session: r.session, seq: seq, frame: frame) }
            }
        }
    }

    private func fanOutDurable(session: String, seq: UInt64, frame: [UInt8]) {
        guard let live = sessions[session] else { return }
        live.lastEventMs = StorageEngine.nowMs()
        for sub in live.subscribers.values where !sub.catchingUp {
            if seq == sub.nextSeq {
                sub.nextSeq += 1
                if send(sub.connection, frame) { deliveredDurable += 1 }
            } else if seq > sub.nextSeq {
                // A gap (cannot happen in order, but never deliver out of order): catch up from the log.
                sub.catchingUp = true
                sub.connection.catchingUpCount += 1
                pumpReplay(sub.connection)
            }
        }
    }

    private func fanOutEphemeral(session: String, frame: [UInt8]) {
        guard let live = sessions[session] else { return }
        for sub in live.subscribers.values where !sub.catchingUp {
            if send(sub.connection, frame, ephemeral: true) { deliveredEphemeral += 1 }
        }
    }

    // MARK: replay

    /// Feeds catching-up subscriptions of `conn` from the log while its outbound queue is below half its cap.
    /// Reads are O(events returned) through the log's per-session index; one chunk per subscription per call,
    /// the rest when the socket drains (WRITEABLE calls this again).
    func pumpReplay(_ conn: Connection) {
        let lowWater = config.limits.outboundBufferBytes / 2
        for (session, sub) in conn.subscriptions where sub.catchingUp {
            if conn.queuedBytes >= lowWater || conn.phase != .active { break }
            let ackedHead = ackedHeads[session] ?? 0
            if sub.nextSeq > ackedHead {
                sub.catchingUp = false
                conn.catchingUpCount -= 1
                continue
            }
            let result: ReadResult
            do {
                result = try log.read(
                    session: session, after: sub.nextSeq - 1, limit: config.limits.replayChunkEvents,
                    maxBytes: max(64 * 1024, lowWater / 2))
            } catch {
                logger.error("replay read failed", metadata: ["connection.id": "\(conn.id)", "error": "\(error)"])
                sendError(conn, .unavailable, "transcript read failed: \(error.code)", ref: nil, session: session)
                sub.catchingUp = false
                conn.catchingUpCount -= 1
                continue
            }
            for record in result.records where record.seq >= sub.nextSeq && record.seq <= ackedHead {
                let frame = EventEncoding.record(record)
                conn.enqueue(OutboundFrame(payload: frame, ephemeral: false))
                sub.nextSeq = record.seq + 1
                deliveredReplay += 1
            }
            if result.records.isEmpty || sub.nextSeq > ackedHead {
                sub.catchingUp = false
                conn.catchingUpCount -= 1
            }
        }
        if conn.hasQueued { requestWrite(conn) }
    }
}
