import Foundation
import GatewayAuth
import GatewayClient
import GatewayTesting
import Glibc
import Testing
import TranscriptLog

// Fault tests at the gateway level (../shared/reliability.md T1, T6, T9, T10, T11, T13; G1, G2, G6, G8, G9):
// the real `gateway` binary killed with SIGKILL under load, a data directory on a full tmpfs, restarts, and
// resume races. The CI profile is bounded (well under a minute); `GATEWAY_LONG_TESTS=1` runs the long variants
// (docs/reliability.md has the exact commands). Log-level faults (torn tails, bit flips, EIO, power cuts, the
// randomized model) are in Tests/TranscriptLogTests.

@Suite("Gateway faults (reliability.md T1, T4, T6, T9-T11, T13)", .serialized, .timeLimit(.minutes(20)))
struct GatewayFaultTests {
    static let long = ProcessInfo.processInfo.environment["GATEWAY_LONG_TESTS"] == "1"

    static let canMountTmpfs: Bool = {
        guard geteuid() == 0 else { return false }
        let dir = TestDirs.make("mount-probe")
        defer { rmdir(dir) }
        guard mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0 else { return false }
        umount2(dir, 0)
        return true
    }()

    // MARK: T1 kill -9 under publish load

    /// T1 (G1, G2, G8): the child gateway is killed with SIGKILL at a random 0-400 ms point while one agent pipelines
    /// publishes (64 in flight) to three sessions; after each restart the agent first re-sends every publish it
    /// has no ack for, with the same id. N rounds (10; 60 with GATEWAY_LONG_TESTS=1). At the end: seqs are dense
    /// 1..head in every session, every acked event is present exactly once at its acked seq with byte-identical
    /// data, and every record in the log is one of ours, whole (never half an event).
    @Test func t01_killNineUnderPublishLoad() async throws {
        let rounds = Self.long ? 60 : 10
        let dir = TestDirs.make("fault-kill9")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sessions = ["k0", "k1", "k2"]
        var sent: [String: (session: String, data: String)] = [:]
        var acked: [String: (session: String, seq: Int)] = [:]
        var pending: [String] = []  // sent, never acked, oldest first
        var ackOrder: [String] = []  // first acks, in order
        var nextNumber = 0
        var duplicateAcks = 0
        var killedWithInFlight = 0
        let started = ContinuousClock.now
        let token = try await TokenMinter.hs256(
            secret: GatewayEnvironment.secret, sub: "crash-agent", role: .agent, sessions: sessions, tier: nil, ttlSeconds: 3600)

        func frame(_ id: String) -> [UInt8] {
            let s = sent[id]!
            return Frames.text(#"{"type":"publish","session":"\#(s.session)","id":"\#(id)","kind":"progress","data":\#(s.data)}"#)
        }
        func record(_ reply: [String: Any]) {
            guard reply.string("type") == "ack", let id = reply.string("id"), let seq = reply.int("seq") else {
                Issue.record("unexpected reply \(reply)")
                return
            }
            if let before = acked[id] {
                #expect(before.seq == seq && before.session == reply.string("session"), "\(id) acked twice with different seqs")
            }
            if reply["duplicate"] as? Bool == true { duplicateAcks += 1 }
            if acked[id] == nil { ackOrder.append(id) }
            acked[id] = (reply.string("session") ?? "", seq)
        }

        for round in 0..<rounds {
            let child = try GatewayUnderTest.launch(dataDir: dir, environment: ["GATEWAY_LOG_LEVEL": "warning"])
            let killAfterMs = UInt32.random(in: 0...400)
            let killer = BackgroundThread {
                usleep(killAfterMs * 1000)
                try? child.kill()
            }
            var retry = pending
            var outstanding = Set<String>()
            do {
                let agent = Peer(try WebSocketClient.connect(url: child.url))
                try agent.send(["type": "hello", "token": token])
                _ = try agent.next(type: "welcome")
                // Once per round: an id acked in an earlier round gets its original seq back. (Only recent ones: the
                // dedupe window is the last 10,000 ids of each session; older ids are new events by contract.)
                if let old = ackOrder.suffix(3000).randomElement() {
                    try agent.ws.sendRaw(frame(old))
                    let r = try agent.next()
                    #expect(r["duplicate"] as? Bool == true && r.int("seq") == acked[old]?.seq, "re-publish of \(old): \(r)")
                }
                while true {
                    var wire: [UInt8] = []
                    while outstanding.count < 64 {
                        let id: String
                        if !retry.isEmpty {
                            id = retry.removeFirst()
                        } else {
                            nextNumber += 1
                            id = "e\(nextNumber)"
                            let pad = String(repeating: String(UnicodeScalar(UInt8(97 + nextNumber % 26))), count: 50 + nextNumber % 150)
                            sent[id] = (sessions[nextNumber % sessions.count], #"{"n":\#(nextNumber),"round":\#(round),"pad":"\#(pad)"}"#)
                        }
                        wire += frame(id)
                        outstanding.insert(id)
                    }
                    try agent.ws.sendRaw(wire)
                    let reply = try agent.next(timeout: .seconds(10))
                    record(reply)
                    if let id = reply.string("id") { outstanding.remove(id) }
                }
            } catch {
                // The gateway died (or was killed before we connected).
            }
            killer.join()
            #expect(child.process?.isRunning == false, "the killer thread killed round \(round)'s gateway")
            try await child.stop()  // nothing to stop after kill(); removes the child's output directory
            child.remove()
            if !outstanding.isEmpty { killedWithInFlight += 1 }
            pending = (retry + outstanding.sorted { Int($0.dropFirst())! < Int($1.dropFirst())! }).filter { acked[$0] == nil }
        }

        // Final start: re-send what is still un-acked, then read every session back.
        try await withGatewayProcess(dataDir: dir, environment: ["GATEWAY_LOG_LEVEL": "warning"]) { child in
            let agent = Peer(try WebSocketClient.connect(url: child.url))
            try agent.send(["type": "hello", "token": token])
            _ = try agent.next(type: "welcome")
            for id in pending {
                try agent.ws.sendRaw(frame(id))
                record(try agent.next())
            }
            #expect(acked.count == sent.count, "every publish is acked after its retries")
            let op = Peer(try WebSocketClient.connect(url: child.url))
            try op.send(["type": "hello", "token": try await TokenMinter.hs256(secret: GatewayEnvironment.secret, sub: "ops", role: .operator, sessions: [], tier: nil, ttlSeconds: 600)])
            _ = try op.next(type: "welcome")
            var total = 0
            for session in sessions {
                let head = try op.join(session, since: 0).int("head") ?? -1
                var ids = Set<String>()
                for expected in 1...max(head, 1) where head > 0 {
                    let text = try Probe.nextText(op)
                    let ev = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
                    #expect(ev.int("seq") == expected, "\(session): seq \(String(describing: ev.int("seq"))) where \(expected) was due")
                    guard let id = ev.string("id"), let original = sent[id] else {
                        Issue.record("\(session) seq \(expected): an event that was never sent: \(text.prefix(200))")
                        continue
                    }
                    #expect(ids.insert(id).inserted, "\(id) stored twice")
                    #expect(original.session == session)
                    #expect(text.hasSuffix(#","data":\#(original.data)}"#), "\(id): data differs")
                    #expect(acked[id]?.seq == expected, "\(id) acked as \(String(describing: acked[id]?.seq)) but stored at \(expected)")
                }
                #expect(ids.count == acked.values.filter { $0.session == session }.count, "\(session): stored = acked")
                total += head
            }
            let seconds = Double(Probe.ms(ContinuousClock.now - started)) / 1000
            Report.line("T1 \(rounds) kill -9 rounds, \(sent.count) events published, \(total) stored = acked, \(duplicateAcks) duplicate acks on retry, \(killedWithInFlight) kills with publishes in flight, \(String(format: "%.1f", seconds)) s")
        }
    }

    // MARK: T9 restart and resume of 50 clients

    /// T9 (G9): 50 clients in 10 sessions, each having read a known prefix (last seq 0-20 of 20), the gateway is
    /// killed with SIGKILL and restarted on the same port; 10 more events per session are published; each client
    /// resumes with `since` = its last seq and the epoch it saw: exactly last+1 ... 30 (replay), then 31 (live).
    @Test func t09_restartAndResumeFiftyClients() async throws {
        let dir = TestDirs.make("fault-resume")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = try FreePort.pick()
        let started = ContinuousClock.now
        let first = try GatewayUnderTest.launch(dataDir: dir, port: port, environment: ["GATEWAY_LOG_LEVEL": "warning"])
        let rooms = (0..<10).map { "room-\($0)" }
        func agent() async throws -> Peer { try await Peer.connect(port: port, role: .agent, sub: "agent", sessions: rooms) }
        func publish(_ a: Peer, seqs: ClosedRange<Int>) throws {
            var wire: [UInt8] = []
            for room in rooms { for n in seqs { wire += Frames.text(#"{"type":"publish","session":"\#(room)","id":"\#(room)-\#(n)","kind":"progress","data":{"n":\#(n)}}"#) } }
            try a.ws.sendRaw(wire)
            for _ in 0..<(rooms.count * seqs.count) { #expect(try a.next(type: "ack")["duplicate"] == nil) }
        }
        struct Client { var sub: String; var room: String; var last: Int; var epoch: String }
        let clients = try await first.use { child -> [Client] in
            try publish(try await agent(), seqs: 1...20)
            var clients: [Client] = []
            var old: [Peer] = []
            for i in 0..<50 {
                let room = rooms[i % rooms.count]
                let p = try await Peer.connect(port: port, role: .user, sub: "user-\(i)", sessions: [room])
                let joined = try p.join(room, since: 0)
                let last = i < 10 ? [0, 20][i % 2] : Int.random(in: 0...20)  // both edges, then random
                for seq in 1...max(1, last) where last > 0 { #expect(try p.next(type: "event").int("seq") == seq) }
                clients.append(Client(sub: "user-\(i)", room: room, last: last, epoch: joined.string("epoch") ?? ""))
                old.append(p)
            }
            try child.kill()
            for p in old { p.close() }
            return clients
        }
        let restartAt = ContinuousClock.now
        let second = try GatewayUnderTest.launch(dataDir: dir, port: port, environment: ["GATEWAY_LOG_LEVEL": "warning"])
        try await second.use { _ in
            let restartMs = Probe.ms(ContinuousClock.now - restartAt)
            let a = try await agent()
            try publish(a, seqs: 21...30)
            var resumed: [Peer] = []
            var replayed = 0
            for c in clients {
                let p = try await Peer.connect(port: port, role: .user, sub: c.sub, sessions: [c.room])
                let j = try p.join(c.room, since: c.last, epoch: c.epoch)
                #expect(j["reset"] == nil && j["trimmed"] == nil && j.string("epoch") == c.epoch && j.int("head") == 30, "\(c.sub): \(j)")
                for seq in (c.last + 1)...30 {
                    let ev = try p.next(type: "event")
                    #expect(ev.int("seq") == seq && ev.string("id") == "\(c.room)-\(seq)", "\(c.sub): got \(String(describing: ev.int("seq"))) for \(seq)")
                    replayed += 1
                }
                resumed.append(p)
            }
            try publish(a, seqs: 31...31)
            for (c, p) in zip(clients, resumed) {
                #expect(try p.next(type: "event").int("seq") == 31, "\(c.sub): the live event follows the replay directly")
            }
            Report.line("T9 50 clients in 10 sessions resumed after kill -9 (restart to listening \(restartMs) ms): \(replayed) events replayed, 0 gaps, 0 duplicates, \(Probe.ms(ContinuousClock.now - started)) ms total")
        }
    }

    // MARK: T10 duplicate publish across restarts

    /// T10 (G8): the same id before and after a SIGKILL restart gets the same seq with `duplicate: true`; ids in
    /// flight at the kill, re-sent after the restart, are stored once whatever happened to them.
    @Test func t10_duplicatePublishAcrossKillNine() async throws {
        let dir = TestDirs.make("fault-dup")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let crashing = try GatewayUnderTest.launch(dataDir: dir, environment: ["GATEWAY_LOG_LEVEL": "warning"])
        try await crashing.use { child in
            let agent = try await Peer.connect(port: child.port, role: .agent, sub: "dup-agent", sessions: ["d"])
            let first = try agent.publish("d", id: "once", kind: "progress", data: ["v": 1])
            #expect(first.int("seq") == 1 && first["duplicate"] == nil)
            let again = try agent.publish("d", id: "once", kind: "progress", data: ["v": "different data, same id"])
            #expect(again.int("seq") == 1 && again["duplicate"] as? Bool == true)
            var wire: [UInt8] = []
            for i in 1...50 { wire += Frames.text(#"{"type":"publish","session":"d","id":"fly-\#(i)","kind":"progress","data":{"i":\#(i)}}"#) }
            try agent.ws.sendRaw(wire)
            usleep(UInt32.random(in: 0...3000))  // kill while the batch is being read, stored or acked
            try child.kill()
        }
        try await withGatewayProcess(dataDir: dir, environment: ["GATEWAY_LOG_LEVEL": "warning"]) { child in
            let agent = try await Peer.connect(port: child.port, role: .agent, sub: "dup-agent", sessions: ["d"])
            let afterRestart = try agent.publish("d", id: "once", kind: "progress", data: ["v": 1])
            #expect(afterRestart.int("seq") == 1 && afterRestart["duplicate"] as? Bool == true, "\(afterRestart)")
            var seqs: [String: Int] = [:]
            var survived = 0
            for i in 1...50 {
                let r = try agent.publish("d", id: "fly-\(i)", kind: "progress", data: ["i": i])
                if r["duplicate"] as? Bool == true { survived += 1 }
                seqs["fly-\(i)"] = r.int("seq")
            }
            for i in 1...50 {
                let r = try agent.publish("d", id: "fly-\(i)", kind: "progress", data: ["i": i])
                #expect(r["duplicate"] as? Bool == true && r.int("seq") == seqs["fly-\(i)"], "fly-\(i): \(r)")
            }
            // Another subject reusing the id is a new event, not someone else's ack.
            let other = try await Peer.connect(port: child.port, role: .agent, sub: "other-agent", sessions: ["d"])
            #expect(try other.publish("d", id: "once", kind: "progress").int("seq") == 52)
            let op = try await Peer.connect(port: child.port, role: .operator, sub: "ops", sessions: [])
            #expect(try op.join("d", since: 0).int("head") == 52)
            var ids: [String] = []
            for _ in 1...52 { ids.append(try op.next(type: "event").string("id") ?? "") }
            #expect(Set(ids.dropLast()).count == 51 && ids.first == "once", "each id stored once")
            Report.line("T10 duplicate across kill -9: same seq; \(survived)/50 in-flight publishes had been stored before the kill, all 50 stored exactly once after retry")
        }
    }

    // MARK: T4 bit flip in the middle

    /// T4 (G3, G5) at the gateway level: one bit flipped in the payload of record 10 of 20. The gateway refuses to
    /// start and names the segment and offset (`storage.skip_damaged_records` off, the default). With the
    /// operator's explicit `skip_damaged_records`, it starts and serves the records around the damage with a
    /// visible gap: the altered record is never served.
    @Test func t04_bitFlipInTheMiddle() async throws {
        let dir = TestDirs.make("fault-flip")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let epoch = try await withGateway(dataDir: dir) { gw in
            let agent = try await gw.client(.agent, sub: "w", sessions: ["m"])
            for i in 1...20 { _ = try agent.publish("m", id: "m\(i)", kind: "progress", data: ["marker": "MARK-\(i)-END"]) }
            return try agent.join("m").string("epoch")
        }
        let segment = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasSuffix(".tlog") })
        let path = dir + "/" + segment
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let marker = Array("MARK-10-END".utf8)
        let at = try #require((0...(bytes.count - marker.count)).first { Array(bytes[$0..<($0 + marker.count)]) == marker })
        bytes[at + 5] ^= 0x01  // "MARK-10-END" -> "MARK-00-END"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            try await withGateway(dataDir: dir) { _ in }
            Issue.record("the gateway started on a log with mid-log damage")
        } catch {
            #expect("\(error)".contains("corrupted") && "\(error)".contains(segment), "start error: \(error)")
        }
        let served = try await withGateway(dataDir: dir, settings: ["storage.skip_damaged_records": "true"]) { gw in
            let op = try await gw.client(.operator, sub: "ops")
            let j = try op.join("m", since: 0)
            #expect(j.int("head") == 20 && j.string("epoch") == epoch, "\(j)")
            var served: [Int] = []
            while let ev = try op.expectSilence(for: .milliseconds(300)) {
                if ev.string("type") != "event" { continue }
                served.append(ev.int("seq") ?? -1)
                let m = (ev["data"] as? [String: Any])?["marker"] as? String
                #expect(m == "MARK-\(ev.int("seq") ?? -1)-END", "altered data served: \(String(describing: m))")
            }
            return served
        }
        #expect(!served.contains(10) && served == served.sorted() && served.count >= 18, "served \(served)")
        Report.line("T4 bit flip in record 10 of 20: start refused naming \(segment); with skip_damaged_records served \(served.count) records, seq 10 never served")
    }

    // MARK: T6 / D1 disk full

    /// T6 (G6, D1): the data directory on a 2 MiB tmpfs (with a 384 KiB ballast file): an agent publishes 3 KB
    /// events until the disk is full. Publishers get `unavailable` and no ack, nothing refused is fanned out, the
    /// gateway stays up, joins and replays of the stored events work; after the ballast is deleted the refused ids
    /// are stored (same ids), a duplicate of an old id gets its seq; after a restart the log verifies clean and
    /// holds exactly the acked events.
    @Test(.enabled(if: canMountTmpfs, "needs root and mount(2) to put the data directory on a 2 MiB tmpfs"))
    func t06_diskFullOnTmpfs() async throws {
        let mnt = TestDirs.make("fault-enospc")
        guard mount("tmpfs", mnt, "tmpfs", 0, "size=2m") == 0 else {
            Issue.record("mount tmpfs failed: errno \(errno)")
            return
        }
        defer {
            umount2(mnt, Int32(MNT_DETACH))
            rmdir(mnt)
        }
        let ballast = mnt + "/ballast"
        try Data(repeating: 0x42, count: 384 * 1024).write(to: URL(fileURLWithPath: ballast))
        let dataDir = mnt + "/data"
        let settings = ["storage.segment_max_bytes": "1048576", "limits.max_message_bytes": "16384"]
        var acked: [String] = []
        var refused: [String] = []
        var firstError = ""
        var resumeMs = 0
        try await withGateway(dataDir: dataDir, settings: settings) { gw in
            let agent = try await gw.client(.agent, sub: "filler", sessions: ["full"])
            let watcher = try await gw.client(.user, sub: "watcher", sessions: ["full"])
            _ = try watcher.join("full")
            let pad = String(repeating: "d", count: 3000)
            var n = 0
            while refused.isEmpty && n < 2000 {
                n += 1
                let r = try agent.publish("full", id: "f\(n)", kind: "progress", data: ["n": n, "pad": pad])
                if r.string("type") == "ack" {
                    #expect(r.int("seq") == acked.count + 1)
                    acked.append("f\(n)")
                } else {
                    #expect(r.string("code") == "unavailable" && r.string("ref") == "f\(n)", "\(r)")
                    firstError = r.string("message") ?? ""
                    refused.append("f\(n)")
                }
            }
            #expect(!refused.isEmpty, "the disk never filled")
            #expect(firstError.contains("diskFull") && firstError.contains("not stored"), "message: \(firstError)")
            // Still full: more refusals, no ack; the gateway is up and serves reads.
            for _ in 0..<5 {
                n += 1
                let r = try agent.publish("full", id: "f\(n)", kind: "progress", data: ["n": n, "pad": pad])
                #expect(r.string("code") == "unavailable", "\(r)")
                refused.append("f\(n)")
            }
            #expect(Probe.healthy(gw.port))
            #expect((Probe.metric(gw.port, "gateway_storage_errors_total") ?? 0) >= 6)
            // Degraded health (G6): alive, but not ready while the log refuses writes.
            let degraded = try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/readyz")
            #expect(degraded.status == 503 && String(decoding: degraded.body, as: UTF8.self).contains("degraded"))
            var seen: [Int] = []
            for _ in 0..<acked.count { seen.append(try watcher.next(type: "event").int("seq") ?? -1) }
            #expect(seen == Array(1...acked.count))
            #expect(try watcher.expectSilence() == nil, "nothing refused was fanned out")
            let reader = try await gw.client(.operator, sub: "reader")
            #expect(try reader.join("full", since: 0).int("head") == acked.count)
            for (i, id) in acked.enumerated() { #expect(try reader.next(type: "event").string("id") == id, "replay at \(i + 1)") }
            let tail = try reader.join("full", since: acked.count - 3)
            #expect(tail["reset"] == nil)
            for i in (acked.count - 2)...acked.count { #expect(try reader.next(type: "event").int("seq") == i) }

            // Space returns: the refused ids are stored now, in order, with the next seqs.
            try FileManager.default.removeItem(atPath: ballast)
            let freedAt = ContinuousClock.now
            for id in refused {
                let r = try agent.publish("full", id: id, kind: "progress", data: ["retry": id])
                #expect(r.string("type") == "ack" && r.int("seq") == acked.count + 1 && r["duplicate"] == nil, "\(id): \(r)")
                acked.append(id)
            }
            resumeMs = Probe.ms(ContinuousClock.now - freedAt)
            #expect(try RawHTTP.get(host: "127.0.0.1", port: gw.port, path: "/readyz").status == 200, "ready again")
            let dup = try agent.publish("full", id: "f1", kind: "progress", data: 0)
            #expect(dup["duplicate"] as? Bool == true && dup.int("seq") == 1)
            for i in (acked.count - refused.count + 1)...acked.count { #expect(try watcher.next(type: "event").int("seq") == i) }
        }

        let report = try TranscriptLog.verify(directory: dataDir)
        #expect(report.damage.isEmpty && report.recovery.truncatedBytes == 0, "verify: \(report)")
        let replayed = try await withGateway(dataDir: dataDir, settings: settings) { gw in
            let after = try await gw.client(.operator, sub: "after")
            #expect(try after.join("full", since: 0).int("head") == acked.count)
            var replayed: [String] = []
            for _ in 0..<acked.count { replayed.append(try after.next(type: "event").string("id") ?? "") }
            return replayed
        }
        #expect(replayed == acked, "the restarted log holds exactly the acked events, in order")
        Report.line("T6 ENOSPC on a 2 MiB tmpfs: \(acked.count - refused.count) events stored before full, \(refused.count) refused with unavailable (\(firstError)), 0 acks lost; writes resumed \(resumeMs) ms after freeing space; restart verified clean with \(acked.count) events")
    }

    // MARK: T11 replay/live race

    /// T11 (G9): three agents publish at full rate (pipelined, fsync always) while readers join with random
    /// `since` values again and again, on fresh connections and as re-joins: every join delivers since+1, since+2,
    /// ... with no gap or duplicate through the replay/live switch-over.
    @Test func t11_replayLiveRace() async throws {
        let perPublisher = Self.long ? 5000 : 1000
        try await withGateway { gw in
            let total = 3 * perPublisher
            var publishers: [Peer] = []
            for i in 0..<3 { publishers.append(try await gw.client(.agent, sub: "racer-\(i)", sessions: ["race"])) }
            let done = Flag()
            let failures = Failures()
            let threads = publishers.enumerated().map { (i, p) in
                BackgroundThread {
                    var outstanding = 0, sentCount = 0
                    do {
                        while sentCount < perPublisher || outstanding > 0 {
                            var wire: [UInt8] = []
                            while outstanding < 32 && sentCount < perPublisher {
                                sentCount += 1
                                outstanding += 1
                                wire += Frames.text(#"{"type":"publish","session":"race","id":"p\#(i)-\#(sentCount)","kind":"progress","data":{"p":\#(i),"n":\#(sentCount)}}"#)
                            }
                            if !wire.isEmpty { try p.ws.sendRaw(wire) }
                            let r = try p.next(timeout: .seconds(20))
                            if r.string("type") != "ack" { failures.add("publisher \(i): \(r)") }
                            outstanding -= 1
                        }
                    } catch { failures.add("publisher \(i): \(error)") }
                }
            }
            let doneWatcher = BackgroundThread {
                for t in threads { t.join() }
                done.set()
            }
            let started = ContinuousClock.now
            var joins = 0, delivered = 0, liveAfterHead = 0
            var reader = try await gw.client(.user, sub: "reader", sessions: ["race"])
            var knownHead = 0
            while !done.isSet || joins < 4 {
                if joins % 3 == 2 {
                    reader.close()
                    reader = try await gw.client(.user, sub: "reader", sessions: ["race"])
                }
                let since = Int.random(in: 0...knownHead)
                try reader.send(["type": "join", "session": "race", "since": since])
                let joined = try reader.next(type: "joined", timeout: .seconds(10))  // frames of the previous subscription are skipped
                #expect(joined["reset"] == nil && joined["trimmed"] == nil)
                let head = joined.int("head") ?? 0
                let target = min(total, max(head, since) + (done.isSet ? 0 : 100))
                var expected = since + 1
                while expected <= target {
                    let ev = try reader.next(timeout: .seconds(10))
                    guard ev.string("type") == "event" else { continue }
                    guard ev.int("seq") == expected else {
                        Issue.record("join \(joins) since \(since) head \(head): got seq \(String(describing: ev.int("seq"))) where \(expected) was due")
                        break
                    }
                    if expected > head { liveAfterHead += 1 }
                    expected += 1
                    delivered += 1
                }
                knownHead = max(knownHead, target)
                joins += 1
            }
            doneWatcher.join()
            #expect(failures.all.isEmpty, "\(failures.all.prefix(5))")
            // A final full read: exactly 1...total, then nothing.
            let last = try await gw.client(.user, sub: "final", sessions: ["race"])
            #expect(try last.join("race", since: 0).int("head") == total)
            for seq in 1...total {
                let ev = try last.next(type: "event")
                if ev.int("seq") != seq { Issue.record("final read: \(String(describing: ev.int("seq"))) at \(seq)"); break }
            }
            #expect(try last.expectSilence() == nil)
            Report.line("T11 \(total) events from 3 pipelined publishers; \(joins) joins with random since delivered \(delivered) events (\(liveAfterHead) live past the join's head), 0 gaps/duplicates, \(Probe.ms(ContinuousClock.now - started)) ms")
        }
    }

    // MARK: T13 epoch and retention

    /// T13 (G2, G9): a log whose oldest segments were removed by retention (head 300, first held F > 1) is served by
    /// the gateway. since older than F → `trimmed`/`first` and replay from F; since > head or a wrong epoch →
    /// `reset` and replay from F; negative, non-integer, non-number or too large since → `bad_request` and nothing
    /// else; a valid since → exactly since+1...head. Never a partial or wrong history. The epoch survives restarts.
    @Test func t13_epochAndRetention() async throws {
        let dir = TestDirs.make("fault-retention")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = TranscriptLogOptions(directory: dir)
        options.fsync = .never
        options.segmentMaxBytes = 64 * 1024
        options.retentionMaxTotalBytes = 3 * 64 * 1024
        let log = try TranscriptLog.open(options)
        let pad = String(repeating: "r", count: 700)
        for start in stride(from: 1, through: 300, by: 10) {
            let batch = (start..<(start + 10)).map { i in
                AppendRequest(session: "t", id: "t\(i)", kind: "progress", sub: "w", role: "agent",
                              timestampMs: Int64(Date().timeIntervalSince1970 * 1000), data: Array(#"{"i":\#(i),"pad":"\#(pad)"}"#.utf8))
            }
            _ = try log.append(batch)
        }
        let removed = try log.applyRetention(nowMs: Int64(Date().timeIntervalSince1970 * 1000))
        let first = Int(log.summary(session: "t")?.firstHeld ?? 0)
        let epoch = log.epoch
        try log.close()
        #expect(removed > 0 && first > 1, "retention removed \(removed) segments, first held \(first)")

        try await withGateway(dataDir: dir) { gw in
            let u = try await gw.client(.user, sub: "u", sessions: ["t", "empty"])
            func expectReplay(from start: Int, _ label: String) throws {
                for seq in start...300 {
                    let ev = try u.next(type: "event")
                    guard ev.int("seq") == seq, ev.string("id") == "t\(seq)" else {
                        Issue.record("\(label): got \(String(describing: ev.int("seq"))) where \(seq) was due")
                        return
                    }
                }
                #expect(try u.expectSilence(for: .milliseconds(150)) == nil, "\(label): nothing after the head")
            }
            var j = try u.join("t", since: 0, epoch: epoch)
            #expect(j["trimmed"] as? Bool == true && j.int("first") == first && j["reset"] == nil && j.int("head") == 300, "\(j)")
            try expectReplay(from: first, "since 0 (pruned)")
            j = try u.join("t", since: first - 1, epoch: epoch)
            #expect(j["trimmed"] == nil && j["reset"] == nil)
            try expectReplay(from: first, "since first-1")
            j = try u.join("t", since: first + 10, epoch: epoch)
            #expect(j["trimmed"] == nil && j["reset"] == nil)
            try expectReplay(from: first + 11, "since first+10")
            j = try u.join("t", since: 300, epoch: epoch)
            #expect(j["trimmed"] == nil && j["reset"] == nil)
            #expect(try u.expectSilence(for: .milliseconds(150)) == nil)
            j = try u.join("t", since: 305, epoch: epoch)
            #expect(j["reset"] as? Bool == true && j["first"] == nil && j["trimmed"] == nil, "\(j)")
            try expectReplay(from: first, "since > head")
            j = try u.join("t", since: 150, epoch: "ffffffffffffffff")
            #expect(j["reset"] as? Bool == true && j.string("epoch") == epoch, "\(j)")
            try expectReplay(from: first, "wrong epoch")
            for bad in ["-1", "-9223372036854775808", "\"150\"", "150.5", "1.5e2", "true", "[150]", "{\"n\":1}", "18446744073709551616", "0x10"] {
                try u.sendRaw(#"{"type":"join","session":"t","since":\#(bad),"epoch":"\#(epoch)"}"#)
                let r = try u.next()
                #expect(r.string("type") == "error" && r.string("code") == "bad_request", "since \(bad): \(r)")
                #expect(try u.expectSilence(for: .milliseconds(100)) == nil, "since \(bad): no joined, no events")
            }
            try u.sendRaw(#"{"type":"join","session":"t","since":null,"epoch":"ffffffffffffffff"}"#)
            j = try u.next()
            #expect(j.string("type") == "joined" && j["reset"] == nil && j["trimmed"] == nil, "since null = live only: \(j)")
            #expect(try u.expectSilence(for: .milliseconds(150)) == nil)
            j = try u.join("empty", since: 5, epoch: epoch)
            #expect(j["reset"] as? Bool == true && j.int("head") == 0)
            #expect(try u.expectSilence(for: .milliseconds(150)) == nil)
        }
        // The epoch belongs to the log: the same after a restart, and a resume with it is not a reset.
        try await withGateway(dataDir: dir) { gw in
            let v = try await gw.client(.user, sub: "v", sessions: ["t"])
            let j = try v.join("t", since: 290, epoch: epoch)
            #expect(j.string("epoch") == epoch && j["reset"] == nil)
            for seq in 291...300 { #expect(try v.next(type: "event").int("seq") == seq) }
        }
        Report.line("T13 retention removed \(removed) segments (first held \(first) of 300); trimmed/reset/bad_request cases all exact; epoch stable across restart")
    }
}

/// A free loopback port: bound to 0, read back, released (the gateway sets SO_REUSEADDR).
enum FreePort {
    static func pick() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GatewayClientError.ioFailed("socket: \(errno)") }
        defer { _ = Glibc.close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr)
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw GatewayClientError.ioFailed("bind: \(errno)") }
        var out = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &out) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: out.sin_port))
    }
}

/// Failure messages collected on background threads.
final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ s: String) { lock.withLock { items.append(s) } }
    var all: [String] { lock.withLock { items } }
}
