import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Testing

// Token streams (protocol v1.1 §3, docs/protocol.md §3.7) against a real gateway on loopback: deltas that accumulate,
// snapshots for joiners and reloads, the final message that closes a stream, the gateway's idle finalize (also after
// an agent's connection dies and across a restart), and bad input that keeps the connection.

enum StreamFrames {
    /// Publishes one stream delta and returns the ack or error.
    @discardableResult
    static func delta(_ agent: Peer, _ session: String, id: String, stream: Any, text: Any, kind: String = "chat.delta") throws
        -> [String: Any]
    {
        try agent.publish(session, id: id, kind: kind, data: ["stream": stream, "text": text])
    }

    /// The `data` object of an event frame.
    static func data(_ f: [String: Any]) -> [String: Any] { f["data"] as? [String: Any] ?? [:] }

    /// Frames of type `event` until `count` arrived (other frames skipped).
    static func events(_ peer: Peer, count: Int, timeout: Duration = .seconds(10)) throws -> [[String: Any]] {
        var out: [[String: Any]] = []
        let deadline = ContinuousClock.now + timeout
        while out.count < count {
            let f = try peer.next(timeout: max(.milliseconds(1), deadline - ContinuousClock.now))
            if f.string("type") == "event" { out.append(f) }
        }
        return out
    }

    /// Every durable event of `session` from seq 1 to the head, through a fresh join with since 0.
    static func transcript(_ peer: Peer, _ session: String) throws -> [[String: Any]] {
        let joined = try peer.join(session, since: 0)
        let head = joined.int("head") ?? 0
        var out: [[String: Any]] = []
        while (out.last?.int("seq") ?? 0) < head {
            let f = try peer.next(timeout: .seconds(10))
            if f.string("type") == "event", f.int("seq") != nil { out.append(f) }
        }
        return out
    }
}

@Suite("Token streams", .serialized, .timeLimit(.minutes(5)))
struct TokenStreamTests {
    @Test func deltasAccumulateAndAJoinerGetsOneSnapshotAfterItsReplay() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
            let early = try await gw.client(.user, sub: "alice", sessions: ["s"])
            _ = try early.join("s")
            #expect(try agent.publish("s", id: "q1", data: ["text": "question"]).int("seq") == 1)
            // Text with escapes and non-ASCII: the snapshot holds the decoded text, re-escaped.
            let parts = ["Hel", "lo \"wörld\"", "\n\\ ✓"]
            for (i, t) in parts.enumerated() {
                #expect(try StreamFrames.delta(agent, "s", id: "d\(i)", stream: "a1", text: t).string("type") == "ack")
            }
            let seen = try StreamFrames.events(early, count: 1 + parts.count)
            #expect(seen.dropFirst().map { StreamFrames.data($0)["text"] as? String } == parts)

            let late = try await gw.client(.user, sub: "bob", sessions: ["s"])
            let joined = try late.join("s", since: 0)
            #expect(joined.int("head") == 1)
            let replay = try late.next(type: "event")
            #expect(replay.int("seq") == 1 && replay.string("id") == "q1")
            let snapshot = try late.next(type: "event")
            #expect(snapshot.string("id") == "a1" && snapshot.string("kind") == "chat.delta" && snapshot.int("seq") == nil)
            #expect((snapshot["from"] as? [String: Any])?["sub"] as? String == "worker")
            #expect(StreamFrames.data(snapshot)["stream"] as? String == "a1")
            #expect(StreamFrames.data(snapshot)["full"] as? String == parts.joined())
            #expect(try late.expectSilence() == nil, "one snapshot, nothing else")

            try StreamFrames.delta(agent, "s", id: "d9", stream: "a1", text: "!")
            let next = try late.next(type: "event")
            #expect(StreamFrames.data(next)["text"] as? String == "!" && next.string("id") == "d9")
            #expect(try late.expectSilence() == nil, "no delta twice")
            // The early subscriber never gets a snapshot (it did not re-join).
            let earlyNext = try early.next(type: "event")
            #expect(earlyNext.string("id") == "d9")
        }
    }

    @Test func aReloadMidStreamGetsTheSnapshotThenTheRest() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
            _ = try agent.publish("s", id: "q1")
            let tab = try await gw.client(.user, sub: "alice", sessions: ["s"])
            let joined = try tab.join("s", since: 0)
            let epoch = joined.string("epoch")
            _ = try tab.next(type: "event")
            try StreamFrames.delta(agent, "s", id: "d1", stream: "x", text: "one ")
            #expect(StreamFrames.data(try tab.next(type: "event"))["text"] as? String == "one ")
            tab.close()
            try StreamFrames.delta(agent, "s", id: "d2", stream: "x", text: "two ")
            let reloaded = try await gw.client(.user, sub: "alice", sessions: ["s"])
            let again = try reloaded.join("s", since: 1, epoch: epoch)
            #expect(again.int("head") == 1 && again["reset"] == nil)
            let snapshot = try reloaded.next(type: "event")
            #expect(StreamFrames.data(snapshot)["full"] as? String == "one two ")
            try StreamFrames.delta(agent, "s", id: "d3", stream: "x", text: "three")
            let rest = try reloaded.next(type: "event")
            #expect(StreamFrames.data(rest)["text"] as? String == "three")
            #expect(try reloaded.expectSilence() == nil)
        }
    }

    @Test func theFinalDurableMessageClosesTheStream() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
            try StreamFrames.delta(agent, "s", id: "d1", stream: "ans", text: "The answer")
            // Another publisher's message with the same stream id does not close the worker's stream.
            let other = try await gw.client(.agent, sub: "other", sessions: ["*"])
            _ = try other.publish("s", id: "o1", data: ["stream": "ans", "text": "not mine"])
            let a = try await gw.client(.user, sub: "alice", sessions: ["s"])
            _ = try a.join("s", since: 0)
            _ = try a.next(type: "event")  // o1
            #expect(StreamFrames.data(try a.next(type: "event"))["full"] as? String == "The answer")
            let ack = try agent.publish("s", id: "final", data: ["stream": "ans", "text": "The answer."])
            #expect(ack.int("seq") == 2)
            let b = try await gw.client(.user, sub: "bob", sessions: ["s"])
            _ = try b.join("s", since: 0)
            let replay = try StreamFrames.events(b, count: 2)
            #expect(replay.map { $0.string("id") } == ["o1", "final"])
            #expect(try b.expectSilence(for: .milliseconds(500)) == nil, "no snapshot after the final message")
            // Its duplicate is a duplicate; still no snapshot, and a new stream with the id opens afresh.
            #expect(try agent.publish("s", id: "final", data: ["stream": "ans", "text": "The answer."])["duplicate"] as? Bool == true)
        }
    }

    @Test func anIdleStreamIsFinalizedOnceWithStatusInterrupted() async throws {
        try await withGateway(settings: ["streams.idle_timeout_seconds": "1"]) { gw in
            let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
            let a = try await gw.client(.user, sub: "alice", sessions: ["s"])
            _ = try a.join("s")
            try StreamFrames.delta(agent, "s", id: "d1", stream: "z", text: "half ")
            try StreamFrames.delta(agent, "s", id: "d2", stream: "z", text: "an answer")
            _ = try StreamFrames.events(a, count: 2)
            let finalized = try a.next(type: "event", timeout: .seconds(5))
            #expect(finalized.string("id") == "stream:z" && finalized.string("kind") == "chat.message")
            #expect(finalized.int("seq") == 1)
            #expect((finalized["from"] as? [String: Any])?["sub"] as? String == "worker")
            #expect((finalized["from"] as? [String: Any])?["role"] as? String == "agent")
            let data = StreamFrames.data(finalized)
            #expect(data["stream"] as? String == "z" && data["text"] as? String == "half an answer")
            #expect(data["status"] as? String == "interrupted")
            #expect(try a.expectSilence(for: .milliseconds(1_500)) == nil, "finalized once")
            let reader = try await gw.client(.user, sub: "bob", sessions: ["s"])
            let events = try StreamFrames.transcript(reader, "s")
            #expect(events.filter { $0.string("id") == "stream:z" }.count == 1)
            #expect(try reader.expectSilence() == nil, "a finalized stream has no snapshot")
        }
    }

    /// The agent's connection dies mid-stream (closed without a handshake); the gateway finalizes the stream, is
    /// restarted on the same data directory, and the transcript holds the finalize exactly once.
    @Test func anAgentKilledMidStreamIsFinalizedAndSurvivesARestart() async throws {
        let dir = try TemporaryDirectory.make(prefix: "streams")
        defer { TemporaryDirectory.remove(dir) }
        let settings = ["streams.idle_timeout_seconds": "1"]
        let gw = try await GatewayUnderTest.start(dataDir: dir, settings: settings)
        try await gw.use { gw in
            let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
            _ = try agent.publish("s", id: "q1")
            try StreamFrames.delta(agent, "s", id: "d1", stream: "k", text: "partial")
            agent.close()
            let a = try await gw.client(.user, sub: "alice", sessions: ["s"])
            _ = try a.join("s", since: 1)
            #expect(StreamFrames.data(try a.next(type: "event"))["full"] as? String == "partial")
            let finalized = try a.next(type: "event", timeout: .seconds(5))
            #expect(finalized.string("id") == "stream:k" && finalized.int("seq") == 2)
        }
        let again = try await GatewayUnderTest.start(dataDir: dir, settings: settings)
        try await again.use { gw in
            let reader = try await gw.client(.user, sub: "bob", sessions: ["s"])
            let events = try StreamFrames.transcript(reader, "s")
            #expect(events.map { $0.string("id") } == ["q1", "stream:k"])
            #expect(StreamFrames.data(events[1])["text"] as? String == "partial")
            #expect(try reader.expectSilence(for: .milliseconds(1_500)) == nil)
        }
    }

    @Test func badInputIsRefusedAndTheConnectionLives() async throws {
        try await withGateway(settings: ["streams.max_per_session": "3"]) { gw in
            let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
            let a = try await gw.client(.user, sub: "alice", sessions: ["s"])
            _ = try a.join("s")
            func code(_ r: [String: Any]) -> String? { r.string("type") == "error" ? r.string("code") : nil }
            var r = try StreamFrames.delta(agent, "s", id: "b1", stream: "x", text: 5)
            #expect(code(r) == "bad_request" && r.string("ref") == "b1" && r.string("session") == "s")
            r = try agent.publish("s", id: "b2", kind: "chat.delta", data: ["stream": "x"])
            #expect(code(r) == "bad_request")
            r = try StreamFrames.delta(agent, "s", id: "b3", stream: "not valid!", text: "t")
            #expect(code(r) == "bad_request")
            r = try StreamFrames.delta(agent, "s", id: "b4", stream: String(repeating: "x", count: 101), text: "t")
            #expect(code(r) == "bad_request")
            r = try StreamFrames.delta(agent, "s", id: "b5", stream: 7, text: "t")
            #expect(code(r) == "bad_request")
            r = try agent.publish("s", id: "stream:mine", data: ["text": "hi"])
            #expect(code(r) == "bad_request")
            r = try StreamFrames.delta(agent, "s", id: "stream:d", stream: "x", text: "t")
            #expect(code(r) == "bad_request")
            #expect(try a.expectSilence() == nil, "nothing fanned out")
            // A delta without a stream is a v1 delta, as before.
            #expect(try agent.publish("s", id: "v1", kind: "chat.delta", data: ["text": "plain"]).string("type") == "ack")
            _ = try a.next(type: "event")
            // Three open streams; the fourth open is rate limited, appending to an open one is not.
            for i in 1...3 { #expect(try StreamFrames.delta(agent, "s", id: "o\(i)", stream: "s\(i)", text: "t").string("type") == "ack") }
            r = try StreamFrames.delta(agent, "s", id: "o4", stream: "s4", text: "t")
            #expect(code(r) == "rate_limited" && r.string("ref") == "o4")
            #expect(try StreamFrames.delta(agent, "s", id: "o5", stream: "s1", text: "more").string("type") == "ack")
            // The same stream id from another publisher is another stream (and counts too).
            let other = try await gw.client(.agent, sub: "other", sessions: ["*"])
            #expect(code(try StreamFrames.delta(other, "s", id: "p1", stream: "s1", text: "t")) == "rate_limited")
            #expect(try agent.publish("s", id: "alive").int("seq") == 1)
        }
    }

    @Test func aStreamPastItsSizeIsRefusedAndFinalized() async throws {
        // limits.max_message_bytes 4096: a stream holds at most 3072 bytes of text.
        try await withGateway(settings: ["limits.max_message_bytes": "4096"]) { gw in
            let agent = try await gw.client(.agent, sub: "worker", sessions: ["*"])
            let a = try await gw.client(.user, sub: "alice", sessions: ["s"])
            _ = try a.join("s")
            let big = String(repeating: "é", count: 1_000)  // 2000 bytes
            #expect(try StreamFrames.delta(agent, "s", id: "d1", stream: "big", text: big).string("type") == "ack")
            _ = try a.next(type: "event")
            let r = try StreamFrames.delta(agent, "s", id: "d2", stream: "big", text: big)
            #expect(r.string("type") == "error" && r.string("code") == "too_large" && r.string("ref") == "d2")
            let finalized = try a.next(type: "event", timeout: .seconds(5))
            #expect(finalized.string("id") == "stream:big" && finalized.int("seq") == 1)
            #expect(StreamFrames.data(finalized)["text"] as? String == big)
            #expect(StreamFrames.data(finalized)["status"] as? String == "interrupted")
            // A first delta already over the cap opens nothing.
            let huge = String(repeating: "a", count: 3_073)
            #expect(try StreamFrames.delta(agent, "s", id: "d3", stream: "huge", text: huge).string("code") == "too_large")
            let b = try await gw.client(.user, sub: "bob", sessions: ["s"])
            _ = try b.join("s")
            #expect(try b.expectSilence() == nil, "no snapshot: nothing is open")
            #expect(try agent.publish("s", id: "alive").int("seq") == 2)
        }
    }
}

/// Cluster mode (docs/scaling.md, "Ephemeral events and token streams across nodes"): two nodes on one real
/// `redis-server`. Runs in the cluster pass of scripts/test.sh (the name matches `ClusterTests`).
@Suite("Token streams across cluster nodes", .serialized, .timeLimit(.minutes(5)))
struct TokenStreamClusterTests {
    @Test func ephemeralEventsAndDeltasCrossNodesOnce() async throws {
        try await withRedis { redis in
            try await ClusterTests.withNodes(2, redis: redis) { nodes in
                let agent = try await nodes[0].client(.agent, sub: "worker", sessions: ["*"])
                let here = try await nodes[0].client(.user, sub: "alice", sessions: ["s"])
                let there = try await nodes[1].client(.user, sub: "bob", sessions: ["s"])
                _ = try here.join("s")
                _ = try there.join("s")
                #expect(try agent.publish("s", id: "t1", kind: "typing", data: ["on": true], ephemeral: true).string("type") == "ack")
                try StreamFrames.delta(agent, "s", id: "d1", stream: "a", text: "Hello")
                for peer in [here, there] {
                    let got = try StreamFrames.events(peer, count: 2)
                    #expect(got.map { $0.string("id") } == ["t1", "d1"])
                    #expect(got.allSatisfy { $0.int("seq") == nil })
                    #expect(try peer.expectSilence(for: .milliseconds(500)) == nil, "each once, no echo")
                }
            }
        }
    }

    @Test func aJoinerOnAnotherNodeGetsTheSnapshotThenTheRest() async throws {
        try await withRedis { redis in
            try await ClusterTests.withNodes(2, redis: redis) { nodes in
                let agent = try await nodes[0].client(.agent, sub: "worker", sessions: ["*"])
                _ = try agent.publish("s", id: "q1")
                try StreamFrames.delta(agent, "s", id: "d1", stream: "a", text: "one ")
                try StreamFrames.delta(agent, "s", id: "d2", stream: "a", text: "tw\"o ")
                try await Task.sleep(for: .milliseconds(200))
                let b = try await nodes[1].client(.user, sub: "bob", sessions: ["s"])
                _ = try b.join("s", since: 0)
                #expect(try b.next(type: "event").string("id") == "q1")
                let snapshot = try b.next(type: "event")
                #expect(snapshot.string("id") == "a" && snapshot.string("kind") == "chat.delta")
                #expect(StreamFrames.data(snapshot)["full"] as? String == "one tw\"o ")
                #expect((snapshot["from"] as? [String: Any])?["sub"] as? String == "worker")
                try StreamFrames.delta(agent, "s", id: "d3", stream: "a", text: "three")
                let rest = try b.next(type: "event")
                #expect(rest.string("id") == "d3" && StreamFrames.data(rest)["text"] as? String == "three")
                #expect(try b.expectSilence(for: .milliseconds(500)) == nil)
                // The final message (committed on node A) closes it cluster-wide.
                _ = try agent.publish("s", id: "final", data: ["stream": "a", "text": "one two three"])
                try await Task.sleep(for: .milliseconds(200))
                let c = try await nodes[1].client(.user, sub: "carol", sessions: ["s"])
                _ = try c.join("s", since: 0)
                #expect(try StreamFrames.events(c, count: 2).map { $0.string("id") } == ["q1", "final"])
                #expect(try c.expectSilence(for: .milliseconds(500)) == nil, "no snapshot after the final message")
                // A sub with spaces and colons: the stream's Redis field and push are length-prefixed.
                let odd = try await nodes[0].client(.agent, sub: "team:a b", sessions: ["*"])
                try StreamFrames.delta(odd, "s", id: "o1", stream: "x:1", text: "odd ")
                try await Task.sleep(for: .milliseconds(200))
                let d = try await nodes[1].client(.user, sub: "dave", sessions: ["s"])
                _ = try d.join("s")
                let oddSnapshot = try d.next(type: "event")
                #expect((oddSnapshot["from"] as? [String: Any])?["sub"] as? String == "team:a b")
                #expect(StreamFrames.data(oddSnapshot)["full"] as? String == "odd ")
                try StreamFrames.delta(odd, "s", id: "o2", stream: "x:1", text: "sub")
                #expect(StreamFrames.data(try d.next(type: "event"))["text"] as? String == "sub")
                #expect(try d.expectSilence(for: .milliseconds(500)) == nil)
            }
        }
    }

    @Test func anIdleStreamIsFinalizedOnceClusterWide() async throws {
        try await withRedis { redis in
            try await ClusterTests.withNodes(2, redis: redis, extra: ["streams.idle_timeout_seconds": "1"]) { nodes in
                let agent = try await nodes[0].client(.agent, sub: "worker", sessions: ["*"])
                let a = try await nodes[0].client(.user, sub: "alice", sessions: ["s"])
                let b = try await nodes[1].client(.user, sub: "bob", sessions: ["s"])
                _ = try a.join("s")
                _ = try b.join("s")
                try StreamFrames.delta(agent, "s", id: "d1", stream: "z", text: "cut ")
                try StreamFrames.delta(agent, "s", id: "d2", stream: "z", text: "short")
                agent.close()
                for peer in [a, b] {
                    _ = try StreamFrames.events(peer, count: 2)
                    let finalized = try peer.next(type: "event", timeout: .seconds(8))
                    #expect(finalized.string("id") == "stream:z" && finalized.int("seq") == 1)
                    #expect(StreamFrames.data(finalized)["text"] as? String == "cut short")
                    #expect(StreamFrames.data(finalized)["status"] as? String == "interrupted")
                }
                #expect(try b.expectSilence(for: .milliseconds(2_500)) == nil, "finalized once")
                let reader = try await nodes[1].client(.user, sub: "carol", sessions: ["s"])
                let events = try StreamFrames.transcript(reader, "s")
                #expect(events.map { $0.string("id") } == ["stream:z"])
                #expect(try reader.expectSilence() == nil, "no snapshot of a finalized stream")
            }
        }
    }

    /// The publishing node is killed (SIGKILL, a child process) mid-stream: the stream lives in Redis, and the
    /// surviving node finalizes it, once, with the text its agent had streamed.
    @Test func aStreamSurvivesItsNodesCrashAndIsFinalizedByAnother() async throws {
        try await withRedis { redis in
            let prefix = "k" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
            var env = ClusterTests.environment(redis, node: "x", prefix: prefix)  // withNodes' node is "a"
            env["GATEWAY_STREAMS_IDLE_TIMEOUT_SECONDS"] = "1"
            let child = try GatewayUnderTest.launch(environment: env)
            defer { child.remove() }
            try await ClusterTests.withNodes(1, redis: redis, prefix: prefix, extra: ["streams.idle_timeout_seconds": "1"]) { nodes in
                let b = try await nodes[0].client(.user, sub: "bob", sessions: ["s"])
                _ = try b.join("s")
                let agent = try await child.client(.agent, sub: "worker", sessions: ["*"])
                try StreamFrames.delta(agent, "s", id: "d1", stream: "c", text: "before ")
                try StreamFrames.delta(agent, "s", id: "d2", stream: "c", text: "the crash")
                _ = try StreamFrames.events(b, count: 2)
                try child.kill()
                let finalized = try b.next(type: "event", timeout: .seconds(8))
                #expect(finalized.string("id") == "stream:c" && finalized.int("seq") == 1)
                #expect((finalized["from"] as? [String: Any])?["sub"] as? String == "worker")
                #expect(StreamFrames.data(finalized)["text"] as? String == "before the crash")
                #expect(try b.expectSilence(for: .milliseconds(2_500)) == nil, "finalized once")
            }
        }
    }
}
