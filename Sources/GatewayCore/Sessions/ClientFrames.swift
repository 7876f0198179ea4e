import Glibc
import Prometheus
import CLWS
import GatewayAuth
import GatewayConfig
import GatewayProtocol
import Logging
import TranscriptLog

extension GatewayServer {
    var frameLimits: FrameLimits {
        FrameLimits(maxMessageBytes: config.limits.maxMessageBytes)
    }

    /// One complete text message from `conn` (service thread). Never traps on input.
    func handleMessage(_ conn: Connection, _ bytes: UnsafeRawBufferPointer) {
        if conn.echo {
            io.send(conn, Array(bytes), opcode: conn.rxIsBinary ? 2 : 1)
            return
        }
        let decoded = ClientFrame.decode(bytes, limits: frameLimits)
        switch conn.phase {
        case .closing:
            return
        case .awaitingHello:
            guard case .success(.hello(let hello)) = decoded else {
                io.close(conn, code: 4001, reason: "expected hello", urgent: true)
                return
            }
            // The token in hello wins over the header one; an empty one counts as absent.
            let helloToken = hello.token.flatMap { $0.isEmpty ? nil : $0 }
            beginAuthentication(conn, token: helloToken ?? conn.headerToken)
        case .authenticating:
            io.close(conn, code: 4001, reason: "frame before welcome", urgent: true)
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
                case .ping(let p): io.send(conn, Wire.pong(id: p.id), control: true)
                }
            }
        }
    }

    func sendError(_ conn: Connection, _ code: ErrorCode, _ message: String, ref: String?, session: String? = nil) {
        io.sendError(conn, code, message, ref: ref, session: session)
    }

    // MARK: authentication

    private func beginAuthentication(_ conn: Connection, token: String?) {
        guard let token, !token.isEmpty else {
            metrics.authFailures.increment()
            logger.info("authentication failed", metadata: ["connection.id": "\(conn.id)", "reason": "missing token"])
            io.close(conn, code: 4001, reason: "missing token", urgent: true)
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
            io.close(conn, code: 4001, reason: e.reason, urgent: true)
        case .success(let principal):
            let count = connectionsPerSub[principal.sub] ?? 0
            if count >= config.limits.maxConnectionsPerSub {
                logger.info(
                    "connection limit per subject reached",
                    metadata: ["connection.id": "\(id)", "sub": "\(LogSafe.escape(principal.sub))"])
                io.close(conn, code: 4008, reason: "too many connections for this subject", urgent: true)
                return
            }
            connectionsPerSub[principal.sub] = count + 1
            conn.countedForSub = true
            conn.principal = principal
            conn.phase = .active
            conn.bucket = rateLimit(for: principal).map {
                TokenBucket(ratePerSecond: $0.ratePerSecond, burst: $0.burst, nowNs: MonotonicClock.nowNs())
            }
            metrics.connectionsUnauthenticated.decrement()
            roleGauge(principal.role).increment()
            logger.info(
                "client authenticated",
                metadata: [
                    "connection.id": "\(id)", "sub": "\(LogSafe.escape(principal.sub))",
                    "role": "\(principal.role.rawValue)", "tls": "\(conn.listenerTLS)",
                ])
            io.send(conn, Wire.welcome(conn: id.description, sub: principal.sub, role: principal.role.rawValue), control: true)
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
        let head = table.ackedHead(j.session)
        let summary = store.summary(session: j.session)
        let cursor = JoinCursor(
            since: j.since, epoch: j.epoch, head: head, firstHeld: summary?.firstHeld ?? (head + 1), storeEpoch: store.epoch)
        _ = table.subscribe(
            conn, session: j.session, nextSeq: cursor.nextSeq, catchingUp: cursor.catchingUp,
            lastEventMs: summary?.lastTimestampMs ?? 0)
        io.send(
            conn,
            Wire.joined(session: j.session, head: head, epoch: store.epoch, trimmedFirst: cursor.trimmedFirst, reset: cursor.reset),
            control: true)
        if cursor.catchingUp { replay.pump(conn) }
    }

    private func leave(_ conn: Connection, _ l: ClientFrame.Leave) {
        guard table.unsubscribe(conn, session: l.session) else {
            sendError(conn, .notFound, "session \(l.session) is not joined", ref: nil, session: l.session)
            return
        }
        io.send(conn, Wire.left(session: l.session), control: true)
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
            let ok = bucket.take(nowNs: MonotonicClock.nowNs())
            conn.bucket = bucket
            if !ok {
                conn.strikes += 1
                if conn.strikes > config.rateLimits.strikesBeforeClose {
                    io.close(conn, code: 4008, reason: "rate limit exceeded", urgent: true)
                } else {
                    sendError(conn, .rateLimited, "publish rate limit exceeded", ref: p.id, session: p.session)
                }
                return
            }
            conn.strikes = 0
        }
        let now = WallClock.nowMs()
        if p.isEphemeral {
            metrics.eventsInEphemeral.increment()
            let frame = EventFrames.event(
                session: p.session, seq: nil, id: p.id, kind: p.kind, sub: principal.sub,
                role: principal.role.rawValue, timestampMs: now, data: p.data)
            io.send(conn, Wire.ack(id: p.id, session: p.session, seq: nil, duplicate: false), control: true)
            metrics.acks.increment()
            fanOut.ephemeral(session: p.session, frame: frame)
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
        if draining || !store.submit(PendingAppend(connection: conn.id, request: request)) {
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
                    io.send(publisher, Wire.ack(id: r.id, session: r.session, seq: seq, duplicate: true), control: true)
                }
            case .success(.appended(let seq)):
                table.committed(session: r.session, seq: seq)
                storageDegraded = false
                if let publisher {
                    metrics.acks.increment()
                    io.send(publisher, Wire.ack(id: r.id, session: r.session, seq: seq, duplicate: false), control: true)
                }
                if let frame = r.frame { fanOut.durable(session: r.session, seq: seq, frame: frame) }
            }
        }
    }
}
