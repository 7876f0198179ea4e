import Foundation
import GatewayConfig
import GatewayCore
import Logging
import Synchronization
import TranscriptLog
import GatewayAuth
import GatewayClient
import GatewayTesting
import Testing

/// HTTP endpoints, TLS, listeners, backpressure, restarts and shutdown.
@Suite("Gateway operations", .timeLimit(.minutes(3)))
struct OperationsTests {
    /// `storage.commit_window_us`: publishes that trickle in during one window share one storage batch (one write,
    /// one fsync, one wake-up), and every one of them is still acked with dense seqs. Counted, not timed.
    @Test(arguments: ["never", "interval", "always"])
    func groupCommitWindowGathersATrickle(fsync: String) async throws {
        try await withGateway(settings: ["storage.commit_window_us": "2000000", "storage.fsync": fsync]) { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s1"])
            // This gateway's own count: the Prometheus registry is shared by every gateway of the test process.
            func batches() -> Int { gw.storageBatches }
            _ = try agent.publish("s1", id: "first", kind: "progress")
            let before = batches()
            // Ten publishes 1 ms apart: without the window each is its own batch (10 on an idle machine); with a 2 s
            // window they share one (two if a loaded machine stretches the ten sleeps past the window's end).
            for i in 0..<10 {
                try agent.send(["type": "publish", "session": "s1", "id": "t\(i)", "kind": "progress", "data": ["i": i]])
                usleep(1_000)  // a thread sleep: Task.sleep waits for a free pool thread, seconds when tests run in parallel
            }
            var seqs: [Int] = []
            while seqs.count < 10 {
                let r = try agent.next()
                if r.string("type") == "ack", let seq = r.int("seq") { seqs.append(seq) }
            }
            #expect(seqs == Array(2...11))
            let used = batches() - before
            #expect(used >= 1 && used <= 3, "10 publishes within ~10 ms took \(used) storage batches")
        }
    }

    @Test func httpEndpoints() async throws {
        try await withGateway { gw in
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/healthz").status == 200)
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/readyz").status == 200)
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/nope").status == 404)
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/v1/ws").status != 200)

            let agent = try await gw.client(.agent, sub: "w", sessions: ["s1"])
            let user = try await gw.client(.user, sub: "u", sessions: ["s1"])
            _ = try user.join("s1")
            _ = try agent.publish("s1", id: "1", kind: "progress")
            _ = try user.next(type: "event")

            let metrics = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/metrics")
            #expect(metrics.status == 200)
            let text = String(decoding: metrics.body, as: UTF8.self)
            for name in ["gateway_connections", "gateway_events_in_total", "gateway_events_out_total", "gateway_acks_total",
                         "gateway_errors_total", "gateway_fsync_batch_seconds", "gateway_outbound_queue_bytes",
                         "gateway_slow_consumer_closes_total", "gateway_joined_subscriptions"] {
                #expect(text.contains(name), "metrics lack \(name)")
            }
            #expect(text.contains(#"gateway_connections{role="agent"} 1"#))

            // Operators' listing.
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/v1/sessions").status == 401)
            let userToken = try await gw.token(.user, sub: "u", sessions: ["s1"])
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/v1/sessions", headers: [("Authorization", "Bearer \(userToken)")]).status == 403)
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/v1/sessions", headers: [("Authorization", "Bearer garbage")]).status == 401)
            let opToken = try await gw.token(.operator, sub: "ops")
            let listing = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/v1/sessions", headers: [("Authorization", "Bearer \(opToken)")])
            #expect(listing.status == 200)
            let json = try JSONSerialization.jsonObject(with: Data(listing.body)) as? [String: Any]
            let sessions = json?["sessions"] as? [[String: Any]] ?? []
            #expect(sessions.count == 1)
            #expect(sessions.first?["session"] as? String == "s1")
            #expect(sessions.first?["head"] as? Int == 1)
            #expect((sessions.first?["subscribers"] as? [String: Any])?["user"] as? Int == 1)
        }
    }

    @Test func servesTheBrowserClientAndConsole() async throws {
        // The repository's clients/web, found from this file (symlinks resolved), whatever the working directory.
        let repo = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        try await withGateway(settings: ["web.root": repo.path + "/clients/web"]) { gw in
            let js = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/client/v1/gateway-client.js")
            #expect(js.status == 200)
            #expect(js.headers["content-type"]?.hasPrefix("text/javascript") == true)
            #expect(String(decoding: js.body, as: UTF8.self).contains("export"))
            let dir = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/console")
            #expect(dir.status == 301)
            #expect(dir.headers["location"] == "/console/")
            let page = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/console/")
            #expect(page.status == 200)
            #expect(page.headers["content-type"]?.hasPrefix("text/html") == true)
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/console/../Package.swift").status == 404)
        }
    }

    @Test func joinErrorsNameTheirSession() async throws {
        try await withGateway { gw in
            let user = try await gw.client(.user, sub: "u", sessions: ["mine"])
            try user.send(["type": "join", "session": "theirs"])
            let e = try user.next()
            #expect(e.string("code") == "forbidden")
            #expect(e.string("session") == "theirs")
            try user.send(["type": "leave", "session": "never"])
            #expect(try user.next().string("session") == "never")
        }
    }

    @Test func refusesH2cAndOtherUpgrades() async throws {
        try await withGateway { gw in
            for upgrade in ["h2c", "foo"] {
                let raw = "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: \(upgrade)\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
                do {
                    let r = try RawHTTP.request(host: "127.0.0.1", port: gw.port, raw: raw)
                    #expect(r.status != 101, "upgrade \(upgrade) must not switch protocols")
                } catch let e as GatewayClientError {
                    // Refusing may also mean closing the connection; hanging until the client's timeout is not.
                    #expect(!e.isTimeout, "the gateway neither answered nor closed for upgrade \(upgrade): \(e)")
                }
            }
            // Still serving.
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/healthz").status == 200)
        }
    }

    @Test func originAllowList() async throws {
        try await withGateway(settings: ["origins.allow_list": "https://app.samokoder.test"]) { gw in
            do {
                _ = try WebSocketClient.connect(url: gw.url, headers: [("Origin", "https://evil.test")])
                Issue.record("a foreign origin was accepted")
            } catch let e as GatewayClientError {
                #expect(e.httpStatus == 403)
            }
            do {
                _ = try WebSocketClient.connect(url: gw.url, headers: [("Origin", "https://app.samokoder.test.evil.test")])
                Issue.record("a suffix-trick origin was accepted")
            } catch let e as GatewayClientError {
                #expect(e.httpStatus == 403)
            }
            let ok = try WebSocketClient.connect(url: gw.url, headers: [("Origin", "https://app.samokoder.test")])
            ok.close()
        }
    }

    @Test func wssEndToEnd() async throws {
        let certDir = TestDirs.make("tls")
        let cert = try TestCertificates.generate(in: certDir)
        try await withGateway(tlsDir: certDir) { gw in
            let tls = TLSOptions.verifying(caFile: cert.certificatePath)
            let user = try await gw.client(.user, sub: "u", sessions: ["s"], tlsOptions: tls)
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"], tlsOptions: tls)
            _ = try user.join("s")
            for i in 1...20 { _ = try agent.publish("s", id: "e\(i)", kind: "progress", data: ["i": i]) }
            for i in 1...20 { #expect(try user.next(type: "event").int("seq") == i) }
            // HTTP/2 via ALPN is not offered: a client asking only for h2 fails or gets http/1.1.
            let r = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/healthz", tls: tls)
            #expect(r.status == 200)
            // An h2-only ALPN offer never selects h2 (lws 4.1.6's HTTP/2 code has unpatched CVEs).
            if let h2 = try? WebSocketClient.connect(url: gw.url, tls: TLSOptions.verifying(caFile: cert.certificatePath, alpn: ["h2"])) {
                #expect(h2.negotiatedALPN != "h2")
                h2.close()
            }
            user.close()
            agent.close()
        }
    }

    @Test func bindsExactlyTheConfiguredAddress() async throws {
        try await withGateway { gw in
            let out = try Shell.run("/usr/bin/ss", ["-ltnH"])
            let lines = out.split(separator: "\n").filter { $0.contains(":\(gw.port) ") || $0.hasSuffix(":\(gw.port)") }
            #expect(!lines.isEmpty, "ss shows no listener on \(gw.port): \(out)")
            for line in lines {
                #expect(line.contains("127.0.0.1:\(gw.port)"), "listener not bound to 127.0.0.1 only: \(line)")
            }
        }
    }

    /// Publishes `count` durable events of `blob` to session `s` in batches of 10, each batch acked and read by
    /// `reader` before the next (so the reader keeps up and only non-reading subscribers fall behind); `afterBatch`
    /// runs after each. Returns the last seq `reader` got.
    static func publishPaced(
        _ agent: Peer, reader: Peer, count: Int, blob: String, afterBatch: () -> Void = {}
    ) throws -> Int {
        var last = 0
        for batch in stride(from: 1, through: count, by: 10) {
            for i in batch..<(batch + 10) {
                try agent.send(["type": "publish", "session": "s", "id": "b\(i)", "kind": "progress", "data": ["pad": blob]])
            }
            while (try agent.next(type: "ack")).int("seq") ?? 0 < batch + 9 {}
            while last < batch + 9 { last = try reader.next(type: "event").int("seq") ?? last }
            afterBatch()
        }
        return last
    }

    @Test func slowConsumerIsClosed4009AndOthersContinue() async throws {
        try await withGateway(settings: [
            "limits.outbound_buffer_bytes": "131072", "limits.max_message_bytes": "16384", "storage.fsync": "never",
        ]) { gw in
            var options = WebSocketClientOptions()
            options.receiveBufferSize = 4096
            let token = try await gw.token(.user, sub: "slow", sessions: ["s"])
            let slowWS = try WebSocketClient.connect(url: gw.url, options: options)
            let slow = Peer(slowWS)
            try slow.send(["type": "hello", "token": token])
            _ = try slow.next(type: "welcome")
            _ = try slow.join("s")
            let fast = try await gw.client(.user, sub: "fast", sessions: ["s"])
            _ = try fast.join("s")
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            let blob = String(repeating: "y", count: 4000)
            // The slow client stops reading; the fast one keeps up. 6 MB in all: more than the slow client's
            // outbound cap plus what the kernel buffers on loopback.
            let total = 1500
            let last = try Self.publishPaced(agent, reader: fast, count: total, blob: blob)
            #expect(last == total)
            // Now read the slow one: it must end with 4009.
            var code: UInt16? = nil
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                do {
                    let m = try slowWS.receive(timeout: .seconds(2))
                    if case .close(let c, _) = m { code = c; break }
                } catch { break }
            }
            #expect(code == 4009)
        }
    }

    /// G15 (issue 15): the queues together are bounded by `limits.total_outbound_bytes`. Three subscribers stop
    /// reading; once their queues together pass the budget (each still under its own 1 MiB cap), the largest is
    /// closed 4009 first, the total falls back under the budget, and a subscriber that reads gets every event.
    @Test func totalOutboundBudgetClosesTheLargestQueueFirst() async throws {
        try await withGateway(settings: [
            "limits.outbound_buffer_bytes": "1048576", "limits.total_outbound_bytes": "1048576",
            "limits.max_message_bytes": "16384", "storage.fsync": "never",
        ]) { gw in
            var options = WebSocketClientOptions()
            options.receiveBufferSize = 4096
            var slow: [(Peer, WebSocketClient)] = []
            for i in 0..<3 {
                let token = try await gw.token(.user, sub: "slow\(i)", sessions: ["s"])
                let ws = try WebSocketClient.connect(url: gw.url, options: options)
                let p = Peer(ws)
                try p.send(["type": "hello", "token": token])
                _ = try p.next(type: "welcome")
                _ = try p.join("s")
                slow.append((p, ws))
            }
            let fast = try await gw.client(.user, sub: "fast", sessions: ["s"])
            _ = try fast.join("s")
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            let blob = String(repeating: "y", count: 4000)
            // 3 MB in all: far past what the three queues may hold together (1 MiB), less than each one's own cap
            // plus the kernel's loopback buffers would let one queue reach alone.
            let total = 750
            var maxQueued = 0.0
            let last = try Self.publishPaced(agent, reader: fast, count: total, blob: blob) {
                maxQueued = max(maxQueued, Probe.metric(gw.port, "gateway_outbound_queue_bytes") ?? 0)
            }
            #expect(last == total)
            let budgetCloses = Probe.metric(gw.port, "gateway_outbound_budget_closes_total") ?? 0
            #expect(budgetCloses >= 1, "the budget closed the largest queue")
            #expect((Probe.metric(gw.port, "gateway_slow_consumer_closes_total") ?? 0) == 0, "no queue reached its own cap")
            // Sampled on the housekeeping tick: never far above the budget (one frame over it at most, then shed).
            #expect(maxQueued <= 1_048_576 + 16_384, "queued \(maxQueued) bytes in all")
            var closed4009 = 0
            for (_, ws) in slow {
                let deadline = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < deadline {
                    do {
                        if case .close(let c, _) = try ws.receive(timeout: .seconds(2)) {
                            if c == 4009 { closed4009 += 1 }
                            break
                        }
                    } catch { break }
                }
            }
            #expect(closed4009 >= 1 && Double(closed4009) == budgetCloses, "\(closed4009) closed 4009, \(budgetCloses) by the budget")
        }
    }

    @Test func joinDuringFastStreamIsGapless() async throws {
        try await withGateway { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            let total = 400
            let sent = Atomic<Int>(0)
            // A paced stream (about 1 ms per event), so that the join below lands in the middle of it.
            let publisher = Task.detached {
                for i in 1...total {
                    try agent.send(["type": "publish", "session": "s", "id": "f\(i)", "kind": "progress", "data": ["i": i]])
                    sent.store(i, ordering: .relaxed)
                    try await Task.sleep(for: .milliseconds(1))
                }
            }
            // Join with since=0 while the stream runs: after some events, well before the last.
            let deadline = ContinuousClock.now + .seconds(10)
            while sent.load(ordering: .relaxed) < 40 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(2))
            }
            // And until the first commits were acked (a loaded machine's fsync can lag the sends by a lot).
            let user = try await gw.client(.user, sub: "u", sessions: ["s"])
            while ContinuousClock.now < deadline {
                try user.send(["type": "history", "session": "s", "limit": 1])
                if (try user.next(type: "history").int("head") ?? 0) > 0 { break }
                try await Task.sleep(for: .milliseconds(5))
            }
            let head = try user.join("s", since: 0).int("head") ?? -1
            #expect(head > 0 && head < total, "the join must land during the stream (head \(head) of \(total))")
            var expected = 1
            while expected <= total {
                let ev = try user.next(type: "event", timeout: .seconds(10))
                #expect(ev.int("seq") == expected, "gap or duplicate at \(expected)")
                if ev.int("seq") != expected { break }
                expected += 1
            }
            try await publisher.value
            #expect(try user.expectSilence() == nil)
        }
    }

    @Test func restartResumesWithSameEpochAndDedupe() async throws {
        let dir = TestDirs.make("restart")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let epoch = try await withGateway(dataDir: dir) { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            for i in 1...5 { _ = try agent.publish("s", id: "r\(i)") }
            let user = try await gw.client(.user, sub: "u", sessions: ["s"])
            return try user.join("s").string("epoch")
        }
        try await withGateway(dataDir: dir) { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            let dup = try agent.publish("s", id: "r3")
            #expect(dup.int("seq") == 3)
            #expect(dup["duplicate"] as? Bool == true)
            #expect(try agent.publish("s", id: "r6").int("seq") == 6)
            let again = try await gw.client(.user, sub: "u", sessions: ["s"])
            let joined = try again.join("s", since: 2, epoch: epoch)
            #expect(joined["reset"] == nil)
            #expect(joined.string("epoch") == epoch)
            for i in 3...6 { #expect(try again.next(type: "event").int("seq") == i) }
        }
    }
}

enum Shell {
    static func run(_ path: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

/// A file layer that behaves like POSIX until told to fail fdatasync (every one, or the next few), ftruncate or pread
/// with EIO (reliability.md T7 at the gateway level).
final class FlakySyncIO: FileIO, @unchecked Sendable {
    // @unchecked Sendable: the switches are Atomics; the rest is the stateless POSIX layer.
    let posix = PosixFileIO()
    let failSync = Atomic<Bool>(false)
    /// Fail this many of the next fdatasyncs (then work again).
    let failNextSyncs = Atomic<Int>(0)
    let failTruncate = Atomic<Bool>(false)
    /// Fail every pread (transcript reads: replay, history) with EIO.
    let failRead = Atomic<Bool>(false)
    func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 { try posix.open(path, flags: flags, mode: mode) }
    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, offset: Int64) throws(FileIOError) -> Int { try posix.pwrite(fd, bytes, offset: offset) }
    func pread(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(FileIOError) -> Int {
        if failRead.load(ordering: .relaxed) { throw FileIOError(errno: EIO) }
        return try posix.pread(fd, buffer, offset: offset)
    }
    func fdatasync(_ fd: Int32) throws(FileIOError) {
        if failSync.load(ordering: .relaxed) { throw FileIOError(errno: EIO) }
        if failNextSyncs.load(ordering: .relaxed) > 0 {
            failNextSyncs.subtract(1, ordering: .relaxed)
            throw FileIOError(errno: EIO)
        }
        try posix.fdatasync(fd)
    }
    func ftruncate(_ fd: Int32, length: Int64) throws(FileIOError) {
        if failTruncate.load(ordering: .relaxed) { throw FileIOError(errno: EIO) }
        try posix.ftruncate(fd, length: length)
    }
    func fileSize(_ fd: Int32) throws(FileIOError) -> Int64 { try posix.fileSize(fd) }
    func fsyncDirectory(_ path: String) throws(FileIOError) { try posix.fsyncDirectory(path) }
    func unlink(_ path: String) throws(FileIOError) { try posix.unlink(path) }
    func rename(_ from: String, to: String) throws(FileIOError) { try posix.rename(from, to: to) }
    func makeDirectory(_ path: String) throws(FileIOError) { try posix.makeDirectory(path) }
    func listDirectory(_ path: String) throws(FileIOError) -> [String] { try posix.listDirectory(path) }
    func lockExclusive(_ fd: Int32) throws(FileIOError) { try posix.lockExclusive(fd) }
    func close(_ fd: Int32) { posix.close(fd) }
}

@Suite("Gateway storage failure", .timeLimit(.minutes(1)))
struct StorageFailureTests {
    /// G7: a failed fsync is never retried and reported durable. The batch is cut back off the file (truncate,
    /// fdatasync), then refused (`unavailable` "not stored", no ack), and the gateway drains and stops on its own
    /// with `fatalReason` set (the executable exits 70 so the supervisor restarts it; open re-verifies the log).
    /// After the restart the acked event is there and the refused one is not: "not stored" was true.
    @Test func failedFsyncRefusesTheBatchAndStopsTheGateway() async throws {
        let dir = TestDirs.make("eio")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = FlakySyncIO()
        try await withGateway(dataDir: dir, fileIO: io) { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            #expect(try agent.publish("s", id: "ok-1").int("seq") == 1)
            io.failNextSyncs.store(1, ordering: .relaxed)  // the batch's fdatasync; the cut-back's succeeds
            let refused = try agent.publish("s", id: "lost-1")
            #expect(refused.string("code") == "unavailable", "\(refused)")
            #expect(refused.string("message")?.contains("not stored") == true, "\(refused)")
            #expect(refused["seq"] == nil)
            // The gateway stops by itself.
            #expect(await gw.stoppedOnItsOwn(within: .seconds(20)))
            #expect(gw.fatalReason != nil)
            try await gw.stop(allowingFailure: true)
        }
        try await withGateway(dataDir: dir) { again in
            let reader = try await again.client(.operator, sub: "ops")
            #expect(try reader.join("s", since: 0).int("head") == 1, "the refused event is not in the log")
            #expect(try reader.next(type: "event").string("id") == "ok-1")
            #expect(try reader.expectSilence() == nil)
            // A retry of the refused id is a new event, not a duplicate: it was never stored.
            let agent = try await again.client(.agent, sub: "w", sessions: ["s"])
            let retry = try agent.publish("s", id: "lost-1")
            #expect(retry.int("seq") == 2 && retry["duplicate"] == nil, "\(retry)")
        }
    }

    /// A failed fsync whose cut-back fails too (here the truncate): the batch may be in the file, so its publisher
    /// is told nothing (neither ack nor `unavailable`); the gateway drains and stops fatally (exit 70). The reopen
    /// decides, and a retry with the same id gets the truth (here: stored, `duplicate`).
    @Test func failedCutBackAnswersNothingAndStopsTheGateway() async throws {
        let dir = TestDirs.make("eio-cut")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = FlakySyncIO()
        try await withGateway(dataDir: dir, settings: ["shutdown.deadline_seconds": "4"], fileIO: io) { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            #expect(try agent.publish("s", id: "ok-1").int("seq") == 1)
            io.failNextSyncs.store(1, ordering: .relaxed)
            io.failTruncate.store(true, ordering: .relaxed)
            try agent.send(["type": "publish", "session": "s", "id": "unsure-1", "kind": "chat.message", "data": ["text": "hi"]])
            #expect(await gw.stoppedOnItsOwn(within: .seconds(20)))
            #expect(gw.fatalReason?.contains("outcomeUnknown") == true, "\(String(describing: gw.fatalReason))")
            // Nothing about unsure-1 reached the client before the drain closed it.
            var answers: [[String: Any]] = []
            while let f = try? agent.next(timeout: .seconds(2)) { answers.append(f) }
            #expect(!answers.contains { $0.string("ref") == "unsure-1" || $0.string("id") == "unsure-1" }, "\(answers)")
            try await gw.stop(allowingFailure: true)
        }
        try await withGateway(dataDir: dir) { again in
            let agent = try await again.client(.agent, sub: "w", sessions: ["s"])
            let retry = try agent.publish("s", id: "unsure-1")
            #expect(retry.int("seq") == 2 && retry["duplicate"] as? Bool == true, "\(retry)")
        }
    }

    /// Under `fsync: interval` acks go out before the sync: a failed interval sync is fatal (never only logged). The
    /// gateway answers /readyz 503 from then on, drains and stops on its own with `fatalReason` set (exit 70).
    @Test func failedIntervalSyncStopsTheGateway() async throws {
        let dir = TestDirs.make("eio-interval")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = FlakySyncIO()
        try await withGateway(
            dataDir: dir, settings: ["storage.fsync": "interval", "storage.fsync_interval_ms": "20"], fileIO: io
        ) { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
            #expect(try agent.publish("s", id: "ok-1").int("seq") == 1)
            io.failSync.store(true, ordering: .relaxed)
            // Acked (interval: the ack precedes the sync), then the sync fails.
            #expect(try agent.publish("s", id: "ok-2").string("type") == "ack")
            #expect(await gw.stoppedOnItsOwn(within: .seconds(20)))
            #expect(gw.fatalReason?.contains("sync failed") == true, "\(String(describing: gw.fatalReason))")
            try await gw.stop(allowingFailure: true)
        }
    }

    /// The final sync when the log closes at shutdown fails: the gateway reports it as fatal (exit 70), not 0.
    @Test func failedFinalSyncIsFatal() async throws {
        let dir = TestDirs.make("eio-close")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = FlakySyncIO()
        let gw = try await GatewayUnderTest.start(
            dataDir: dir, settings: ["storage.fsync": "interval", "storage.fsync_interval_ms": "60000"], fileIO: io)
        let agent = try await gw.client(.agent, sub: "w", sessions: ["s"])
        #expect(try agent.publish("s", id: "pending-sync").string("type") == "ack")
        io.failSync.store(true, ordering: .relaxed)
        agent.close()
        try? await gw.stop(allowingFailure: true)
        gw.remove()
        #expect(gw.fatalReason?.contains("close failed") == true, "\(String(describing: gw.fatalReason))")
    }
}

@Suite("Storage inbox budget", .timeLimit(.minutes(1)))
struct StorageInboxBudgetTests {
    /// `limits.storage_inbox_bytes`: publishes beyond the byte budget of the storage inbox are refused with
    /// `unavailable` (nothing stored, the connection lives, `/readyz` stays 200); the budget frees as batches are
    /// answered. A long commit window holds the first batch in the inbox so that the budget fills deterministically.
    @Test func publishesOverTheByteBudgetAreRefusedAndTheConnectionLives() async throws {
        let settings = [
            "limits.max_message_bytes": "262144", "limits.storage_inbox_bytes": "524288",
            "storage.commit_window_us": "2000000",
        ]
        try await withGateway(settings: settings) { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["big"])
            #expect(try agent.publish("big", id: "warm").int("seq") == 1)  // commits at once; the window starts
            let pad = String(repeating: "x", count: 200_000)
            for i in 1...6 {
                try agent.send(["type": "publish", "session": "big", "id": "b\(i)", "kind": "progress", "data": ["pad": pad]])
            }
            var acked: [String: Int] = [:]
            var refused: [String: String] = [:]
            while acked.count + refused.count < 6 {
                let f = try agent.next(timeout: .seconds(10))
                if f.string("type") == "ack", let id = f.string("id") { acked[id] = f.int("seq") }
                if f.string("type") == "error", let ref = f.string("ref") {
                    #expect(f.string("code") == "unavailable", "\(f)")
                    refused[ref] = f.string("message")
                    if refused.count == 1 {
                        // Refused by the budget, not by the disk: still ready.
                        #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/readyz").status == 200)
                    }
                }
            }
            // 2 x ~200 KB fit in 512 KiB, the third would not.
            #expect(acked == ["b1": 2, "b2": 3], "\(acked)")
            #expect(Set(refused.keys) == ["b3", "b4", "b5", "b6"])
            #expect(refused.values.allSatisfy { $0 == "storage queue over its byte budget (limits.storage_inbox_bytes); retry" })
            // The connection lives, the budget is free again, and a refused id was never stored.
            let retry = try agent.publish("big", id: "b3", kind: "progress", data: ["pad": pad])
            #expect(retry.int("seq") == 4 && retry["duplicate"] == nil, "\(retry)")
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/readyz").status == 200)
        }
    }
}
