import CLWS
import Foundation
import GatewayAuth
import GatewayConfig
import GatewayProtocol
import Logging
import Prometheus
import TranscriptLog

/// One request to the HTTP API (`/v1/sessions/{S}/events`, protocol v1.1 §6) on its wsi, from its headers to its
/// reply. Service thread only; held in ``GatewayServer/httpExchanges`` by wsi until the reply was written or the
/// client hung up (`LWS_CALLBACK_CLOSED_HTTP`).
final class HTTPExchange {
    let wsi: OpaquePointer
    /// The session of the path (already validated unless ``refusal`` is set).
    let session: String
    /// The verified token (nil when ``refusal`` is set).
    let principal: Principal?
    /// The `Content-Length` of the body (1 ... `limits.max_message_bytes`).
    let expected: Int
    /// The body read so far; never more than ``expected``.
    var body: [UInt8] = []
    /// An answer decided from the headers (bad session id, token refused): the body is read and discarded, then
    /// this is sent, so the connection stays usable.
    var refusal: HTTPReply?
    /// The reply waiting for `LWS_CALLBACK_HTTP_WRITEABLE`.
    var reply: HTTPReply?
    /// The key of the publish in ``GatewayServer/pendingHTTPPublishes`` while it waits for the store.
    var pendingKey: ConnectionID?

    init(wsi: OpaquePointer, session: String, principal: Principal?, expected: Int, refusal: HTTPReply?) {
        self.wsi = wsi
        self.session = session
        self.principal = principal
        self.expected = expected
        self.refusal = refusal
    }
}

/// A complete HTTP response of the API: status, JSON body, extra headers, and whether the connection closes after
/// it (a body that will not be read).
struct HTTPReply {
    var status: UInt32
    var body: [UInt8]
    var headers: [(lws_token_indexes, String)] = []
    var close = false
    /// The error code of a refusal (counted in `gateway_errors_total` when sent).
    var code: ErrorCode?

    /// `{"error":{"code":C,"message":M}}` with the status that goes with `code` (v1.1 §6).
    static func error(_ code: ErrorCode, _ message: String, status: UInt32? = nil, close: Bool = false) -> HTTPReply {
        var out: [UInt8] = Array(#"{"error":"#.utf8)
        JSONText.appendObject(into: &out, [("code", .string(code.rawValue)), ("message", .string(message))])
        out.append(contentsOf: Array("}\n".utf8))
        return HTTPReply(status: status ?? Self.status(of: code), body: out, close: close, code: code)
    }

    /// The HTTP status of an error code.
    static func status(of code: ErrorCode) -> UInt32 {
        switch code {
        case .badRequest: return 400
        case .unauthorized: return 401
        case .forbidden: return 403
        case .notFound: return 404
        case .tooLarge: return 413
        case .rateLimited: return 429
        case .unavailable: return 503
        }
    }
}

/// The `Authorization` of an HTTP request: its verified token, or the 401 to answer.
enum HTTPAuthentication {
    case verified(Principal)
    case refused(HTTPReply)
}

/// Token buckets of HTTP API publishes, one per token `sub`, with the rate and burst of the sub's tier or role (the
/// same limit as each of its WebSocket connections). Bounded: when ``capacity`` subs hold a bucket, the idle ones
/// (refilled to their burst, so indistinguishable from a new bucket) are evicted; if none is idle the publish is
/// refused `unavailable`.
struct SubBuckets {
    let capacity: Int
    private(set) var buckets: [String: TokenBucket] = [:]

    init(capacity: Int) { self.capacity = capacity }

    /// Whether there is room for another sub's bucket (evicting idle ones if needed).
    private mutating func makeRoom(nowNs: UInt64) -> Bool {
        if buckets.count < capacity { return true }
        // A bucket refilled to its burst is the same as a new one: nothing is lost by forgetting it.
        buckets = buckets.filter { _, b in b.tokens(at: nowNs) < b.burst }
        return buckets.count < capacity
    }

    /// Takes one token of `sub`'s bucket. Returns nil when allowed, else the seconds until a token is back
    /// (`Retry-After`, at least 1); -1 when no bucket could be made (the table is full of busy buckets).
    mutating func take(sub: String, limit: GatewayConfiguration.RateLimit, nowNs: UInt64) -> Int? {
        var bucket: TokenBucket
        if let b = buckets[sub] {
            bucket = b
        } else {
            guard makeRoom(nowNs: nowNs) else { return -1 }
            bucket = TokenBucket(ratePerSecond: limit.ratePerSecond, burst: limit.burst, nowNs: nowNs)
        }
        let ok = bucket.take(nowNs: nowNs)
        buckets[sub] = bucket
        if ok { return nil }
        let wait = bucket.rate > 0 ? (1 - bucket.tokens) / bucket.rate : 1
        return max(1, Int(wait.rounded(.up)))
    }
}

extension GatewayServer {
    /// HTTP publishes waiting for the store at once; more are refused `unavailable`.
    static let maxPendingHTTPPublishes = 1_024
    /// Token `sub`s with an HTTP publish bucket at once (``SubBuckets``).
    static let maxHTTPRateBuckets = 10_000
    /// Events per `GET /v1/sessions/{S}/events`: default and range of `limit`.
    static let eventsPageDefault = 100
    static let eventsPageRange = 1...1_000

    /// The request method and its URI header (lws files the URI under a token per method).
    func httpMethod(_ wsi: OpaquePointer) -> (name: String, uri: lws_token_indexes)? {
        let methods: [(String, lws_token_indexes)] = [
            ("GET", WSI_TOKEN_GET_URI), ("POST", WSI_TOKEN_POST_URI), ("PUT", WSI_TOKEN_PUT_URI),
            ("PATCH", WSI_TOKEN_PATCH_URI), ("DELETE", WSI_TOKEN_DELETE_URI), ("OPTIONS", WSI_TOKEN_OPTIONS_URI),
            ("HEAD", WSI_TOKEN_HEAD_URI),
        ]
        return methods.first { lws_hdr_total_length(wsi, $0.1) > 0 }
    }

    /// Whether the request announces a body (`Content-Length` > 0 or any `Transfer-Encoding`).
    func hasRequestBody(_ wsi: OpaquePointer) -> Bool {
        if lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 { return true }
        guard let text = header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, max: 32) else { return false }
        return text.trimmingCharacters(in: .whitespaces) != "0"
    }

    /// The token of `Authorization: Bearer`, verified as a WebSocket token is (§2), or the 401 to answer.
    func authenticateHTTP(_ wsi: OpaquePointer) -> HTTPAuthentication {
        let refused: String
        if Int(lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)) > config.auth.maxTokenBytes + 16 {
            refused = "token too large"
        } else if let auth = header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, max: config.auth.maxTokenBytes + 17),
            auth.lowercased().hasPrefix("bearer ")
        {
            do {
                return .verified(try verifier.verifySync(String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces)))
            } catch {
                refused = error.reason
            }
        } else {
            refused = "Authorization: Bearer <token> required"
        }
        metrics.authFailures.increment()
        return .refused(HTTPReply.error(.unauthorized, refused))
    }

    // MARK: routing (LWS_CALLBACK_HTTP)

    /// A request under `/v1/sessions/`: `GET` and `POST` of `/v1/sessions/{S}/events`. A `GET` is answered here; a
    /// `POST` whose headers pass is read (`LWS_CALLBACK_HTTP_BODY`) and answered once read, or once stored.
    func apiRequest(_ wsi: OpaquePointer, path: String, method: String) -> Int32 {
        let withBody = hasRequestBody(wsi)
        let parts = path.dropFirst("/v1/sessions/".count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[1] == "events", !parts[0].isEmpty else {
            return respondAPI(wsi, .error(.notFound, "no such resource", close: withBody))
        }
        let session = String(parts[0])
        guard method == "GET" || method == "POST" else {
            var reply = HTTPReply.error(.badRequest, "method \(method) not allowed", status: 405, close: withBody)
            reply.headers = [(WSI_TOKEN_HTTP_ALLOW, "GET, POST")]
            return respondAPI(wsi, reply)
        }
        let validSession = FieldRules.isValidSessionID(session)
        let badSession = HTTPReply.error(.badRequest, "session must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        if method == "GET" {
            // A GET has no body to read: if one is announced, the connection closes after the answer.
            var reply: HTTPReply
            if !validSession {
                reply = badSession
            } else {
                switch authenticateHTTP(wsi) {
                case .refused(let refused): reply = refused
                case .verified(let principal): reply = readEvents(wsi, session: session, principal: principal)
                }
            }
            reply.close = reply.close || withBody
            return respondAPI(wsi, reply)
        }
        // POST: the body's framing first, so that nothing unbounded is read.
        let limit = config.limits.maxMessageBytes
        if lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 {
            return respondAPI(
                wsi, .error(.badRequest, "Transfer-Encoding is not supported; send a Content-Length", status: 411, close: true))
        }
        guard let lengthText = header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, max: 32)?.trimmingCharacters(in: .whitespaces)
        else {
            return respondAPI(wsi, .error(.badRequest, "Content-Length required", status: 411))
        }
        guard !lengthText.isEmpty, lengthText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            return respondAPI(wsi, .error(.badRequest, "bad Content-Length", close: true))
        }
        guard lengthText.count <= 12, let length = Int(lengthText), length <= limit else {
            return respondAPI(wsi, .error(.tooLarge, "body exceeds \(limit) bytes (limits.max_message_bytes)", close: true))
        }
        guard length > 0 else { return respondAPI(wsi, .error(.badRequest, "body must be a JSON object")) }
        var principal: Principal?
        var refusal: HTTPReply?
        if !validSession {
            refusal = badSession
        } else {
            switch authenticateHTTP(wsi) {
            case .refused(let reply): refusal = reply
            case .verified(let p): principal = p
            }
        }
        httpExchanges[wsi] = HTTPExchange(
            wsi: wsi, session: session, principal: principal, expected: length, refusal: refusal)
        return 0
    }

    /// Writes `reply` now (inside the wsi's own callback) and ends the transaction, or the connection.
    func respondAPI(_ wsi: OpaquePointer, _ reply: HTTPReply) -> Int32 {
        if let code = reply.code { metrics.error(code.rawValue) }
        var headers = reply.headers
        if reply.close { headers.append((WSI_TOKEN_CONNECTION, "close")) }
        if writeHTTP(wsi, status: reply.status, contentType: "application/json", body: reply.body, headers: headers) != 0 {
            return -1
        }
        if reply.close { return -1 }
        return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
    }

    // MARK: POST body (LWS_CALLBACK_HTTP_BODY, _BODY_COMPLETION)

    /// A piece of a request body: kept (bounded by its `Content-Length`, itself within the limit) or discarded.
    func httpBody(_ wsi: OpaquePointer, input: UnsafeMutableRawPointer?, len: Int) -> Int32 {
        guard let x = httpExchanges[wsi], x.reply == nil, x.pendingKey == nil else { return 0 }
        if x.refusal != nil { return 0 }
        guard x.body.count + len <= min(x.expected, config.limits.maxMessageBytes) else {
            httpExchanges[wsi] = nil
            let limit = config.limits.maxMessageBytes
            return respondAPI(wsi, .error(.tooLarge, "body exceeds \(limit) bytes (limits.max_message_bytes)", close: true))
        }
        if let input, len > 0 { x.body.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len)) }
        return 0
    }

    /// The whole body was read: refuse it, publish it (ephemeral: answered at once), or submit it (answered with its
    /// commit result, ``answerHTTPPublish(_:_:)``).
    func httpBodyComplete(_ wsi: OpaquePointer) -> Int32 {
        guard let x = httpExchanges[wsi], x.reply == nil, x.pendingKey == nil else { return 0 }
        if let refusal = x.refusal { return queueReply(x, refusal) }
        guard let principal = x.principal else { return queueReply(x, .error(.unauthorized, "token required")) }
        let decoded = x.body.withUnsafeBytes { ClientFrame.decodePublish(body: $0, session: x.session, limits: frameLimits) }
        x.body = []
        let p: ClientFrame.Publish
        switch decoded {
        case .failure(let e): return queueReply(x, .error(e.code, e.message))
        case .success(let publish): p = publish
        }
        guard pendingHTTPPublishes.count < Self.maxPendingHTTPPublishes else {
            return queueReply(x, .error(.unavailable, "too many HTTP publishes waiting for storage; retry"))
        }
        nextConnection += 1
        let key = ConnectionID(raw: nextConnection)
        var retryAfter = 0
        let outcome = submitPublish(p, principal: principal, origin: key) {
            guard let limit = rateLimit(for: principal), limit.ratePerSecond > 0 else { return true }
            guard let wait = httpBuckets.take(sub: principal.sub, limit: limit, nowNs: MonotonicClock.nowNs()) else {
                return true
            }
            retryAfter = wait
            return false
        }
        switch outcome {
        case .submitted:
            x.pendingKey = key
            pendingHTTPPublishes[key] = x
            return 0
        case .ephemeral(let frame, let stream):
            metrics.acks.increment()
            let reply = queueReply(x, .init(status: 200, body: publishReply(id: p.id, session: p.session, seq: nil)))
            ephemeralFanOut(p.session, frame: frame, stream: stream)
            return reply
        case .rateLimited:
            guard retryAfter > 0 else {
                return queueReply(x, .error(.unavailable, "too many publishers rate-limited at once; retry"))
            }
            var reply = HTTPReply.error(.rateLimited, "publish rate limit exceeded")
            reply.headers = [(WSI_TOKEN_HTTP_RETRY_AFTER, String(retryAfter))]
            return queueReply(x, reply)
        case .refused(let code, let message):
            return queueReply(x, .error(code, message))
        }
    }

    /// The store answered an HTTP publish (``handleCommitted(_:)``): `200` with its seq, or `503`.
    func answerHTTPPublish(_ x: HTTPExchange, _ r: CommitResult) {
        x.pendingKey = nil
        switch r.outcome {
        case .failure(let e):
            _ = queueReply(x, .error(.unavailable, Self.commitFailureMessage(e)))
        case .success(.duplicate(let seq)):
            metrics.duplicateAcks.increment()
            _ = queueReply(x, .init(status: 200, body: publishReply(id: r.id, session: r.session, seq: seq, duplicate: true)))
        case .success(.appended(let seq)):
            metrics.acks.increment()
            _ = queueReply(x, .init(status: 200, body: publishReply(id: r.id, session: r.session, seq: seq)))
        }
    }

    /// `{"id":I,"session":S,"seq":N}` (no `seq` if ephemeral; `"duplicate":true` on a re-publish).
    private func publishReply(id: String, session: String, seq: UInt64?, duplicate: Bool = false) -> [UInt8] {
        var members: [(String, JSONText.Value)] = [("id", .string(id)), ("session", .string(session))]
        if let seq { members.append(("seq", .int(Int64(seq)))) }
        if duplicate { members.append(("duplicate", .raw(Array("true".utf8)))) }
        var out: [UInt8] = []
        JSONText.appendObject(into: &out, members)
        out.append(10)
        return out
    }

    /// Holds `reply` for the exchange's `LWS_CALLBACK_HTTP_WRITEABLE`.
    @discardableResult
    func queueReply(_ x: HTTPExchange, _ reply: HTTPReply) -> Int32 {
        x.reply = reply
        lws_callback_on_writable(x.wsi)
        return 0
    }

    /// `LWS_CALLBACK_HTTP_WRITEABLE`: the held reply goes out and the exchange ends.
    func httpWriteable(_ wsi: OpaquePointer) -> Int32 {
        guard let x = httpExchanges[wsi], let reply = x.reply else { return 0 }
        httpExchanges[wsi] = nil
        return respondAPI(wsi, reply)
    }

    /// `LWS_CALLBACK_CLOSED_HTTP`: the client hung up; a publish it waited for still stands, its answer is dropped.
    func httpClosed(_ wsi: OpaquePointer) {
        guard let x = httpExchanges.removeValue(forKey: wsi) else { return }
        if let key = x.pendingKey { pendingHTTPPublishes[key] = nil }
    }

    // MARK: GET events

    /// `GET /v1/sessions/{S}/events?since=N&limit=L`: durable events with seq > N up to the acked head, oldest first,
    /// each the stored `event` frame, as many as fit in `limits.max_message_bytes` (at least one).
    func readEvents(_ wsi: OpaquePointer, session: String, principal: Principal) -> HTTPReply {
        guard principal.mayJoin(session: session) else {
            return .error(.forbidden, "this token may not read session \(session)")
        }
        var since: UInt64 = 0
        var limit = Self.eventsPageDefault
        for (name, value) in queryArguments(wsi) {
            switch name {
            case "since":
                guard value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = UInt64(value) else {
                    return .error(.badRequest, "since must be a non-negative integer")
                }
                since = n
            case "limit":
                guard value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(value), Self.eventsPageRange.contains(n)
                else {
                    return .error(.badRequest, "limit must be an integer 1-1000")
                }
                limit = n
            default:
                continue
            }
        }
        let summary = store.summary(session: session)
        var head = table.ackedHead(session)
        // A shared engine's head is what any node committed; this node's acked head only covers what it saw.
        if config.storageEngine == .redis { head = max(head, summary?.head ?? 0) }
        let first = min(summary?.firstHeld ?? (head + 1), head + 1)
        var out: [UInt8] = Array(#"{"session":"#.utf8)
        JSONText.appendString(into: &out, session)
        out.append(contentsOf: Array(#","events":["#.utf8))
        var tail: [UInt8] = Array(#"],"head":\#(head),"first":\#(first),"epoch":"#.utf8)
        JSONText.appendString(into: &tail, store.epoch)
        tail.append(contentsOf: Array("}\n".utf8))
        if since < head {
            let budget = config.limits.maxMessageBytes - out.count - tail.count
            let events: [StoredEvent]
            do {
                events = try store.read(session: session, after: since, limit: limit, maxBytes: max(1, budget))
            } catch {
                logger.error("HTTP events read failed", metadata: ["error": "\(error)"])
                return .error(.unavailable, "transcript read failed: \(error.code); retry")
            }
            var used = 0
            var count = 0
            for event in events where event.seq > since && event.seq <= head && count < limit {
                let cost = event.frame.count + (count > 0 ? 1 : 0)
                if count > 0 && used + cost > budget { break }
                if count > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: event.frame)
                used += cost
                count += 1
            }
        }
        out.append(contentsOf: tail)
        return HTTPReply(status: 200, body: out)
    }

    /// The query arguments (`name=value`, as lws decoded them), at most 16 (each bounded by lws's header space).
    private func queryArguments(_ wsi: OpaquePointer) -> [(String, String)] {
        var out: [(String, String)] = []
        for i in 0..<16 {
            let length = Int(lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, Int32(i)))
            if length <= 0 { break }
            var buf = [CChar](repeating: 0, count: length + 1)
            let n = lws_hdr_copy_fragment(wsi, &buf, Int32(buf.count), WSI_TOKEN_HTTP_URI_ARGS, Int32(i))
            if n < 0 { break }
            let text = String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard let eq = text.firstIndex(of: "=") else {
                out.append((text, ""))
                continue
            }
            out.append((String(text[..<eq]), String(text[text.index(after: eq)...])))
        }
        return out
    }
}
