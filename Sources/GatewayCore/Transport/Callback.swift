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
    /// Dispatch of one lws callback (service thread). The callbacks that do the work are timed for the write
    /// pacer's load measure (two clock reads each).
    func handle(
        wsi: OpaquePointer, reason: lws_callback_reasons, user: UnsafeMutableRawPointer?,
        input: UnsafeMutableRawPointer?, len: Int
    ) -> Int32 {
        switch reason {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED, LWS_CALLBACK_RECEIVE, LWS_CALLBACK_SERVER_WRITEABLE, LWS_CALLBACK_HTTP,
            LWS_CALLBACK_HTTP_BODY_COMPLETION:
            io.pacer.enter()
            defer { io.pacer.leave() }
            return dispatch(wsi: wsi, reason: reason, user: user, input: input, len: len)
        default:
            return dispatch(wsi: wsi, reason: reason, user: user, input: input, len: len)
        }
    }

    private func dispatch(
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
            let rc = io.write(conn)
            if rc != 0 { return rc }
            if conn.catchingUpCount > 0 && conn.phase == .active { replay.pump(conn) }
            if conn.hasQueued || conn.pendingClose != nil { io.requestWrite(conn) }
            return 0

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

        // The HTTP API's request bodies and deferred replies (HTTP/HTTPAPI.swift); other HTTP requests have none.
        case LWS_CALLBACK_HTTP_BODY:
            return httpBody(wsi, input: input, len: len)
        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            return httpBodyComplete(wsi)
        case LWS_CALLBACK_HTTP_WRITEABLE:
            return httpWriteable(wsi)
        case LWS_CALLBACK_CLOSED_HTTP:
            httpClosed(wsi)
            return 0

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

    func path(_ wsi: OpaquePointer, uri: lws_token_indexes = WSI_TOKEN_GET_URI) -> String? {
        guard var p = header(wsi, uri) else { return nil }
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
            id: id, wsi: wsi, listenerTLS: listener(of: wsi)?.tls != nil, echo: isEcho, nowNs: MonotonicClock.nowNs(),
            ledger: io.ledger)
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
        conn.released = true
        connections.removeValue(forKey: conn.id)
        table.removeAll(of: conn)
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
        noteReceived(conn, bytes: len)
        let wsi = conn.wsi
        let first = lws_is_first_fragment(wsi) != 0
        let final = lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0
        if first {
            conn.rxIsBinary = lws_frame_is_binary(wsi) != 0
            // The protocol is JSON text; only the diagnostic echo endpoint takes binary messages.
            if conn.rxIsBinary && !conn.echo {
                return io.closeNow(conn, code: 1003, reason: "binary frames are not accepted")
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
                return io.closeNow(conn, code: 1009, reason: "message too big")
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
        if let pc = conn.pendingClose, pc.code != 0, conn.phase == .closing, !conn.hasQueued, ConnectionIO.urgentCloses.contains(pc.code) {
            return io.closeNow(conn, code: pc.code, reason: pc.reason)
        }
        return 0
    }
}
