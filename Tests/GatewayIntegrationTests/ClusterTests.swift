import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Glibc
import Synchronization
import Testing

// Cluster mode (docs/scaling.md): several gateways on one real `redis-server` (started per test on an ephemeral
// loopback port with Config/redis.conf), clients on different nodes, nodes and Redis killed with SIGKILL, the
// subscriber connections killed with CLIENT KILL. Every check is on what real WebSocket clients received.

@Suite("Cluster mode on Redis", .serialized, .timeLimit(.minutes(10)))
struct ClusterTests {
    static func environment(_ redis: RedisServer, node: String, prefix: String) -> [String: String] {
        [
            "GATEWAY_STORAGE_ENGINE": "redis", "GATEWAY_REDIS_URL": redis.url, "GATEWAY_REDIS_KEY_PREFIX": prefix,
            "GATEWAY_NODE_ID": node, "GATEWAY_LOG_LEVEL": "warning",
        ]
    }

    static func settings(_ redis: RedisServer, node: String, prefix: String) -> [String: String] {
        ["storage.engine": "redis", "redis.url": redis.url, "redis.key_prefix": prefix, "cluster.node_id": node]
    }

    /// `count` in-process nodes sharing one key prefix on `redis` (plus `extra` settings); always stopped afterwards.
    static func withNodes<R>(
        _ count: Int, redis: RedisServer, prefix: String = "c" + String(UInt32.random(in: 0...UInt32.max), radix: 16),
        extra: [String: String] = [:], _ body: ([GatewayUnderTest]) async throws -> R
    ) async throws -> R {
        var nodes: [GatewayUnderTest] = []
        do {
            for i in 0..<count {
                let node = String(UnicodeScalar(UInt8(97 + i)))
                nodes.append(
                    try await GatewayUnderTest.start(settings: settings(redis, node: node, prefix: prefix).merging(extra) { $1 }))
            }
            let result = try await body(nodes)
            for n in nodes { try await n.stop() }
            for n in nodes { n.remove() }
            return result
        } catch {
            for n in nodes {
                try? await n.stop(allowingFailure: true)
                n.remove()
            }
            throw error
        }
    }

    /// Reads durable events from `peer` until the one with seq `head`; returns (seq, id) in arrival order. Frames
    /// other than events (acks, joined) are skipped.
    static func readEvents(_ peer: Peer, through head: Int, timeout: Duration = .seconds(20)) throws -> [(seq: Int, id: String)] {
        var out: [(seq: Int, id: String)] = []
        let deadline = ContinuousClock.now + timeout
        while (out.last?.seq ?? 0) < head {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw GatewayClientError.timeout("events through \(head): got \(out.count), last \(out.last?.seq ?? 0)") }
            let f = try peer.next(timeout: left)
            guard f.string("type") == "event", let seq = f.int("seq"), let id = f.string("id") else { continue }
            out.append((seq, id))
        }
        return out
    }

    static func waitReady(_ port: Int, _ want: Bool, within: Duration) -> Bool {
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            let status = (try? RawHTTP.get(host: "127.0.0.1", port: port, path: "/readyz").status) ?? 0
            if (status == 200) == want { return true }
            usleep(50_000)
        }
        return false
    }

    /// Publishes `ids` through `agent` with up to `window` in flight; returns the acks (id → seq).
    static func publishAll(_ agent: Peer, session: String, ids: [String], window: Int = 64) throws -> [String: Int] {
        var acked: [String: Int] = [:]
        var next = 0
        var inFlight = 0
        while acked.count < ids.count {
            var wire: [UInt8] = []
            while inFlight < window && next < ids.count {
                wire += Frames.text(#"{"type":"publish","session":"\#(session)","id":"\#(ids[next])","kind":"progress","data":{"n":\#(next)}}"#)
                next += 1
                inFlight += 1
            }
            if !wire.isEmpty { try agent.ws.sendRaw(wire) }
            let r = try agent.next(timeout: .seconds(10))
            guard r.string("type") == "ack" || r.string("type") == "error" else { continue }
            guard r.string("type") == "ack", let id = r.string("id"), let seq = r.int("seq") else {
                throw GatewayClientError.unexpectedMessage("publish refused: \(r)")
            }
            acked[id] = seq
            inFlight -= 1
        }
        return acked
    }

    // MARK: fan-out across nodes

    /// Browsers on A and C, the agent on B: 10,000 events arrive at both browsers in order, without a gap or a
    /// duplicate, and the seqs are the ones the agent was acked.
    @Test func browsersOnTwoNodesSeeTheAgentOnAThird() async throws {
        try await withRedis { redis in
            try await Self.withNodes(3, redis: redis) { nodes in
                let a = try await nodes[0].client(.user, sub: "alice", sessions: ["proj"])
                let c = try await nodes[2].client(.user, sub: "carol", sessions: ["proj"])
                let agent = try await nodes[1].client(.agent, sub: "worker", sessions: ["*"])
                #expect(try a.join("proj").int("head") == 0)
                #expect(try c.join("proj").int("head") == 0)
                let count = 10_000
                let ids = (1...count).map { "m\($0)" }
                let acked = try Self.publishAll(agent, session: "proj", ids: ids)
                #expect(Set(acked.values) == Set(1...count), "acked seqs are exactly 1...\(count)")
                for browser in [a, c] {
                    let got = try Self.readEvents(browser, through: count)
                    #expect(got.map(\.seq) == Array(1...count), "in order, no gap, no duplicate")
                    #expect(got.allSatisfy { acked[$0.id] == $0.seq }, "each event at the seq its publisher was acked")
                }
                // A fourth client joining on another node resumes exactly.
                let late = try await nodes[0].client(.user, sub: "dave", sessions: ["proj"])
                let joined = try late.join("proj", since: count - 5)
                #expect(joined.int("head") == count)
                #expect(try Self.readEvents(late, through: count).map(\.seq) == Array((count - 4)...count))
            }
        }
    }

    /// The same publish id retried on another node gets `duplicate` with the original seq: dedupe is cluster-wide.
    @Test func retryOnAnotherNodeIsADuplicate() async throws {
        try await withRedis { redis in
            try await Self.withNodes(2, redis: redis) { nodes in
                let first = try await nodes[0].client(.agent, sub: "worker", sessions: ["*"])
                _ = try first.publish("s", id: "a")
                let original = try first.publish("s", id: "x")
                #expect(original.int("seq") == 2 && original["duplicate"] == nil)
                first.close()
                let retry = try await nodes[1].client(.agent, sub: "worker", sessions: ["*"])
                let again = try retry.publish("s", id: "x")
                #expect(again.string("type") == "ack")
                #expect(again.int("seq") == 2)
                #expect(again["duplicate"] as? Bool == true)
                // Another subject with the same id is another event.
                let other = try await nodes[1].client(.agent, sub: "other-worker", sessions: ["*"])
                #expect(try other.publish("s", id: "x").int("seq") == 3)
                // The epoch is the cluster's: both nodes give the same one.
                let e0 = try await nodes[0].client(.user, sub: "u", sessions: ["s"]).join("s").string("epoch")
                let e1 = try await nodes[1].client(.user, sub: "u", sessions: ["s"]).join("s").string("epoch")
                #expect(e0 != nil && e0 == e1)
            }
        }
    }

    /// Redis kills the nodes' subscriber connections (CLIENT KILL TYPE pubsub) five times while an agent on B
    /// publishes: the browser on A still gets every event once, in order (gaps filled from the stream).
    @Test func subscriberConnectionKilledGapsAreFilled() async throws {
        try await withRedis { redis in
            try await Self.withNodes(2, redis: redis) { nodes in
                let browser = try await nodes[0].client(.user, sub: "alice", sessions: ["gap"])
                _ = try browser.join("gap")
                let agent = try await nodes[1].client(.agent, sub: "worker", sessions: ["*"])
                let count = 2_000
                var acked: [String: Int] = [:]
                let killed = Mutex<Int64>(0)
                for chunk in 0..<5 {
                    let ids = ((chunk * 400 + 1)...((chunk + 1) * 400)).map { "g\($0)" }
                    let killer = BackgroundThread {
                        usleep(UInt32.random(in: 0...20_000))
                        let n = (try? redis.clientKillPubSub()) ?? 0
                        killed.withLock { $0 += n }
                    }
                    acked.merge(try Self.publishAll(agent, session: "gap", ids: ids, window: 16)) { a, _ in a }
                    killer.join()
                }
                // Each kill takes both nodes' subscriber connections (each kill finds them reconnected).
                #expect(killed.withLock { $0 } >= 5, "subscriber connections killed: \(killed.withLock { $0 })")
                let got = try Self.readEvents(browser, through: count, timeout: .seconds(40))
                #expect(got.map(\.seq) == Array(1...count), "in order, no gap, no duplicate across 5 subscriber kills")
                #expect(got.allSatisfy { acked[$0.id] == $0.seq })
            }
        }
    }

    // MARK: Redis down

    /// Redis is killed with SIGKILL while an agent publishes, and restarted: while it is down publishes and joins
    /// get `unavailable` and /readyz answers 503; afterwards everything resumes by itself, and every acked event is
    /// there exactly once (appendfsync always), also for a browser that stayed connected throughout.
    @Test func redisKilledUnderLoadLosesNoAckedEvent() async throws {
        try await withRedis { redis in
            try await Self.withNodes(2, redis: redis) { nodes in
                let browser = try await nodes[1].client(.user, sub: "alice", sessions: ["r"])
                _ = try browser.join("r")
                let agent = try await nodes[0].client(.agent, sub: "worker", sessions: ["*"])
                var acked: [String: Int] = [:]
                var unavailable = 0
                var pending = (1...3_000).map { "r\($0)" }
                let killer = BackgroundThread {
                    usleep(150_000)
                    try? redis.kill9()
                }
                var restarted = false
                let deadline = ContinuousClock.now + .seconds(60)
                var sawNotReady = false
                while !pending.isEmpty && ContinuousClock.now < deadline {
                    let id = pending.removeFirst()
                    let r = try agent.publish("r", id: id, kind: "progress", data: ["id": id])
                    if r.string("type") == "ack", let seq = r.int("seq") {
                        if let before = acked[id] { #expect(before == seq) }
                        acked[id] = seq
                    } else {
                        #expect(r.string("code") == "unavailable", "\(r)")
                        unavailable += 1
                        pending.insert(id, at: 0)
                        if !restarted {
                            killer.join()
                            sawNotReady = Self.waitReady(nodes[0].port, false, within: .seconds(5))
                            // A join while Redis is down is refused, and the connection lives.
                            let j = try await nodes[1].client(.user, sub: "bob", sessions: ["r"])
                            try j.send(["type": "join", "session": "r"])
                            let reply = try j.next(timeout: .seconds(10))
                            #expect(reply.string("type") == "error" && reply.string("code") == "unavailable", "\(reply)")
                            j.close()
                            try redis.restart()
                            restarted = true
                            #expect(Self.waitReady(nodes[0].port, true, within: .seconds(15)), "node a ready again")
                            #expect(Self.waitReady(nodes[1].port, true, within: .seconds(15)), "node b ready again")
                        } else {
                            usleep(20_000)
                        }
                    }
                }
                #expect(restarted && sawNotReady, "Redis was killed and /readyz said 503 meanwhile")
                #expect(pending.isEmpty, "every publish acked after retries")
                #expect(unavailable > 0)
                let head = acked.count
                #expect(Set(acked.values) == Set(1...head), "acked seqs dense")
                let op = try await nodes[1].client(.operator, sub: "ops")
                #expect(try op.join("r", since: 0).int("head") == head)
                let replayed = try Self.readEvents(op, through: head)
                #expect(replayed.map(\.seq) == Array(1...head))
                #expect(replayed.allSatisfy { acked[$0.id] == $0.seq }, "every acked event exactly once at its seq")
                let live = try Self.readEvents(browser, through: head, timeout: .seconds(30))
                #expect(live.map(\.seq) == Array(1...head), "the browser that stayed connected: no gap, no duplicate")
            }
        }
    }

    // MARK: node death

    /// Ten rounds: an agent and a browser on one node, the node killed with SIGKILL at a random point of a
    /// pipelined publish load; both resume on another node (the agent re-sends what had no ack, with the same id;
    /// the browser joins with `since`). Every acked event exactly once, the browser's stream gapless, seqs dense.
    @Test func nodeKilledUnderLoadClientsResumeElsewhere() async throws {
        try await withRedis { redis in
            let prefix = "k" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
            var nodes: [GatewayUnderTest] = []
            defer {
                for n in nodes {
                    try? n.kill()
                    n.remove()
                }
            }
            for name in ["a", "b", "c"] {
                nodes.append(try GatewayUnderTest.launch(environment: Self.environment(redis, node: name, prefix: prefix)))
            }
            let agentToken = try await TestTokens.mint(.agent, sub: "crash-agent", sessions: ["*"])
            let userToken = try await TestTokens.mint(.user, sub: "alice", sessions: ["kill"])
            var acked: [String: Int] = [:]
            var pending: [String] = []
            var nextNumber = 0
            var received: [Int] = []
            var epoch: String?
            var killsWithInFlight = 0
            for round in 0..<10 {
                let victim = round % 3
                let survivor = (round + 1) % 3
                let agent = try Peer.connect(url: nodes[victim].url, token: agentToken)
                let browser = try Peer.connect(url: nodes[victim].url, token: userToken)
                let joined = try browser.join("kill", since: received.last ?? 0, epoch: epoch)
                #expect(joined["reset"] == nil && joined["trimmed"] == nil, "round \(round): \(joined)")
                epoch = joined.string("epoch")
                let killAfter = UInt32.random(in: 20_000...300_000)
                let node = nodes[victim]
                let killer = BackgroundThread {
                    usleep(killAfter)
                    try? node.kill()
                }
                var outstanding = Set<String>()
                var retry = pending
                do {
                    while true {
                        var wire: [UInt8] = []
                        while outstanding.count < 32 {
                            let id: String
                            if !retry.isEmpty {
                                id = retry.removeFirst()
                            } else {
                                nextNumber += 1
                                id = "k\(nextNumber)"
                            }
                            wire += Frames.text(#"{"type":"publish","session":"kill","id":"\#(id)","kind":"progress","data":{}}"#)
                            outstanding.insert(id)
                        }
                        try agent.ws.sendRaw(wire)
                        let r = try agent.next(timeout: .seconds(10))
                        guard r.string("type") == "ack", let id = r.string("id"), let seq = r.int("seq") else { continue }
                        if let before = acked[id] { #expect(before == seq, "\(id) acked with two seqs") }
                        acked[id] = seq
                        outstanding.remove(id)
                    }
                } catch {
                    // The node died.
                }
                killer.join()
                if !outstanding.isEmpty { killsWithInFlight += 1 }
                agent.close()
                browser.close()
                // Resume on a survivor: the agent re-sends every publish without an ack (same ids).
                pending = (retry + outstanding.sorted()).filter { acked[$0] == nil }
                let agent2 = try Peer.connect(url: nodes[survivor].url, token: agentToken)
                for id in pending {
                    let r = try agent2.publish("kill", id: id, kind: "progress", data: [String: Int]())
                    guard r.string("type") == "ack", let seq = r.int("seq") else {
                        Issue.record("retry of \(id): \(r)")
                        continue
                    }
                    if let before = acked[id] { #expect(before == seq) }
                    acked[id] = seq
                }
                pending = []
                agent2.close()
                // The browser resumes on the survivor with since = the last seq it saw.
                let browser2 = try Peer.connect(url: nodes[survivor].url, token: userToken)
                let rejoined = try browser2.join("kill", since: received.last ?? 0, epoch: epoch)
                #expect(rejoined["reset"] == nil, "round \(round): \(rejoined)")
                let head = rejoined.int("head") ?? 0
                if head > (received.last ?? 0) {
                    received += try Self.readEvents(browser2, through: head).map(\.seq)
                }
                browser2.close()
                // The killed node comes back (same node id) for later rounds.
                let replacement = try GatewayUnderTest.launch(
                    environment: Self.environment(redis, node: ["a", "b", "c"][victim], prefix: prefix))
                nodes[victim].remove()
                nodes[victim] = replacement
            }
            let head = acked.count
            #expect(Set(acked.values) == Set(1...head), "acked seqs are dense: every acked event exactly once")
            #expect(received == Array(1...head), "the browser's stream over 10 node deaths: no gap, no duplicate")
            let op = Peer(try WebSocketClient.connect(url: nodes[0].url))
            try op.send(["type": "hello", "token": try await TestTokens.mint(.operator, sub: "ops")])
            _ = try op.next(type: "welcome")
            #expect(try op.join("kill", since: 0).int("head") == head, "nothing stored that was not acked")
            Report.line("cluster: 10 node kills, \(head) events acked exactly once, \(killsWithInFlight) kills with publishes in flight")
            for n in nodes { try? n.terminate(allowingFailure: true) }
        }
    }

    /// The dedupe index in Redis keeps at least the last `redis.dedupe_window` ids of a session (retries of them get
    /// their original seq) and stays bounded: pruned per bucket, compact (listpack buckets, bytes per id printed).
    @Test func dedupeWindowHoldsAndStaysCompact() async throws {
        try await withRedis { redis in
            let prefix = "d" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
            var settings = Self.settings(redis, node: "a", prefix: prefix)
            settings["redis.dedupe_window"] = "1000"
            try await withGateway(settings: settings) { gw in
                let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
                let count = 5_000
                let acked = try Self.publishAll(agent, session: "dd", ids: (1...count).map { "id-\($0)" })
                #expect(acked.count == count)
                // Every id of the last 1,000 seqs is still remembered, with its seq.
                for n in stride(from: count - 999, through: count, by: 7) {
                    let r = try agent.publish("dd", id: "id-\(n)", kind: "progress", data: ["n": n])
                    #expect(r["duplicate"] as? Bool == true && r.int("seq") == acked["id-\(n)"], "id-\(n): \(r)")
                }
                // Bounded: no bucket over its cap (2 × 1000 / 64 = 31), so the index holds < 2 windows of ids.
                var remembered: Int64 = 0
                var bytes: Int64 = 0
                for b in 0..<64 {
                    let key = "\(prefix):{dd}:d:\(b)"
                    let n = try redis.command(["HLEN", key]).int ?? -1
                    #expect(n >= 0 && n <= 31 + 1, "bucket \(b) holds \(n)")
                    remembered += n
                    bytes += try redis.command(["MEMORY", "USAGE", key]).int ?? 0
                    #expect(try redis.command(["OBJECT", "ENCODING", key]).string == "listpack")
                }
                #expect(remembered >= 1_000 && remembered < 2_000 + 64, "ids remembered: \(remembered)")
                Report.line("cluster dedupe: \(remembered) ids remembered in 64 listpack buckets, \(bytes) B = \(bytes / max(1, remembered)) B per id")
                #expect(bytes / max(1, remembered) <= 40, "compact dedupe: \(bytes / max(1, remembered)) B per id")
            }
        }
    }

    // MARK: listings and start-up check

    /// `/v1/sessions` on any node lists the sessions of the whole cluster with every node's subscribers.
    @Test func sessionsListingShowsTheCluster() async throws {
        try await withRedis { redis in
            try await Self.withNodes(2, redis: redis) { nodes in
                let u = try await nodes[0].client(.user, sub: "alice", sessions: ["listed"])
                _ = try u.join("listed")
                let agent = try await nodes[1].client(.agent, sub: "worker", sessions: ["*"])
                _ = try agent.join("listed")
                _ = try agent.publish("listed", id: "1")
                let token = try await nodes[0].token(.operator, sub: "ops")
                let deadline = ContinuousClock.now + .seconds(10)
                var seen = ""
                while ContinuousClock.now < deadline {
                    let r = try RawHTTP.get(
                        host: "127.0.0.1", port: nodes[0].port, path: "/v1/sessions", headers: [("Authorization", "Bearer \(token)")])
                    seen = String(decoding: r.body, as: UTF8.self)
                    if seen.contains(#""session":"listed","subscribers":{"user":1,"agent":1,"operator":0},"head":1"#) { break }
                    usleep(200_000)
                }
                #expect(seen.contains(#""session":"listed","subscribers":{"user":1,"agent":1,"operator":0},"head":1"#), "\(seen)")
            }
        }
    }

    /// Under `redis.require_fsync` a Redis without `appendfsync always` is refused at start, naming the setting.
    @Test func requireFsyncRefusesANonDurableRedis() async throws {
        let redis = try RedisServer(extraArguments: ["--appendfsync", "everysec"])
        defer {
            try? redis.stop(allowingFailure: true)
            redis.remove()
        }
        var settings = Self.settings(redis, node: "a", prefix: "f")
        settings["redis.require_fsync"] = "true"
        do {
            let gw = try await GatewayUnderTest.start(settings: settings)
            try? await gw.stop(allowingFailure: true)
            gw.remove()
            Issue.record("the gateway started on a Redis with appendfsync everysec")
        } catch {
            #expect("\(error)".contains("appendfsync is everysec, expected always"), "\(error)")
        }
        // Without the requirement it starts (and only warns).
        settings["redis.require_fsync"] = "false"
        try await withGateway(settings: settings) { gw in
            #expect(Self.waitReady(gw.port, true, within: .seconds(10)))
        }
    }
}
