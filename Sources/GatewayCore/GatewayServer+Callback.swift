import TranscriptLog
import Glibc
import Prometheus
import GatewayConfig
import CLWS
import Foundation
import GatewayAuth
import GatewayProtocol
import Logging

extension GatewayServer {
    /// Dispatch of one lws callback (service thread).
    func handle(
        wsi: OpaquePointer, reason: lws_callback_reasons, user: UnsafeMutableRawPointer?,
        input: UnsafeMutableRawPointer?, len: Int
    ) -> Int32 {
        switch reason {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            onWake()
            return 0

        case LWS_CALLBACK_RAW_RX_FILE:
            // A listen socket is readable: accept and adopt into its vhost.
            guard let l = listeners.first(where: { $0.fd == lws_get_socket_fd(wsi) }), let vhost = l.vhost else { return 0 }
            l.acceptPending(max: 128) { fd in
                if draining {
                    _ = Glibc.close(fd)
                    return
                }
                if lws_adopt_socket_vhost(vhost, fd) == nil {
                    logger.warning("adopting an accepted socket failed")
                }
            }
            return 0
        case LWS_CALLBACK_RAW_ADOPT_FILE, LWS_CALLBACK_RAW_CLOSE_FILE, LWS_CALLBACK_RAW_WRITEABLE_FILE:
            return 0

        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            // Never touch `input` here (CVE-2025-11677): read the header ourselves.
            return confirmUpgrade(wsi)

        case LWS_CALLBACK_ESTABLISHED:
            return established(wsi, user: user)

        case LWS_CALLBACK_RECEIVE:
            guard let conn = connection(user) else { return -1 }
            return receive(conn, input: input, len: len)

        case LWS_CALLBACK_SERVER_WRITEABLE:
            guard let conn = connection(user) else { return -1 }
            return writeable(conn)

        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            if let conn = connection(user) { conn.phase = .closing }
            return 0

        case LWS_CALLBACK_CLOSED:
            if let user, let p = user.load(as: UnsafeMutableRawPointer?.self) {
                let conn = Unmanaged<Connection>.fromOpaque(p).takeRetainedValue()
                user.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
                closed(conn)
            }
            return 0

        case LWS_CALLBACK_HTTP:
            return httpRequest(wsi, input: input, len: len)

        case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
            // Called once per TLS vhost while it is created; `user` is its SSL_CTX.
            if let user { CLWS_ssl_ctx_tune(OpaquePointer(user)) }
            return 0

        default:
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        }
    }

    func connection(_ user: UnsafeMutableRawPointer?) -> Connection? {
        guard let user, let p = user.load(as: UnsafeMutableRawPointer?.self) else { return nil }
        return Unmanaged<Connection>.fromOpaque(p).takeUnretainedValue()
    }

    // MARK: handshake

    func header(_ wsi: OpaquePointer, _ token: lws_token_indexes, max: Int = 8192) -> String? {
        let total = Int(lws_hdr_total_length(wsi, token))
        guard total > 0, total < max else { return nil }
        var buf = [CChar](repeating: 0, count: total + 1)
        let n = lws_hdr_copy(wsi, &buf, Int32(buf.count), token)
        guard n >= 0 else { return nil }
        return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func path(_ wsi: OpaquePointer) -> String? {
        guard var p = header(wsi, WSI_TOKEN_GET_URI) else { return nil }
        if let q = p.firstIndex(of: "?") { p = String(p[..<q]) }
        return p
    }

    private func confirmUpgrade(_ wsi: OpaquePointer) -> Int32 {
        guard let upgrade = header(wsi, WSI_TOKEN_UPGRADE, max: 64), upgrade.lowercased() == "websocket" else {
            // h2c and anything else: hang up (HTTP/1.1 + WebSocket only).
            return -1
        }
        let p = path(wsi)
        let isEcho = config.diagEcho && p == "/v1/echo"
        guard p == "/v1/ws" || isEcho else {
            return refuseHTTP(wsi, status: 404, body: "not found\n")
        }
        if draining {
            return refuseHTTP(wsi, status: 503, body: "shutting down\n")
        }
        if !config.origins.allowList.isEmpty, !isEcho {
            // Browsers always send Origin; non-browser clients (agents, CLI) may omit it.
            if let origin = header(wsi, WSI_TOKEN_ORIGIN, max: 1024), !config.origins.allowList.contains(origin) {
                logger.info("origin refused", metadata: ["origin": "\(LogSafe.escape(origin))"])
                return refuseHTTP(wsi, status: 403, body: "origin not allowed\n")
            }
        }
        if Int(lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)) > config.auth.maxTokenBytes + 16 {
            return refuseHTTP(wsi, status: 401, body: "token too large\n")
        }
        if let auth = header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, max: config.auth.maxTokenBytes + 17),
            !auth.lowercased().hasPrefix("bearer ")
        {
            return refuseHTTP(wsi, status: 401, body: "authorization must be a Bearer token\n")
        }
        return 0
    }

    /// Sends a small HTTP error reply during the upgrade; returns 1 so lws completes the transaction.
    private func refuseHTTP(_ wsi: OpaquePointer, status: UInt32, body: String) -> Int32 {
        if writeHTTP(wsi, status: status, contentType: "text/plain; charset=utf-8", body: Array(body.utf8)) != 0 {
            return -1
        }
        return 1
    }

    private func established(_ wsi: OpaquePointer, user: UnsafeMutableRawPointer?) -> Int32 {
        guard let user else { return -1 }
        nextConnection += 1
        let id = ConnectionID(raw: nextConnection)
        let isEcho = config.diagEcho && path(wsi) == "/v1/echo"
        let conn = Connection(
            id: id, wsi: wsi, listenerTLS: listener(of: wsi)?.tls != nil, echo: isEcho, nowNs: Clock.monotonicNs())
        if isEcho {
            conn.phase = .active
        } else if let auth = header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, max: config.auth.maxTokenBytes + 17) {
            let token = auth.dropFirst("bearer ".count).trimmingCharacters(in: .whitespaces)
            conn.headerToken = token.isEmpty ? nil : token
        }
        user.storeBytes(of: Unmanaged.passRetained(conn).toOpaque(), as: UnsafeMutableRawPointer?.self)
        connections[id] = conn
        metrics.connectionsUnauthenticated.increment()
        logger.debug("connection opened", metadata: ["connection.id": "\(id)", "tls": "\(conn.listenerTLS)"])
        return 0
    }

    private func closed(_ conn: Connection) {
        connections.removeValue(forKey: conn.id)
        for session in conn.subscriptions.keys { removeSubscriber(conn, session: session) }
        metrics.joinedSubscriptions.decrement(by: Double(conn.subscriptions.count))
        conn.subscriptions.removeAll()
        if let p = conn.principal {
            roleGauge(p.role).decrement()
            if conn.countedForSub {
                let left = (connectionsPerSub[p.sub] ?? 1) - 1
                connectionsPerSub[p.sub] = left > 0 ? left : nil
            }
        } else {
            metrics.connectionsUnauthenticated.decrement()
        }
        conn.dropQueue()
        logger.info(
            "connection closed",
            metadata: [
                "connection.id": "\(conn.id)", "close.code": "\(conn.pendingClose.map { String($0.code) } ?? "peer")",
                "sub": "\(conn.principal.map { LogSafe.escape($0.sub) } ?? "-")",
            ])
    }

    func roleGauge(_ role: Role) -> Gauge {
        switch role {
        case .user: return metrics.connectionsUser
        case .agent: return metrics.connectionsAgent
        case .operator: return metrics.connectionsOperator
        }
    }

    // MARK: receive

    private func receive(_ conn: Connection, input: UnsafeMutableRawPointer?, len: Int) -> Int32 {
        if conn.phase == .closing { return 0 }
        let wsi = conn.wsi
        let first = lws_is_first_fragment(wsi) != 0
        let final = lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0
        if first {
            conn.rxIsBinary = lws_frame_is_binary(wsi) != 0
            // The protocol is JSON text; only the diagnostic echo endpoint takes binary messages.
            if conn.rxIsBinary && !conn.echo {
                return closeNow(conn, code: 1003, reason: "binary frames are not accepted")
            }
        }
        if first {
            conn.rx.removeAll(keepingCapacity: conn.rx.capacity <= 64 * 1024)
            conn.rxTooBig = false
            conn.rxDiscarded = 0
        }
        if conn.rxTooBig || conn.rx.count + len > config.limits.maxMessageBytes {
            // Too big: free what was buffered and discard the rest of this message, then close 1009 when it
            // ends. Closing mid-message would leave unread bytes in our socket, the kernel would answer with a
            // RST, and the client would lose the close frame. A message that never ends is cut off after
            // 4× the limit.
            conn.rxTooBig = true
            conn.rx = []
            conn.rxDiscarded += len
            if final || conn.rxDiscarded > 4 * config.limits.maxMessageBytes {
                return closeNow(conn, code: 1009, reason: "message too big")
            }
            return 0
        }
        if first && final {
            // The common case: a whole message in one callback; no copy.
            let buf = UnsafeRawBufferPointer(start: input, count: input == nil ? 0 : len)
            handleMessage(conn, buf)
        } else {
            if let input, len > 0 { conn.rx.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len)) }
            if final {
                let message = conn.rx
                conn.rx = []
                message.withUnsafeBytes { handleMessage(conn, $0) }
            }
        }
        if let pc = conn.pendingClose, pc.code != 0, conn.phase == .closing, !conn.hasQueued, Self.urgentCloses.contains(pc.code) {
            return closeNow(conn, code: pc.code, reason: pc.reason)
        }
        return 0
    }

    /// Close codes after which nothing queued is worth sending.
    static let urgentCloses: Set<UInt16> = [1003, 1009, 4000, 4001, 4008, 4009]

    /// Closes `conn` from inside its own callback: sets the close frame and tells lws to close.
    func closeNow(_ conn: Connection, code: UInt16, reason: String) -> Int32 {
        conn.phase = .closing
        conn.pendingClose = (code, reason)
        metrics.closed(code)
        var bytes = Array(reason.utf8.prefix(120))
        bytes.withUnsafeMutableBufferPointer { b in
            lws_close_reason(conn.wsi, lws_close_status(rawValue: UInt32(code)), b.baseAddress, b.count)
        }
        return -1
    }

    /// Requests a close of `conn` from anywhere on the service thread. With `urgent`, queued frames are
    /// dropped; otherwise they are flushed first.
    func close(_ conn: Connection, code: UInt16, reason: String, urgent: Bool) {
        if conn.phase == .closing && conn.pendingClose != nil { return }
        conn.phase = .closing
        conn.pendingClose = (code, reason)
        if urgent { conn.dropQueue() }
        requestWrite(conn)
        // The close frame goes out in WRITEABLE; a peer that never drains its socket would never get there,
        // so lws drops the connection after a grace period (bounded memory and file descriptors).
        lws_set_timeout(conn.wsi, PENDING_TIMEOUT_USER_OK, 5)
    }

    func requestWrite(_ conn: Connection) {
        if !conn.writeRequested {
            conn.writeRequested = true
            lws_callback_on_writable(conn.wsi)
        }
    }

    // MARK: write

    /// SERVER_WRITEABLE: coalesce everything queued (up to 256 KiB) into one buffer, each frame with its own
    /// WebSocket header, and hand it to lws in one `lws_write(LWS_WRITE_HTTP)  // == LWS_WRITE_RAW (a C macro): bytes go out as they are`: one send() per loop turn.
    private func writeable(_ conn: Connection) -> Int32 {
        conn.writeRequested = false
        if let pc = conn.pendingClose, !conn.hasQueued {
            return closeNow(conn, code: pc.code, reason: pc.reason)
        }
        let limit = 256 * 1024
        var off = pre
        var frames = 0
        while conn.queueHead < conn.queue.count {
            let payloadCount = conn.queue[conn.queueHead].payload.count
            let need = 10 + payloadCount
            if off > pre && off - pre + need > limit { break }
            ensureScratch(off + need)
            let frame = conn.queue[conn.queueHead]
            off += CLWS_frame_header(
                scratch.advanced(by: off).assumingMemoryBound(to: UInt8.self), UInt32(frame.opcode), UInt64(payloadCount))
            frame.payload.withUnsafeBytes { p in
                if let base = p.baseAddress { (scratch + off).copyMemory(from: base, byteCount: payloadCount) }
            }
            off += payloadCount
            conn.queueHead += 1
            conn.queuedBytes -= payloadCount
            frames += 1
        }
        conn.compactQueue()
        if off > pre {
            let n = lws_write(conn.wsi, scratch.advanced(by: pre).assumingMemoryBound(to: UInt8.self), off - pre, LWS_WRITE_HTTP)  // == LWS_WRITE_RAW (a C macro): bytes go out as they are
            if n < 0 { return -1 }
        }
        if conn.catchingUpCount > 0 && conn.phase == .active { pumpReplay(conn) }
        if conn.hasQueued || conn.pendingClose != nil { requestWrite(conn) }
        return 0
    }

    private func ensureScratch(_ bytes: Int) {
        guard bytes > scratchCapacity else { return }
        let newCapacity = max(bytes, scratchCapacity * 2)
        let p = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        p.copyMemory(from: scratch, byteCount: scratchCapacity)
        scratch.deallocate()
        scratch = p
        scratchCapacity = newCapacity
    }

    /// Queues one frame for `conn`, enforcing the outbound cap: a durable frame that does not fit closes the
    /// connection with 4009 (it resumes with `since`); an ephemeral one evicts older ephemerals or is dropped.
    /// Returns false if the frame was not queued.
    @discardableResult
    func send(_ conn: Connection, _ payload: [UInt8], ephemeral: Bool = false, control: Bool = false, opcode: UInt8 = 1) -> Bool {
        if conn.phase == .closing { return false }
        // Replies (acks, errors, pongs) may use twice the cap, so a burst of acks does not cut off a client
        // that reads; beyond that even replies count as falling behind (a ping flood without reading).
        let cap = config.limits.outboundBufferBytes
        let limit = control ? 2 * cap : cap
        if conn.queuedBytes + payload.count > limit {
            if ephemeral {
                if !conn.evictEphemeral(toFit: payload.count, cap: cap) {
                    metrics.ephemeralDropped.increment()
                    return false
                }
            } else if !conn.evictEphemeral(toFit: payload.count, cap: limit) {
                // Durable frames never wait behind deltas: queued ephemeral frames go first, then 4009.
                metrics.slowConsumerCloses.increment()
                logger.info(
                    "slow consumer closed",
                    metadata: ["connection.id": "\(conn.id)", "queued.bytes": "\(conn.queuedBytes)"])
                close(conn, code: 4009, reason: "too slow: outbound buffer full; reconnect and resume with since", urgent: true)
                return false
            }
        }
        conn.enqueue(OutboundFrame(payload: payload, ephemeral: ephemeral, opcode: opcode))
        requestWrite(conn)
        return true
    }
}
