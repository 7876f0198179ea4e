import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Glibc
import Testing

/// The HTTP API for backend services (protocol v1.1 §6, docs/protocol.md §9.8): a real gateway on an ephemeral
/// loopback port, requests over raw HTTP/1.1, WebSocket subscribers checking what was fanned out. After every
/// refusal the gateway must still serve.
@Suite("HTTP API", .timeLimit(.minutes(3)))
struct HTTPAPITests {
    typealias Response = (status: Int, headers: [String: String], body: [UInt8])

    /// `POST /v1/sessions/{session}/events` with `body` (a JSON object or raw text).
    static func post(_ gw: GatewayUnderTest, _ session: String, token: String?, _ body: Any) throws -> Response {
        let bytes: [UInt8] =
            if let text = body as? String { Array(text.utf8) } else { Array(try JSONSerialization.data(withJSONObject: body)) }
        return try RawHTTP.send(
            host: "127.0.0.1", port: gw.port, method: "POST", path: "/v1/sessions/\(session)/events",
            headers: token.map { [("Authorization", "Bearer \($0)")] } ?? [], body: bytes)
    }

    /// `GET /v1/sessions/{session}/events` with a query string.
    static func get(_ gw: GatewayUnderTest, _ session: String, token: String?, query: String = "") throws -> Response {
        try RawHTTP.get(
            host: "127.0.0.1", port: gw.port, path: "/v1/sessions/\(session)/events" + query,
            headers: token.map { [("Authorization", "Bearer \($0)")] } ?? [])
    }

    static func json(_ r: Response) throws -> [String: Any] {
        try #require(
            try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any],
            "not a JSON object: \(String(decoding: r.body, as: UTF8.self))")
    }

    /// The v1.1 error code of a refusal (`{"error":{"code":C,"message":M}}`).
    static func errorCode(_ r: Response) -> String? {
        let object = try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any]
        return (object?["error"] as? [String: Any])?["code"] as? String
    }

    /// The next `event` frame a peer receives (other frames skipped).
    static func nextEvent(_ peer: Peer) throws -> [String: Any] { try peer.next(type: "event") }

    /// A user joined to `session` over the WebSocket (the caller closes it), its `joined` frame, and an agent token
    /// (sub `backend`, any session) for the API.
    static func subscriber(_ gw: GatewayUnderTest, _ session: String) async throws -> (peer: Peer, joined: [String: Any], agent: String) {
        let user = try await gw.client(.user, sub: "alice", sessions: [session])
        let joined = try user.join(session)
        return (user, joined, try await gw.token(.agent, sub: "backend", sessions: ["*"]))
    }

    static func serving(_ gw: GatewayUnderTest) -> Bool {
        (try? RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/healthz").status) == 200
    }

    /// A durable POST answers its seq once stored, a subscriber receives the same event, and a re-POST of the id is
    /// a duplicate with the same seq (not fanned out again).
    @Test func durablePublishFansOutAndDedupes() async throws {
        try await withGateway { gw in
            let (user, _, agent) = try await Self.subscriber(gw, "h1")
            defer { user.close() }
            let r = try Self.post(gw, "h1", token: agent, ["id": "m1", "kind": "chat.message", "data": ["text": "hi"]])
            #expect(r.status == 200, "\(String(decoding: r.body, as: UTF8.self))")
            #expect(r.headers["content-type"] == "application/json")
            let ack = try Self.json(r)
            #expect(ack.string("id") == "m1" && ack.string("session") == "h1" && ack.int("seq") == 1 && ack["duplicate"] == nil)
            let event = try Self.nextEvent(user)
            #expect(event.string("id") == "m1" && event.int("seq") == 1)
            #expect((event["from"] as? [String: Any])?.string("sub") == "backend")
            #expect((event["data"] as? [String: Any])?.string("text") == "hi")

            let again = try Self.json(try Self.post(gw, "h1", token: agent, ["id": "m1", "kind": "chat.message", "data": 2]))
            #expect(again.int("seq") == 1 && again["duplicate"] as? Bool == true, "\(again)")
            #expect(try user.expectSilence() == nil, "a duplicate is not fanned out")
            #expect(Self.serving(gw))
        }
    }

    /// The dedupe key (session, token sub, id) is shared with the WebSocket: a WebSocket publish then an HTTP
    /// publish of the same id by the same sub is a duplicate; another sub's same id is a new event.
    @Test func webSocketAndHTTPShareTheDedupeKey() async throws {
        try await withGateway { gw in
            let ws = try await gw.client(.agent, sub: "worker-7", sessions: ["*"])
            defer { ws.close() }
            let wsAck = try ws.publish("h2", id: "same-id", kind: "progress", data: ["p": 1])
            let seq = try #require(wsAck.int("seq"))
            let token = try await gw.token(.agent, sub: "worker-7", sessions: ["*"])
            let http = try Self.json(try Self.post(gw, "h2", token: token, ["id": "same-id", "kind": "progress", "data": 1]))
            #expect(http.int("seq") == seq && http["duplicate"] as? Bool == true, "\(http)")
            let other = try await gw.token(.agent, sub: "worker-8", sessions: ["*"])
            let fresh = try Self.json(try Self.post(gw, "h2", token: other, ["id": "same-id", "kind": "progress", "data": 1]))
            #expect(fresh.int("seq") == seq + 1 && fresh["duplicate"] == nil, "\(fresh)")
        }
    }

    /// Ephemeral (by flag or by a `.delta` kind): fanned out, answered without seq, not stored.
    @Test func ephemeralPublishFansOutWithoutSeq() async throws {
        try await withGateway { gw in
            let (user, _, agent) = try await Self.subscriber(gw, "h3")
            defer { user.close() }
            for (id, kind, flag) in [("e1", "chat.message", true), ("e2", "chat.delta", false)] {
                var body: [String: Any] = ["id": id, "kind": kind, "data": ["t": id]]
                if flag { body["ephemeral"] = true }
                let r = try Self.post(gw, "h3", token: agent, body)
                #expect(r.status == 200)
                let ack = try Self.json(r)
                #expect(ack.string("id") == id && ack.string("session") == "h3" && ack["seq"] == nil, "\(ack)")
                let event = try Self.nextEvent(user)
                #expect(event.string("id") == id && event["seq"] == nil, "\(event)")
            }
            let page = try Self.json(try Self.get(gw, "h3", token: agent))
            #expect((page["events"] as? [Any])?.isEmpty == true && page.int("head") == 0, "\(page)")
        }
    }

    /// `GET` pages with `since`/`limit`: oldest first, the same objects as `event` frames, `head`, `first` and the
    /// store's epoch; a limit outside 1-1000 or a bad `since` is 400.
    @Test func readPagesWithSinceAndLimit() async throws {
        try await withGateway { gw in
            let (user, joined, agent) = try await Self.subscriber(gw, "h4")
            defer { user.close() }
            var live: [[String: Any]] = []
            for i in 1...5 {
                let r = try Self.post(gw, "h4", token: agent, ["id": "p\(i)", "kind": "chat.message", "data": ["i": i]])
                #expect(try Self.json(r).int("seq") == i)
                live.append(try Self.nextEvent(user))
            }
            let first = try Self.json(try Self.get(gw, "h4", token: agent, query: "?since=0&limit=2"))
            let events = try #require(first["events"] as? [[String: Any]])
            #expect(events.map { $0.int("seq") } == [1, 2])
            #expect(first.string("session") == "h4" && first.int("head") == 5 && first.int("first") == 1)
            #expect(first.string("epoch") == joined.string("epoch"))
            #expect(NSDictionary(dictionary: events[0]).isEqual(to: live[0]), "GET event == WebSocket event: \(events[0]) vs \(live[0])")
            let next = try Self.json(try Self.get(gw, "h4", token: agent, query: "?since=2&limit=2"))
            #expect((next["events"] as? [[String: Any]])?.map { $0.int("seq") } == [3, 4])
            let rest = try Self.json(try Self.get(gw, "h4", token: agent, query: "?since=4"))
            #expect((rest["events"] as? [[String: Any]])?.map { $0.int("seq") } == [5])
            let none = try Self.json(try Self.get(gw, "h4", token: agent, query: "?since=5"))
            #expect((none["events"] as? [Any])?.isEmpty == true && none.int("head") == 5)
            // The reader's own token: a user may read the session it may join.
            let mine = try await gw.token(.user, sub: "alice", sessions: ["h4"])
            #expect(try Self.get(gw, "h4", token: mine).status == 200)
            for query in ["?limit=0", "?limit=1001", "?limit=x", "?since=-1", "?since=1e3"] {
                let r = try Self.get(gw, "h4", token: agent, query: query)
                #expect(r.status == 400 && Self.errorCode(r) == "bad_request", "\(query): \(r.status)")
            }
            #expect(try Self.get(gw, "h4", token: agent, query: "?limit=1000").status == 200)
            // A long argument does not hide the ones after it.
            let padded = try Self.get(gw, "h4", token: agent, query: "?pad=" + String(repeating: "p", count: 600) + "&limit=0")
            #expect(padded.status == 400)
            #expect(Self.serving(gw))
        }
    }

    /// A page stays within `limits.max_message_bytes` (fewer events than `limit`, at least one even when one event
    /// alone is larger), and paging on with `since` = the last seq reaches the head without a gap.
    @Test func readPagesStayUnderTheMessageLimit() async throws {
        try await withGateway(settings: ["limits.max_message_bytes": "4096"]) { gw in
            let agent = try await gw.token(.agent, sub: "backend", sessions: ["*"])
            for i in 1...12 {
                let text = String(repeating: "x", count: i == 6 ? 3_900 : 900)
                let r = try Self.post(gw, "h9", token: agent, ["id": "big\(i)", "kind": "chat.message", "data": text])
                #expect(r.status == 200, "\(i): \(String(decoding: r.body, as: UTF8.self))")
            }
            var since = 0
            var seen: [Int] = []
            var pages = 0
            while since < 12 && pages < 20 {
                let r = try Self.get(gw, "h9", token: agent, query: "?since=\(since)&limit=1000")
                pages += 1
                let seqs = try #require((try Self.json(r))["events"] as? [[String: Any]]).compactMap { $0.int("seq") }
                #expect(!seqs.isEmpty && seqs.count < 12)
                #expect(r.body.count <= 4096 || seqs.count == 1, "page of \(seqs.count) events is \(r.body.count) bytes")
                seen += seqs
                since = seqs.last ?? 12
            }
            #expect(seen == Array(1...12), "\(seen)")
            #expect(pages >= 4)
        }
    }

    /// 401 without or with a bad token, 403 for a user token on another session (POST and GET), 404 off the
    /// routes, 405 with `Allow` for other methods, 400 for a body that is not a publish; all in the v1.1 error shape.
    @Test func refusalsHaveTheirStatusAndCode() async throws {
        try await withGateway { gw in
            let body: [String: Any] = ["id": "x1", "kind": "chat.message", "data": 1]
            let cases: [(String, Response, Int, String)] = [
                ("no token", try Self.post(gw, "h5", token: nil, body), 401, "unauthorized"),
                ("bad token", try Self.post(gw, "h5", token: "not.a.jwt", body), 401, "unauthorized"),
                ("GET no token", try Self.get(gw, "h5", token: nil), 401, "unauthorized"),
                (
                    "user, other session", try Self.post(gw, "h5", token: try await gw.token(.user, sub: "u", sessions: ["mine"]), body),
                    403, "forbidden"
                ),
                (
                    "GET user, other session", try Self.get(gw, "h5", token: try await gw.token(.user, sub: "u", sessions: ["mine"])),
                    403, "forbidden"
                ),
                (
                    "operator publish", try Self.post(gw, "h5", token: try await gw.token(.operator, sub: "ops"), body), 403,
                    "forbidden"
                ),
            ]
            for (name, r, status, code) in cases {
                #expect(r.status == status && Self.errorCode(r) == code, "\(name): \(r.status) \(String(decoding: r.body, as: UTF8.self))")
            }
            let agent = try await gw.token(.agent, sub: "backend", sessions: ["*"])
            for bad in ["not json", "[1,2]", #"{"id":"a","kind":"chat.message"}"#, #"{"id":"a","data":1}"#, #"{"kind":"k","data":1}"#, #"{"id":"a","kind":"BAD KIND","data":1}"#, #"{"id":"a","kind":"k","data":1,"ephemeral":"yes"}"#] {
                let r = try Self.post(gw, "h5", token: agent, bad)
                #expect(r.status == 400 && Self.errorCode(r) == "bad_request", "\(bad): \(r.status)")
            }
            let badSession = try Self.post(gw, "bad%20session", token: agent, body)
            #expect(badSession.status == 400, "\(badSession.status)")
            let unknown = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/v1/sessions/h5/other", headers: [("Authorization", "Bearer \(agent)")])
            #expect(unknown.status == 404 && Self.errorCode(unknown) == "not_found")
            let put = try RawHTTP.send(host: "127.0.0.1", port: gw.port, method: "PUT", path: "/v1/sessions/h5/events", headers: [("Authorization", "Bearer \(agent)")], body: Array("{}".utf8))
            #expect(put.status == 405 && put.headers["allow"] == "GET, POST", "\(put.status) \(put.headers)")
            let delete = try RawHTTP.send(host: "127.0.0.1", port: gw.port, method: "DELETE", path: "/v1/sessions/h5/events")
            #expect(delete.status == 405)
            // The operators' listing speaks the same error shape.
            let listing = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/v1/sessions")
            #expect(listing.status == 401 && Self.errorCode(listing) == "unauthorized")
            #expect(Self.serving(gw))
        }
    }

    /// A blocking loopback TCP socket with a receive timeout (raw exchanges RawHTTP cannot make: a request that
    /// is never finished, a hang-up before the answer).
    static func connect(_ port: Int, receiveTimeoutMs: Int = 200) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GatewayTestingError.ioFailed("socket") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw GatewayTestingError.ioFailed("connect: errno \(errno)")
        }
        var tv = timeval(tv_sec: 0, tv_usec: receiveTimeoutMs * 1_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Sends `bytes` on a fresh socket and returns what the server sent within `window`, and whether it closed the
    /// connection in that time.
    static func rawExchange(_ gw: GatewayUnderTest, _ head: String, after: [UInt8] = [], window: Duration = .seconds(2)) throws -> (text: String, closed: Bool) {
        let fd = try connect(gw.port)
        defer { close(fd) }
        let bytes = Array(head.utf8) + after
        guard send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw GatewayTestingError.ioFailed("send") }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let deadline = ContinuousClock.now + window
        while ContinuousClock.now < deadline {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n == 0 { return (String(decoding: received, as: UTF8.self), true) }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { continue }
                return (String(decoding: received, as: UTF8.self), true)
            }
            received += chunk[0..<n]
        }
        return (String(decoding: received, as: UTF8.self), false)
    }

    /// A `Content-Length` over `limits.max_message_bytes` is answered 413 at once, from the headers alone (the body
    /// is never sent here), and the connection closes; chunked bodies and a missing length are 411.
    @Test func bodyFramingAndSizeLimits() async throws {
        try await withGateway(settings: ["limits.max_message_bytes": "4096"]) { gw in
            let agent = try await gw.token(.agent, sub: "backend", sessions: ["*"])
            let start = ContinuousClock.now
            let huge = try Self.rawExchange(
                gw,
                "POST /v1/sessions/h6/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent)\r\nContent-Length: 1000000000\r\n\r\n")
            #expect(huge.text.hasPrefix("HTTP/1.1 413"), "\(huge.text)")
            #expect(huge.text.contains(#""code":"too_large""#))
            #expect(huge.closed, "the gateway closes instead of reading a gigabyte")
            #expect(ContinuousClock.now - start < .seconds(2))

            let overByOne = try Self.post(gw, "h6", token: agent, String(repeating: " ", count: 4097))
            #expect(overByOne.status == 413)
            let atLimit = try Self.post(
                gw, "h6", token: agent, #"{"id":"big","kind":"chat.message","data":""# + String(repeating: "a", count: 3000) + #""}"#)
            #expect(atLimit.status == 200)

            let chunked = try Self.rawExchange(
                gw,
                "POST /v1/sessions/h6/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent)\r\nTransfer-Encoding: chunked\r\n\r\n",
                after: Array("5\r\nhello\r\n0\r\n\r\n".utf8))
            #expect(chunked.text.hasPrefix("HTTP/1.1 411"), "\(chunked.text)")
            let noLength = try Self.rawExchange(
                gw, "POST /v1/sessions/h6/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent)\r\n\r\n")
            #expect(noLength.text.hasPrefix("HTTP/1.1 411"), "\(noLength.text)")
            #expect(Self.serving(gw))
        }
    }

    /// HTTP publishes of one sub share a token bucket with the sub's rate and burst: over it, 429 `rate_limited`
    /// with `Retry-After` in whole seconds (≥ 1); another sub is not affected.
    @Test func rateLimitPerSub() async throws {
        let settings = ["rate_limits.roles.user.rate_per_second": "0.5", "rate_limits.roles.user.burst": "3"]
        try await withGateway(settings: settings) { gw in
            let alice = try await gw.token(.user, sub: "alice", sessions: ["h7"])
            let aliceAgain = try await gw.token(.user, sub: "alice", sessions: ["h7"])
            var statuses: [Int] = []
            var limited: Response?
            for i in 0..<5 {
                // Two tokens of one sub: one bucket.
                let r = try Self.post(gw, "h7", token: i % 2 == 0 ? alice : aliceAgain, ["id": "r\(i)", "kind": "chat.message", "data": i])
                statuses.append(r.status)
                if r.status == 429 { limited = r }
            }
            #expect(statuses == [200, 200, 200, 429, 429], "\(statuses)")
            let r = try #require(limited)
            #expect(Self.errorCode(r) == "rate_limited")
            let retry = try #require(r.headers["retry-after"].flatMap { Int($0) }, "\(r.headers)")
            #expect(retry >= 1 && retry <= 2)
            let bob = try await gw.token(.user, sub: "bob", sessions: ["h7"])
            #expect(try Self.post(gw, "h7", token: bob, ["id": "b", "kind": "chat.message", "data": 1]).status == 200)
            #expect(Self.serving(gw))
        }
    }

    /// A client that hangs up before its answer: the event still stands, the gateway keeps serving.
    @Test func hangUpBeforeTheAnswer() async throws {
        try await withGateway { gw in
            let agent = try await gw.token(.agent, sub: "backend", sessions: ["*"])
            for i in 0..<20 {
                let body = #"{"id":"gone-\#(i)","kind":"chat.message","data":\#(i)}"#
                let request = Array(
                    "POST /v1/sessions/h8/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                        .utf8)
                let fd = try Self.connect(gw.port)
                _ = send(fd, request, request.count, Int32(MSG_NOSIGNAL))
                close(fd)
            }
            let deadline = ContinuousClock.now + .seconds(10)
            var head = 0
            while head < 20 && ContinuousClock.now < deadline {
                head = try Self.json(try Self.get(gw, "h8", token: agent)).int("head") ?? 0
                if head < 20 { usleep(50_000) }
            }
            #expect(head == 20)
            #expect(Self.serving(gw))
        }
    }

    /// Cluster mode: a POST on node A is read with GET on node B (one Redis), and fanned out to B's subscriber.
    @Test func clusterPostOnOneNodeGetOnAnother() async throws {
        guard RedisServer.findOnPath("redis-server") != nil else { return }
        try await withRedis { redis in
            try await ClusterTests.withNodes(2, redis: redis) { nodes in
                let (a, b) = (nodes[0], nodes[1])
                let user = try await b.client(.user, sub: "alice", sessions: ["hc"])
                defer { user.close() }
                _ = try user.join("hc")
                let agent = try await a.token(.agent, sub: "backend", sessions: ["*"])
                let r = try Self.post(a, "hc", token: agent, ["id": "c1", "kind": "chat.message", "data": ["n": 1]])
                #expect(r.status == 200, "\(String(decoding: r.body, as: UTF8.self))")
                #expect(try Self.json(r).int("seq") == 1)
                #expect(try Self.nextEvent(user).string("id") == "c1")
                let page = try Self.json(try Self.get(b, "hc", token: agent))
                #expect((page["events"] as? [[String: Any]])?.map { $0.string("id") } == ["c1"], "\(page)")
                #expect(page.int("head") == 1 && page.int("first") == 1)
                let dup = try Self.json(try Self.post(b, "hc", token: agent, ["id": "c1", "kind": "chat.message", "data": 1]))
                #expect(dup.int("seq") == 1 && dup["duplicate"] as? Bool == true, "\(dup)")
            }
        }
    }

    /// `gatewayctl publish` through the HTTP API: the JSON answer on stdout, a duplicate on a re-run with the same
    /// id, and the error code with a non-zero exit on refusal.
    @Test func gatewayctlPublish() async throws {
        try await withGateway { gw in
            let url = "http://127.0.0.1:\(gw.port)"
            let agent = try await gw.token(.agent, sub: "ctl", sessions: ["*"])
            let args = ["publish", "--url", url, "--token", agent, "hctl", "--kind", "chat.message", "--data", #"{"text":"from ctl"}"#]
            let first = try GatewayCtlTests.run(args + ["--id", "g1"])
            #expect(first.status == .exited(0), "\(first.stderr)")
            let ack = try #require(try JSONSerialization.jsonObject(with: Data(first.stdout.utf8)) as? [String: Any])
            #expect(ack.int("seq") == 1 && ack.string("id") == "g1")
            let again = try GatewayCtlTests.run(args + ["--id", "g1"], env: ["GATEWAY_TOKEN": agent])
            #expect(again.stdout.contains(#""duplicate":true"#), "\(again.stdout)")
            let random = try GatewayCtlTests.run(["publish", "--url", gw.url, "hctl", "--kind", "chat.delta", "--data", "1", "--ephemeral"], env: ["GATEWAY_TOKEN": agent])
            #expect(random.status == .exited(0) && !random.stdout.contains("seq") && random.stdout.contains("ctl-"), "\(random.stdout) \(random.stderr)")
            let user = try await gw.token(.user, sub: "u", sessions: ["mine"])
            let forbidden = try GatewayCtlTests.run(["publish", "--url", url, "--token", user, "hctl", "--kind", "chat.message", "--data", "1"])
            #expect(forbidden.status == .exited(3) && forbidden.stderr.contains("forbidden (HTTP 403)"), "\(forbidden.stderr)")
            let badData = try GatewayCtlTests.run(["publish", "--url", url, "--token", agent, "hctl", "--kind", "k", "--data", "{nope"])
            #expect(badData.status == .exited(1))
        }
    }
}
