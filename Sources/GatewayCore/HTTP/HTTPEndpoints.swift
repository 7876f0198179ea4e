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
    /// Plain HTTP on the same listeners: health, readiness, metrics, the operators' session listing and the HTTP
    /// API under `/v1/sessions/` (HTTPAPI.swift). Everything else is 404; methods other than GET are 405.
    func httpRequest(_ wsi: OpaquePointer, input: UnsafeMutableRawPointer?, len: Int) -> Int32 {
        let method = httpMethod(wsi)
        if let method, let apiPath = path(wsi, uri: method.uri), apiPath.hasPrefix("/v1/sessions/") {
            return apiRequest(wsi, path: apiPath, method: method.name)
        }
        guard method?.name == "GET" else {
            if let method, path(wsi, uri: method.uri) == "/v1/sessions" {
                var reply = HTTPReply.error(.badRequest, "method \(method.name) not allowed", status: 405, close: hasRequestBody(wsi))
                reply.headers = [(WSI_TOKEN_HTTP_ALLOW, "GET")]
                return respondAPI(wsi, reply)
            }
            guard hasRequestBody(wsi) else { return respond(wsi, status: 405, body: "method not allowed\n") }
            // A body that will not be read: answer, then close.
            _ = writeHTTP(
                wsi, status: 405, contentType: "text/plain; charset=utf-8", body: Array("method not allowed\n".utf8),
                headers: [(WSI_TOKEN_CONNECTION, "close")])
            return -1
        }
        let path = self.path(wsi) ?? ""
        switch path {
        case "/healthz":
            return respond(wsi, status: 200, body: "ok\n")
        case "/readyz":
            if isReady { return respond(wsi, status: 200, body: "ready\n") }
            let why =
                draining
                ? "draining\n"
                : storageDegraded
                    ? "degraded: storage refuses writes\n"
                    : !store.isAvailable ? "unavailable: storage unreachable\n" : "starting\n"
            return respond(wsi, status: 503, body: why)
        case "/metrics" where config.metricsEnabled:
            flushCounters()
            return respond(wsi, status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render())
        case "/v1/sessions":
            guard lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 else {
                return respondAPI(wsi, .error(.unauthorized, "Bearer token with role operator required"))
            }
            switch authenticateHTTP(wsi) {
            case .refused(let reply):
                return respondAPI(wsi, reply)
            case .verified(let p):
                guard p.role == .operator else { return respondAPI(wsi, .error(.forbidden, "role operator required")) }
                return respond(wsi, status: 200, contentType: "application/json", body: sessionsJSON())
            }
        default:
            if let asset = webAssets[path] {
                return respond(wsi, status: 200, contentType: asset.contentType, body: asset.body)
            }
            if let location = webAssets.redirect(path) {
                if writeHTTP(
                    wsi, status: 301, contentType: "text/plain; charset=utf-8", body: Array("moved\n".utf8),
                    headers: [(WSI_TOKEN_HTTP_LOCATION, location)]) != 0
                {
                    return -1
                }
                return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
            }
            return respond(wsi, status: 404, body: "not found\n")
        }
    }

    /// `GET /v1/sessions`: sessions with subscribers by role (of every node in cluster mode), head seq and last
    /// event time.
    func sessionsJSON() -> [UInt8] {
        var members = localMembers()
        if let others = store.clusterMembers() {
            for (session, counts) in others { members[session] = (members[session] ?? MemberCounts()) + counts }
        }
        var out: [UInt8] = Array(#"{"sessions":["#.utf8)
        var first = true
        for (id, counts) in members.sorted(by: { $0.key < $1.key }) {
            let summary = store.summary(session: id)
            let lastMs = max(table.live[id]?.lastEventMs ?? 0, summary?.lastTimestampMs ?? 0)
            let head = max(summary?.head ?? 0, table.ackedHead(id))
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            JSONText.appendObject(
                into: &out,
                [
                    ("session", .string(id)),
                    (
                        "subscribers",
                        .raw(Array(#"{"user":\#(counts.users),"agent":\#(counts.agents),"operator":\#(counts.operators)}"#.utf8))
                    ),
                    ("head", .int(Int64(head))),
                    ("last_event_ts", lastMs > 0 ? .string(RFC3339.format(milliseconds: lastMs)) : .null),
                ])
        }
        out.append(contentsOf: Array(#"],"epoch":"#.utf8))
        JSONText.appendString(into: &out, store.epoch)
        out.append(contentsOf: Array("}\n".utf8))
        return out
    }

    func respond(_ wsi: OpaquePointer, status: UInt32, body: String) -> Int32 {
        respond(wsi, status: status, contentType: "text/plain; charset=utf-8", body: Array(body.utf8))
    }

    func respond(_ wsi: OpaquePointer, status: UInt32, contentType: String, body: [UInt8]) -> Int32 {
        if writeHTTP(wsi, status: status, contentType: contentType, body: body) != 0 { return -1 }
        return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
    }

    /// Writes headers (the common ones plus `headers`) and body of a complete HTTP response.
    func writeHTTP(
        _ wsi: OpaquePointer, status: UInt32, contentType: String, body: [UInt8], headers: [(lws_token_indexes, String)] = []
    ) -> Int32 {
        let headerRoom = 1024
        let pre = Int(CLWS_PRE)
        let total = pre + headerRoom + body.count
        let buf = UnsafeMutablePointer<UInt8>.allocate(capacity: total)
        defer { buf.deallocate() }
        let start = buf + pre
        var p: UnsafeMutablePointer<UInt8>? = start
        let end = start + headerRoom
        let failed = contentType.withCString { ct -> Bool in
            lws_add_http_common_headers(wsi, status, ct, lws_filepos_t(body.count), &p, end) != 0
        }
        if failed { return -1 }
        for (token, text) in headers {
            var value = Array(text.utf8)
            let rc = value.withUnsafeMutableBufferPointer { v in
                lws_add_http_header_by_token(wsi, token, v.baseAddress, Int32(v.count), &p, end)
            }
            if rc != 0 { return -1 }
        }
        if lws_finalize_write_http_header(wsi, start, &p, end) != 0 { return -1 }
        if body.isEmpty { return 0 }
        let bodyStart = buf + pre + headerRoom
        body.withUnsafeBytes { b in
            if let base = b.baseAddress { UnsafeMutableRawPointer(bodyStart).copyMemory(from: base, byteCount: body.count) }
        }
        return lws_write(wsi, bodyStart, body.count, LWS_WRITE_HTTP_FINAL) < 0 ? -1 : 0
    }
}
