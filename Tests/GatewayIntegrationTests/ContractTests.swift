import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Testing

/// Every row of protocol-v1.md against a real gateway on loopback.
@Suite("Gateway v1 contract", .timeLimit(.minutes(2)))
struct ContractTests {
    @Test func helloWelcomeAndHeaderToken() async throws {
        try await withGateway { gw in
            // Token in hello.
            let a = try await gw.client(.user, sub: "alice", sessions: ["s1"])
            a.close()
            // Token in the Authorization header, then a hello without token.
            let token = try await gw.token(.agent, sub: "worker-1", sessions: ["*"])
            let ws = try WebSocketClient.connect(url: gw.url, headers: [("Authorization", "Bearer \(token)")])
            let b = Peer(ws)
            try b.send(["type": "hello"])
            let welcome = try b.next()
            #expect(welcome.string("type") == "welcome")
            #expect(welcome.string("sub") == "worker-1")
            #expect(welcome.string("role") == "agent")
            #expect((welcome.string("conn") ?? "").isEmpty == false)
            b.close()
        }
    }

    @Test func authFailuresClose4001() async throws {
        try await withGateway(settings: ["limits.auth_timeout_seconds": "1"]) { gw in
            // No token at all.
            var p = Peer(try WebSocketClient.connect(url: gw.url))
            try p.send(["type": "hello"])
            #expect(try p.waitClose() == 4001)
            // Garbage token.
            p = Peer(try WebSocketClient.connect(url: gw.url))
            try p.send(["type": "hello", "token": "not.a.jwt"])
            #expect(try p.waitClose() == 4001)
            // Expired token.
            let expired = try await gw.token(.user, sub: "u", sessions: ["s"], ttl: -3600)
            p = Peer(try WebSocketClient.connect(url: gw.url))
            try p.send(["type": "hello", "token": expired])
            #expect(try p.waitClose() == 4001)
            // Wrong secret.
            let forged = try await TokenMinter.hs256(secret: "another-secret-of-enough-length-123456", sub: "u", role: .user, sessions: ["s"], tier: nil, ttlSeconds: 600)
            p = Peer(try WebSocketClient.connect(url: gw.url))
            try p.send(["type": "hello", "token": forged])
            #expect(try p.waitClose() == 4001)
            // A frame other than hello first.
            p = Peer(try WebSocketClient.connect(url: gw.url))
            try p.send(["type": "join", "session": "s"])
            #expect(try p.waitClose() == 4001)
            // Silence past the auth deadline.
            p = Peer(try WebSocketClient.connect(url: gw.url))
            #expect(try p.waitClose(timeout: .seconds(5)) == 4001)
            // Token in the URL is not accepted: no header, no hello token.
            p = Peer(try WebSocketClient.connect(url: gw.url + "?token=" + expired))
            try p.send(["type": "hello"])
            #expect(try p.waitClose() == 4001)
        }
    }

    @Test func joinPublishAckThenEventInOrder() async throws {
        try await withGateway { gw in
            let user = try await gw.client(.user, sub: "alice", sessions: ["proj-1"])
            let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
            let joined = try user.join("proj-1")
            #expect(joined.int("head") == 0)
            #expect((joined.string("epoch") ?? "").isEmpty == false)
            #expect(joined["trimmed"] == nil && joined["reset"] == nil)
            _ = try agent.join("proj-1")

            // The publisher's ack arrives before its own copy of the event.
            try agent.send(["type": "publish", "session": "proj-1", "id": "p1", "kind": "progress", "data": ["step": 1, "of": 3]])
            let ack = try agent.next()
            #expect(ack.string("type") == "ack")
            #expect(ack.int("seq") == 1)
            #expect(ack.string("id") == "p1")
            #expect(ack.string("session") == "proj-1")
            let own = try agent.next()
            #expect(own.string("type") == "event")
            #expect(own.int("seq") == 1)

            let ev = try user.next(type: "event")
            #expect(ev.int("seq") == 1)
            #expect(ev.string("kind") == "progress")
            #expect(ev.string("id") == "p1")
            let from = ev["from"] as? [String: Any]
            #expect(from?["sub"] as? String == "worker")
            #expect(from?["role"] as? String == "agent")
            let ts = ev.string("ts") ?? ""
            #expect(ts.count == 24 && ts.hasSuffix("Z"), "RFC 3339 with ms: \(ts)")
            #expect((ev["data"] as? [String: Any])?["of"] as? Int == 3)

            // A user chat message: seq 2, seen by both.
            let a2 = try user.publish("proj-1", id: "m1", data: ["text": "hello agent"])
            #expect(a2.int("seq") == 2)
            #expect(try agent.next(type: "event").int("seq") == 2)
            #expect(try user.next(type: "event").int("seq") == 2)
            user.close()
            agent.close()
        }
    }

    @Test func dataIsStoredAndServedByteExact() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            let raw = #"{"type":"publish","session":"s","id":"x1","kind":"file.changed","data":{ "path" : "a/b.swift",  "n": [1, 2.50, -0.0e+3], "s":"\u00e9\n" }}"#
            try agent.sendRaw(raw)
            _ = try agent.next(type: "ack")
            let reader = try await gw.client(.operator, sub: "ops")
            try reader.send(["type": "join", "session": "s", "since": 0])
            _ = try reader.next(type: "joined")
            // Read the raw text of the replayed event to check the data bytes.
            var text = ""
            while true {
                if case .text(let s) = try reader.ws.receive(timeout: .seconds(5)) { text = s; break }
            }
            #expect(text.hasSuffix(#","data":{ "path" : "a/b.swift",  "n": [1, 2.50, -0.0e+3], "s":"\u00e9\n" }}"#), "got \(text)")
        }
    }

    @Test func duplicateIdGetsOriginalAck() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            let first = try agent.publish("s", id: "same")
            #expect(first.int("seq") == 1)
            #expect(first["duplicate"] == nil)
            let again = try agent.publish("s", id: "same")
            #expect(again.int("seq") == 1)
            #expect(again["duplicate"] as? Bool == true)
            // Another publisher reusing the id gets a new event.
            let other = try await gw.client(.agent, sub: "w2", sessions: ["s"])
            let third = try other.publish("s", id: "same")
            #expect(third.int("seq") == 2)
            #expect(third["duplicate"] == nil)
        }
    }

    @Test func ephemeralEventsAreFannedOutNotStored() async throws {
        try await withGateway { gw in
            let user = try await gw.client(.user, sub: "u", sessions: ["s"])
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            _ = try user.join("s")
            let ack = try agent.publish("s", id: "d1", kind: "chat.delta", data: ["text": "hel"])
            #expect(ack.string("type") == "ack")
            #expect(ack["seq"] == nil)
            let ev = try user.next(type: "event")
            #expect(ev["seq"] == nil)
            #expect(ev.string("kind") == "chat.delta")
            let ack2 = try agent.publish("s", id: "e2", kind: "progress", data: 42, ephemeral: true)
            #expect(ack2["seq"] == nil)
            #expect(try user.next(type: "event")["seq"] == nil)
            // Nothing was stored: the head is still 0.
            let again = try user.join("s", since: 0)
            #expect(again.int("head") == 0)
        }
    }

    @Test func resumeWithSinceReplaysExactlyTheMissingEvents() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            for i in 1...10 { _ = try agent.publish("s", id: "e\(i)", kind: "progress", data: ["i": i]) }
            let user = try await gw.client(.user, sub: "u", sessions: ["s"])
            let joined = try user.join("s", since: 4)
            #expect(joined.int("head") == 10)
            var seqs: [Int] = []
            for _ in 5...10 { seqs.append(try user.next(type: "event").int("seq") ?? -1) }
            #expect(seqs == Array(5...10))
            // Then live, with no gap and no duplicate.
            _ = try agent.publish("s", id: "e11")
            #expect(try user.next(type: "event").int("seq") == 11)
            #expect(try user.expectSilence() == nil)
        }
    }

    @Test func resetOnEpochMismatchOrSinceBeyondHead() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            for i in 1...3 { _ = try agent.publish("s", id: "e\(i)") }
            let user = try await gw.client(.user, sub: "u", sessions: ["s"])
            let j1 = try user.join("s", since: 2, epoch: "not-the-epoch")
            #expect(j1["reset"] as? Bool == true)
            #expect(try user.next(type: "event").int("seq") == 1)
            #expect(try user.next(type: "event").int("seq") == 2)
            #expect(try user.next(type: "event").int("seq") == 3)
            let j2 = try user.join("s", since: 99)
            #expect(j2["reset"] as? Bool == true)
            #expect(j2.int("head") == 3)
            #expect(try user.next(type: "event").int("seq") == 1)
            // The right epoch and a valid since: no reset.
            let epoch = j2.string("epoch")
            let j3 = try user.join("s", since: 3, epoch: epoch)
            #expect(j3["reset"] == nil)
            // epoch without since is ignored.
            let j4 = try user.join("s", epoch: "other")
            #expect(j4["reset"] == nil)
        }
    }

    @Test func leaveUnknownTypeMalformedAndPing() async throws {
        try await withGateway { gw in
            let user = try await gw.client(.user, sub: "u", sessions: ["s"])
            _ = try user.join("s")
            try user.send(["type": "leave", "session": "s"])
            #expect(try user.next().string("type") == "left")
            try user.send(["type": "leave", "session": "s"])
            let nf = try user.next()
            #expect(nf.string("type") == "error")
            #expect(nf.string("code") == "not_found")
            try user.send(["type": "subscribe", "session": "s"])
            #expect(try user.next().string("code") == "bad_request")
            try user.sendRaw("{not json")
            #expect(try user.next().string("code") == "bad_request")
            try user.send(["type": "publish", "session": "s", "id": "x", "kind": "chat.message"])
            let missingData = try user.next()
            #expect(missingData.string("code") == "bad_request")
            #expect(missingData.string("ref") == "x")
            try user.send(["type": "join", "session": "bad id!"])
            #expect(try user.next().string("code") == "bad_request")
            try user.send(["type": "ping", "id": "p-1"])
            let pong = try user.next()
            #expect(pong.string("type") == "pong")
            #expect(pong.string("id") == "p-1")
            try user.send(["type": "ping"])
            #expect(try user.next().string("type") == "pong")
            // WebSocket-level ping is answered too.
            try user.ws.sendPing([1, 2, 3])
            var gotPong = false
            for _ in 0..<5 {
                if case .pong(let payload) = try user.ws.receive(timeout: .seconds(3)) { gotPong = payload == [1, 2, 3]; break }
            }
            #expect(gotPong)
            // Still open and working.
            _ = try user.join("s")
        }
    }

    @Test func rolesAndSessionClaims() async throws {
        try await withGateway { gw in
            let user = try await gw.client(.user, sub: "u", sessions: ["mine"])
            // A user may not publish agent kinds.
            let e1 = try user.publish("mine", id: "p", kind: "progress")
            #expect(e1.string("code") == "forbidden")
            #expect(e1.string("ref") == "p")
            // Nor join or publish to a session outside its claim.
            try user.send(["type": "join", "session": "theirs"])
            #expect(try user.next().string("code") == "forbidden")
            #expect(try user.publish("theirs", id: "q").string("code") == "forbidden")
            // "*" is not honoured for users.
            let star = try await gw.client(.user, sub: "u2", sessions: ["*"])
            try star.send(["type": "join", "session": "anything"])
            #expect(try star.next().string("code") == "forbidden")
            // Operators read any session but may not publish.
            let op = try await gw.client(.operator, sub: "ops")
            #expect(try op.join("theirs").string("type") == "joined")
            #expect(try op.publish("theirs", id: "o", kind: "chat.message").string("code") == "forbidden")
            // Agents with a claim publish any kind there.
            let agent = try await gw.client(.agent, sub: "w", sessions: ["mine"])
            #expect(try agent.publish("mine", id: "a", kind: "preview.ready").int("seq") == 1)
            #expect(try agent.publish("theirs", id: "b").string("code") == "forbidden")
        }
    }

    @Test func closeCodesForBinaryUTF8AndSize() async throws {
        try await withGateway(settings: ["limits.max_message_bytes": "65536"]) { gw in
            var p = try await gw.client(.user, sub: "u1", sessions: ["s"])
            try p.ws.sendBinary([1, 2, 3])
            #expect(try p.waitClose() == 1003)
            p = try await gw.client(.user, sub: "u2", sessions: ["s"])
            try p.ws.sendText(bytes: [0x7b, 0xff, 0xfe, 0x7d])
            #expect(try p.waitClose() == 1007)
            p = try await gw.client(.user, sub: "u3", sessions: ["s"])
            try p.ws.sendText(String(repeating: "x", count: 70_000))
            #expect(try p.waitClose() == 1009)
            // Many small fragments adding up past the limit.
            p = try await gw.client(.user, sub: "u4", sessions: ["s"])
            try p.ws.sendFragmented(text: Array(repeating: UInt8(ascii: "a"), count: 100_000), fragmentSize: 1000)
            #expect(try p.waitClose() == 1009)
            // A fragmented message under the limit is reassembled.
            p = try await gw.client(.user, sub: "u5", sessions: ["s"])
            try p.ws.sendFragmented(text: Array(#"{"type":"ping","id":"frag"}"#.utf8), fragmentSize: 5)
            #expect(try p.next().string("id") == "frag")
        }
    }

    @Test func rateLimitThenClose4008() async throws {
        try await withGateway(settings: [
            "rate_limits.roles.user.rate_per_second": "1", "rate_limits.roles.user.burst": "3", "rate_limits.strikes_before_close": "5",
        ]) { gw in
            let user = try await gw.client(.user, sub: "u", sessions: ["s"])
            var codes: [String] = []
            for i in 0..<8 {
                let r = try user.publish("s", id: "m\(i)")
                codes.append(r.string("type") == "ack" ? "ack" : (r.string("code") ?? "?"))
            }
            #expect(codes.prefix(3).allSatisfy { $0 == "ack" })
            #expect(codes.dropFirst(3).allSatisfy { $0 == "rate_limited" })
            try user.send(["type": "publish", "session": "s", "id": "last", "kind": "chat.message", "data": 1])
            #expect(try user.waitClose() == 4008)
            // Agents are not limited by the default configuration.
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            for i in 0..<30 { #expect(try agent.publish("s", id: "a\(i)").string("type") == "ack") }
        }
    }

    @Test func connectionLimitPerSub() async throws {
        try await withGateway(settings: ["limits.max_connections_per_sub": "2"]) { gw in
            let a = try await gw.client(.user, sub: "same", sessions: ["s"])
            let b = try await gw.client(.user, sub: "same", sessions: ["s"])
            let token = try await gw.token(.user, sub: "same", sessions: ["s"])
            let c = Peer(try WebSocketClient.connect(url: gw.url))
            try c.send(["type": "hello", "token": token])
            #expect(try c.waitClose() == 4008)
            a.close()
            b.close()
        }
    }

    @Test func maxSessionsPerConnection() async throws {
        try await withGateway(settings: ["limits.max_sessions_per_connection": "2"]) { gw in
            let op = try await gw.client(.operator, sub: "ops")
            _ = try op.join("a")
            _ = try op.join("b")
            _ = try op.join("a")  // re-join of a joined session is fine
            try op.send(["type": "join", "session": "c"])
            #expect(try op.next().string("code") == "forbidden")
        }
    }
}

@Suite("Gateway backpressure on replies", .timeLimit(.minutes(2)))
struct ReplyBackpressureTests {
    /// A client that floods pings and never reads cannot grow the server's memory: replies are capped at twice
    /// the outbound buffer (then 4009), and lws stops reading a socket whose output is backed up, so the flood
    /// stalls in the client's own send buffer.
    @Test func pingFloodWithoutReadingStaysBounded() async throws {
        try await withGateway(settings: [
            "limits.outbound_buffer_bytes": "65536", "limits.max_message_bytes": "16384",
        ]) { gw in
            let token = try await gw.token(.user, sub: "flood", sessions: ["s"])
            var options = WebSocketClientOptions()
            options.receiveBufferSize = 4096
            let ws = try WebSocketClient.connect(url: gw.url, options: options)
            let p = Peer(ws)
            try p.send(["type": "hello", "token": token])
            _ = try p.next(type: "welcome")
            var sent = 0
            do {
                for i in 0..<60_000 {
                    try ws.sendText(#"{"type":"ping","id":"p\#(i)"}"#, timeout: .seconds(2))
                    sent += 1
                }
            } catch {
                // Expected: the server stopped reading this socket, so our sends stall.
            }
            try await Task.sleep(for: .milliseconds(500))
            let metrics = String(decoding: try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/metrics").body, as: UTF8.self)
            let queued = metrics.split(separator: "\n").first { $0.hasPrefix("gateway_outbound_queue_bytes ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") } ?? -1
            #expect(queued >= 0 && queued <= 2 * 65536 + 64, "queued \(queued) bytes after \(sent) pings")
            ws.close()
            // The gateway is still healthy.
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/healthz").status == 200)
        }
    }
}
