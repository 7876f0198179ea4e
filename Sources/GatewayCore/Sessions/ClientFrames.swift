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
                case .refresh(let r): refresh(conn, r)
                case .history(let h): history(conn, h)
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
            io.send(conn, Wire.welcome(
                    conn: id.description, sub: principal.sub, role: principal.role.rawValue, exp: principal.expiresAt), control: true)
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
        if conn.subscriptions[j.session] == nil
            && conn.subscriptions.count + conn.pendingJoins >= config.limits.maxSessionsPerConnection
        {
            sendError(conn, .forbidden, "too many sessions joined (max \(config.limits.maxSessionsPerConnection))", ref: nil, session: j.session)
            return
        }
        switch store.prepareJoin(session: j.session) {
        case .ready:
            completeJoin(conn, j, summary: store.summary(session: j.session))
        case .pending:
            // Cluster mode: the engine follows the session and reads its state; the join completes when
            // `joinReady` arrives (or fails with `unavailable` after `joinTimeoutNs`).
            conn.pendingJoins += 1
            pendingJoins[j.session, default: []].append(
                PendingJoin(connection: conn.id, join: j, deadlineNs: MonotonicClock.nowNs() + joinTimeoutNs))
        case .unavailable(let e):
            sendError(conn, .unavailable, "storage unavailable: \(e.code); retry", ref: nil, session: j.session)
        }
    }

    /// Answers a join from the session's acked head and the store's summary (first held seq, last event time).
    func completeJoin(_ conn: Connection, _ j: ClientFrame.Join, summary: StoreSummary?) {
        let head = table.ackedHead(j.session)
        let firstHeld = summary?.firstHeld ?? (head + 1)
        let cursor =
            j.last.map { JoinCursor(last: $0, head: head, firstHeld: firstHeld) }
            ?? JoinCursor(since: j.since, epoch: j.epoch, head: head, firstHeld: firstHeld, storeEpoch: store.epoch)
        let sub = table.subscribe(
            conn, session: j.session, nextSeq: cursor.nextSeq, catchingUp: cursor.catchingUp, presence: j.presence,
            lastEventMs: summary?.lastTimestampMs ?? 0)
        if j.presence { loadRemotePresence(j.session) }
        let presence = j.presence ? table.live[j.session]?.presenceList(viewerIsOperator: conn.principal?.role == .operator) : nil
        io.send(
            conn,
            Wire.joined(
                session: j.session, head: head, epoch: store.epoch, trimmedFirst: cursor.trimmedFirst, reset: cursor.reset,
                presence: presence ?? (j.presence ? [] : nil)),
            control: true)
        streamsJoined(conn, sub)
        if cursor.catchingUp { replay.pump(conn) }
    }

    /// The store answered the pending joins of `session` (in the order they came).
    func finishPendingJoins(session: String, summary: StoreSummary?) {
        guard let waiting = pendingJoins.removeValue(forKey: session) else { return }
        for p in waiting {
            guard let conn = connections[p.connection] else { continue }
            conn.pendingJoins -= 1
            guard conn.phase == .active else { continue }
            completeJoin(conn, p.join, summary: summary)
        }
    }

    /// Pending joins of `session` fail with `unavailable` (store unreachable, or no answer in time).
    func failPendingJoins(session: String, reason: String, where keep: (PendingJoin) -> Bool = { _ in false }) {
        guard let waiting = pendingJoins[session] else { return }
        var kept: [PendingJoin] = []
        for p in waiting {
            if keep(p) {
                kept.append(p)
                continue
            }
            guard let conn = connections[p.connection] else { continue }
            conn.pendingJoins -= 1
            if conn.phase == .active {
                sendError(conn, .unavailable, "storage unavailable: \(reason); retry the join", ref: nil, session: session)
            }
        }
        pendingJoins[session] = kept.isEmpty ? nil : kept
    }

    private func leave(_ conn: Connection, _ l: ClientFrame.Leave) {
        var wasPending = false
        if var waiting = pendingJoins[l.session], let i = waiting.firstIndex(where: { $0.connection == conn.id }) {
            waiting.remove(at: i)
            pendingJoins[l.session] = waiting.isEmpty ? nil : waiting
            conn.pendingJoins -= 1
            wasPending = true
        }
        guard table.unsubscribe(conn, session: l.session) || wasPending else {
            sendError(conn, .notFound, "session \(l.session) is not joined", ref: nil, session: l.session)
            return
        }
        io.send(conn, Wire.left(session: l.session), control: true)
    }

    // MARK: publish

    private func publish(_ conn: Connection, _ p: ClientFrame.Publish) {
        guard let principal = conn.principal else { return }
        let outcome = submitPublish(p, principal: principal, origin: conn.id) {
            guard var bucket = conn.bucket else { return true }
            let ok = bucket.take(nowNs: MonotonicClock.nowNs())
            conn.bucket = bucket
            conn.strikes = ok ? 0 : conn.strikes + 1
            return ok
        }
        switch outcome {
        case .submitted:
            break
        case .ephemeral(let frame, let stream):
            io.send(conn, Wire.ack(id: p.id, session: p.session, seq: nil, duplicate: false), control: true)
            metrics.acks.increment()
            ephemeralFanOut(p.session, frame: frame, stream: stream)
        case .rateLimited:
            if conn.strikes > config.rateLimits.strikesBeforeClose {
                io.close(conn, code: 4008, reason: "rate limit exceeded", urgent: true)
            } else {
                sendError(conn, .rateLimited, "publish rate limit exceeded", ref: p.id, session: p.session)
            }
        case .refused(let code, let message):
            sendError(conn, code, message, ref: p.id, session: p.session)
        }
    }

    /// The publish path shared by the WebSocket and the HTTP API (`POST /v1/sessions/{S}/events`): permission,
    /// the rate limit (`takeToken`: the caller's bucket, per connection or per token `sub`), the kind counters, then
    /// either the ephemeral event frame (the caller acks, then fans it out, so the ack precedes the publisher's own
    /// copy) or the durable append submitted to the store under `origin`, whose commit result comes back through
    /// ``handleUpdates(_:)`` (``handleCommitted(_:)`` answers the publisher by that key).
    func submitPublish(
        _ p: ClientFrame.Publish, principal: Principal, origin: ConnectionID, takeToken: () -> Bool
    ) -> PublishOutcome {
        let decision = principal.mayPublish(session: p.session, kind: p.kind)
        if !decision.isAllowed { return .refused(.forbidden, decision.reason) }
        if !takeToken() { return .rateLimited }
        // Token streams (v1.1 §3): reserved ids, delta validation and accumulation, final messages noted.
        let streamDelta: StreamAppend?
        switch streamScreen(p, principal, origin: origin) {
        case .refused(let code, let message): return .refused(code, message)
        case .pass(let delta): streamDelta = delta
        }
        let now = WallClock.nowMs()
        if p.isEphemeral {
            metrics.eventsInEphemeral.increment()
            return .ephemeral(
                EventFrames.event(
                    session: p.session, seq: nil, id: p.id, kind: p.kind, sub: principal.sub,
                    role: principal.role.rawValue, timestampMs: now, data: p.data),
                stream: streamDelta)
        }
        switch p.kind {
        case let k where k.hasPrefix("chat."): metrics.eventsInChat.increment()
        case let k where k.hasPrefix("progress"): metrics.eventsInProgress.increment()
        default: metrics.eventsInOther.increment()
        }
        let request = AppendRequest(
            session: p.session, id: p.id, kind: p.kind, sub: principal.sub, role: principal.role.rawValue,
            timestampMs: now, data: p.data)
        let submitted = draining ? .unavailable : store.submit(PendingAppend(connection: origin, request: request))
        guard submitted == .accepted else {
            let why =
                draining
                ? "server shutting down"
                : submitted == .bytesFull
                    ? "storage queue over its byte budget (limits.storage_inbox_bytes); retry"
                    : store.isAvailable ? "storage queue full; retry" : "storage unavailable; retry"
            return .refused(.unavailable, why)
        }
        inFlight += 1
        return .submitted
    }

    /// The store's updates, in order: results of committed batches (ack each publisher, then fan the event out)
    /// and, in cluster mode, what other nodes committed.
    func handleUpdates(_ updates: [StoreUpdate]) {
        for u in updates {
            switch u {
            case .committed(let r):
                inFlight -= 1
                handleCommitted(r)
            case .remote(let session, let seq, let frame):
                if table.committed(session: session, seq: seq) { fanOut.durable(session: session, seq: seq, frame: frame) }
            case .ephemeral(let session, let frame, let stream):
                fanOut.ephemeral(session: session, frame: frame, stream: stream)
            case .presence(let session, let node, let key, let conns):
                remotePresence(session: session, node: node, key: key, conns: conns)
            case .streamsIdle(let session, let idle):
                finalizeIdle(session: session, idle)
            case .head(let summary):
                learnedHead(summary)
            case .joinReady(let session, let summary):
                if let summary { learnedHead(summary) }
                finishPendingJoins(session: session, summary: summary)
            case .joinFailed(let session, let error):
                failPendingJoins(session: session, reason: error.code)
            case .reset(let reason):
                storeWasReset(reason)
            case .abandoned(let count):
                inFlight -= count
            }
        }
    }

    /// A head read from the store (no frames): subscribers behind it catch up from the store.
    private func learnedHead(_ summary: StoreSummary) {
        if table.committed(session: summary.session, seq: summary.head) {
            fanOut.headAdvanced(session: summary.session, head: summary.head)
        }
    }

    /// One committed (or refused) publish of this node: ack the publisher, then fan the event out.
    private func handleCommitted(_ r: CommitResult) {
        streamCommitted(r)
        let publisher = connections[r.connection]
        // An HTTP API publish is keyed like a connection (HTTP/HTTPAPI.swift); its reply goes out on its own wsi.
        if publisher == nil, let exchange = pendingHTTPPublishes.removeValue(forKey: r.connection) {
            answerHTTPPublish(exchange, r)
        }
        switch r.outcome {
        case .failure(let e):
            if e.degradesReadiness { storageDegraded = true }
            if let publisher {
                sendError(publisher, .unavailable, Self.commitFailureMessage(e), ref: r.id, session: r.session)
            }
        case .success(.duplicate(let seq)):
            if let publisher {
                metrics.duplicateAcks.increment()
                io.send(publisher, Wire.ack(id: r.id, session: r.session, seq: seq, duplicate: true), control: true)
            }
        case .success(.appended(let seq)):
            let moved = table.committed(session: r.session, seq: seq)
            storageDegraded = false
            if let publisher {
                metrics.acks.increment()
                io.send(publisher, Wire.ack(id: r.id, session: r.session, seq: seq, duplicate: false), control: true)
            }
            if moved, let frame = r.frame { fanOut.durable(session: r.session, seq: seq, frame: frame) }
        }
    }

    /// What a publisher is told when the store refused its write.
    static func commitFailureMessage(_ e: StoreError) -> String {
        e.mayBeStored
            ? "storage unavailable: \(e.code); the outcome is unknown: re-publish with the same id"
            : "storage refused the write: \(e.code); the event was not stored"
    }

    /// The store was recreated under this node (cluster mode: Redis lost its data): every client's cursor and
    /// every head this node knows are void. Clients are closed 1012 so that they reconnect and re-join, which
    /// answers `reset`.
    private func storeWasReset(_ reason: String) {
        logger.error("storage was reset under this node; closing clients so they re-join", metadata: ["reason": "\(reason)"])
        table.resetHeads()
        for conn in connections.values where conn.phase == .active {
            io.close(conn, code: 1012, reason: "storage was reset; reconnect", urgent: false)
        }
    }
}

/// How ``GatewayServer/submitPublish(_:principal:origin:takeToken:)`` ended, for the transport to answer.
enum PublishOutcome {
    /// Durable and queued for the store: the answer comes with its commit result.
    case submitted
    /// Ephemeral: the event frame to fan out once the publisher was answered (no `seq`), with the token-stream delta
    /// it carries for the other nodes of a cluster (``GatewayServer/ephemeralFanOut(_:frame:stream:)``).
    case ephemeral([UInt8], stream: StreamAppend?)
    /// Over the caller's rate limit (nothing was stored or fanned out).
    case rateLimited
    /// Refused (`forbidden`, `unavailable`) with its message; nothing was stored or fanned out.
    case refused(ErrorCode, String)
}

/// A `join` waiting for the store (cluster mode).
struct PendingJoin {
    var connection: ConnectionID
    var join: ClientFrame.Join
    var deadlineNs: UInt64
}
